"""Training and condition data for every generator: Samples at the model resolution, as the arrays a conditioner reads.

Patches of another size are resized to the model resolution R (images with Lanczos, tissue maps and completion
masks nearest, so ids stay ids) and nuclei centroids are mapped onto the R x R grid. A training set holds only the
parts its generator reads (`parts`, a subset of CONDITION_PARTS):
- images (N, R, R, 3) uint8, always;
- tissue (N, R, R) uint8 when "tissue" or "crops" is read (crops are cut from the image inside the map's regions);
- nuclei when "nuclei" is read, flattened: centroids (M, 2) float32 (x, y), class ids (M,) uint8 and offsets
  (N + 1,) int64, so patch i owns rows offsets[i]:offsets[i + 1].
Completion masks are not part of a training set: a completion generator draws its own masks while training.

The arrays are in memory by default; with `spill_dir` they are streamed to raw files there and memory-mapped, so RAM
stays flat however many patches there are (a paper-scale set of 100k 256 px patches is 20 GB of pixels), the OS
page cache serves the hot ones, and torchrun ranks share one copy: the main process writes it (atomically, through
histosynth.atomic), the others wait and map it. A finished spill is reused when the same dataset folder (same
shards, sizes and times), resolution, parts and heterogeneity rule are asked for again (a resumed run).

The heterogeneity rule (HTD's 20-80% rule, histosynth.labels.heterogeneity) drops every patch whose tissue map
fails it; patches without a map are never dropped by it. It looks at the map whether or not the generator reads
maps, as HTD's training set did, so an unconditional ablation trains on the same patches as its conditioned model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

import numpy as np

from histosynth.atomic import atomic_directory
from histosynth.classes import get_schema
from histosynth.deprecated import renamed_field
from histosynth.errors import InputError
from histosynth.generators.base import TrainingData
from histosynth.generators.conditioning.batch import CONDITION_PARTS, ConditionBatch, NucleiLayout
from histosynth.labels.heterogeneity import is_heterogeneous
from histosynth.resize import resize_image, resize_map
from histosynth.schema import Nuclei, Sample

SPILL_MANIFEST = "manifest.json"
SPILL_FORMAT = "histosynth-training-arrays-2"  # in the spill key: a spill of another layout is never reused
MANIFEST_FIELDS = ("tissue_schema", "nuclei_schema", "description", "license", "source_datasets", "dropped")
_FILES = {"images": "images.u8", "tissue": "tissue.u8", "mpp": "mpp.f64", "centroids": "nuclei_xy.f32",
          "class_ids": "nuclei_class.u8", "offsets": "nuclei_offsets.i64"}


class TrainingDataError(InputError):
    """Training or condition Samples lack a part the generator reads, or mix class schemas."""


@dataclass
class TrainingArrays:
    """Patches as arrays at the model resolution, plus where they came from (for the model card)."""

    images: np.ndarray  # (N, R, R, 3) uint8
    tissue: np.ndarray | None  # (N, R, R) uint8
    tissue_schema: str | None
    description: str
    nuclei_centroids: np.ndarray | None = None  # (M, 2) float32 (x, y) on the R x R grid
    nuclei_class_ids: np.ndarray | None = None  # (M,) uint8
    nuclei_offsets: np.ndarray | None = None  # (N + 1,) int64: patch i owns rows offsets[i]:offsets[i + 1]
    nuclei_schema: str | None = None
    mpp: np.ndarray | None = None  # (N,) float64 microns per pixel at the model resolution (NaN: unknown)
    license: str = "other"
    source_datasets: list[str] = field(default_factory=list)
    dropped: int = 0  # patches left out by the heterogeneity rule

    def __len__(self) -> int:
        return len(self.images)

    def training_data(self) -> TrainingData:
        """What these arrays are, for a TrainReport and the model card."""
        return TrainingData(description=self.description, license=self.license, source_datasets=list(self.source_datasets),
                            patches=len(self), dropped=self.dropped, tissue_schema=self.tissue_schema,
                            nuclei_schema=self.nuclei_schema)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def num_classes(self) -> int | None:
        """Tissue classes of the maps' schema (None without maps)."""
        return None if self.tissue_schema is None else get_schema(self.tissue_schema).num_classes

    def nuclei_of(self, i: int) -> NucleiLayout:
        """Patch i's nuclei (copies, so the batch outlives a memory map)."""
        if self.nuclei_offsets is None or self.nuclei_centroids is None or self.nuclei_class_ids is None:
            raise ValueError("these training arrays carry no nuclei (load them with 'nuclei' in parts)")
        lo, hi = int(self.nuclei_offsets[i]), int(self.nuclei_offsets[i + 1])
        return NucleiLayout(np.array(self.nuclei_centroids[lo:hi]), np.array(self.nuclei_class_ids[lo:hi]))

    def batch(self, index: np.ndarray) -> ConditionBatch:
        """Patches `index` as a ConditionBatch of in-memory arrays (no masks: see the module docstring)."""
        index = np.asarray(index, dtype=np.int64)
        return ConditionBatch(
            images=np.asarray(self.images[index]),
            tissue=None if self.tissue is None else np.asarray(self.tissue[index]),
            tissue_schema=self.tissue_schema,
            nuclei=None if self.nuclei_offsets is None else [self.nuclei_of(int(i)) for i in index],
            nuclei_schema=self.nuclei_schema,
            mpp=None if self.mpp is None else np.asarray(self.mpp[index], np.float64),
        )


renamed_field(TrainingArrays, "licence", "license")  # the British spelling, for one release


def check_parts(parts: Iterable[str]) -> tuple[str, ...]:
    """`parts` as a tuple, or ValueError naming an unknown part."""
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(CONDITION_PARTS))
    if unknown:
        raise ValueError(f"unknown condition parts {unknown}; known: {list(CONDITION_PARTS)}")
    return parts


def _reads_tissue(parts: Sequence[str]) -> bool:
    return "tissue" in parts or "crops" in parts


def scale_centroids(centroids: np.ndarray, height: int, width: int, resolution: int) -> np.ndarray:
    """(x, y) pixel-index centroids of a height x width patch on the resolution x resolution grid it is resized to.

    Pixel centers map to pixel centers: x' = (x + 1/2) R / W - 1/2 (the center of pixel c is at c + 1/2 along the
    side), which is where nearest resizing puts a mark; clipped to [0, R - 1] so a border nucleus stays inside.
    """
    if (height, width) == (resolution, resolution):
        return centroids
    side = np.array([width, height], np.float64)
    scaled = (centroids.astype(np.float64) + 0.5) * (resolution / side) - 0.5
    return np.clip(scaled, 0, resolution - 1).astype(np.float32)


def load_training_arrays(data: Path | str | Iterable[Sample], resolution: int, parts: Iterable[str],
                         heterogeneity: tuple[float, float] | None,
                         spill_dir: Path | str | None = None) -> TrainingArrays:
    """Read a dataset folder (or Samples) into the arrays of `parts`, resized to `resolution`.

    With `spill_dir`, the arrays are memory-mapped files there instead of RAM (see the module docstring).
    """
    parts = check_parts(parts)
    if spill_dir is None:
        return _read(data, resolution, parts, heterogeneity, _MemorySink(resolution))
    from accelerate import PartialState

    spill_dir = Path(spill_dir)
    key = _spill_key(data, resolution, parts, heterogeneity)
    state = PartialState()
    if state.is_main_process and (key is None or _open_spill(spill_dir, key) is None):
        shutil.rmtree(spill_dir, ignore_errors=True)  # made from other data: not worth keeping while we rebuild
        with atomic_directory(spill_dir) as folder:
            sink = _SpillSink(folder, resolution)
            try:
                made = _read(data, resolution, parts, heterogeneity, sink)
            finally:
                sink.close()
            manifest = {"key": key, "format": SPILL_FORMAT, "n": len(made), "resolution": resolution,
                        "parts": list(parts), "has_tissue": made.tissue is not None,
                        "nuclei": None if made.nuclei_class_ids is None else len(made.nuclei_class_ids),
                        **{k: getattr(made, k) for k in MANIFEST_FIELDS}}
            (folder / SPILL_MANIFEST).write_text(json.dumps(manifest, indent=1))
            del made
    state.wait_for_everyone()
    opened = _open_spill(spill_dir, key, check_key=key is not None)
    if opened is None:
        raise RuntimeError(f"{spill_dir}: the training arrays were not written (did the main process fail?)")
    return opened


def _spill_key(data: object, resolution: int, parts: Sequence[str],
               heterogeneity: tuple[float, float] | None) -> str | None:
    """What a spill was made from: the folder's shard names, sizes and mtimes plus the settings; None for Samples."""
    if not isinstance(data, (str, Path)):
        return None
    from histosynth.disk import shard_paths

    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shard_paths(data, "train")]
    spec = json.dumps([SPILL_FORMAT, str(Path(data).resolve()), files, resolution, sorted(set(parts)),
                       None if heterogeneity is None else list(heterogeneity)])
    return hashlib.sha256(spec.encode()).hexdigest()


def _map(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A read-only memory map of a raw file (an empty array for zero elements: mmap refuses empty files)."""
    if 0 in shape:
        empty = np.empty(shape, dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype, "r", shape=shape)


def _open_spill(folder: Path, key: str | None, check_key: bool = True) -> TrainingArrays | None:
    """The memory-mapped TrainingArrays in `folder`, or None when missing, of another format or other data."""
    try:
        manifest = json.loads((folder / SPILL_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != SPILL_FORMAT or (check_key and manifest.get("key") != key):
        return None
    n, r, m = int(manifest["n"]), int(manifest["resolution"]), manifest["nuclei"]
    arrays = TrainingArrays(_map(folder / _FILES["images"], np.uint8, (n, r, r, 3)),
                            _map(folder / _FILES["tissue"], np.uint8, (n, r, r)) if manifest["has_tissue"] else None,
                            **{k: manifest[k] if k in manifest else manifest["licence"] for k in MANIFEST_FIELDS})
    arrays.mpp = _map(folder / _FILES["mpp"], np.float64, (n,))
    if m is not None:
        arrays.nuclei_centroids = _map(folder / _FILES["centroids"], np.float32, (m, 2))
        arrays.nuclei_class_ids = _map(folder / _FILES["class_ids"], np.uint8, (m,))
        arrays.nuclei_offsets = _map(folder / _FILES["offsets"], np.int64, (n + 1,))
    return arrays


class _MemorySink:
    """Collects patches in lists and stacks them at the end."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.images: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []
        self.centroids: list[np.ndarray] = []
        self.class_ids: list[np.ndarray] = []
        self.mpp: list[float] = []

    def add(self, image: np.ndarray, tissue: np.ndarray | None, nuclei: NucleiLayout | None, mpp: float) -> None:
        self.images.append(image)
        self.mpp.append(mpp)
        if tissue is not None:
            self.maps.append(tissue)
        if nuclei is not None:
            self.centroids.append(nuclei.centroids)
            self.class_ids.append(nuclei.class_ids)

    def finish(self, tissue: bool, nuclei: bool) -> dict[str, np.ndarray | None]:
        r = self.resolution
        out: dict[str, np.ndarray | None] = {
            "images": np.stack(self.images) if self.images else np.empty((0, r, r, 3), np.uint8),
            "tissue": (np.stack(self.maps) if self.maps else np.empty((0, r, r), np.uint8)) if tissue else None}
        out["mpp"] = np.asarray(self.mpp, np.float64)
        counts = [len(c) for c in self.class_ids]
        out["centroids"] = np.concatenate([np.empty((0, 2), np.float32), *self.centroids]) if nuclei else None
        out["class_ids"] = np.concatenate([np.empty(0, np.uint8), *self.class_ids]) if nuclei else None
        out["offsets"] = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64) if nuclei else None
        return out

    def close(self) -> None:
        pass


class _SpillSink:
    """Appends patches to raw files and maps them read-only at the end (flat memory)."""

    def __init__(self, folder: Path, resolution: int) -> None:
        self.folder = folder
        self.resolution = resolution
        self.files: dict[str, BinaryIO] = {
            name: open(folder / _FILES[name], "wb") for name in ("images", "tissue", "centroids", "class_ids")}
        self.n = 0
        self.offsets = [0]  # N + 1 int64s: small enough for RAM at any scale
        self.mpp: list[float] = []  # N float64s, likewise

    def add(self, image: np.ndarray, tissue: np.ndarray | None, nuclei: NucleiLayout | None, mpp: float) -> None:
        self.mpp.append(mpp)
        self.files["images"].write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.n += 1
        if tissue is not None:
            self.files["tissue"].write(np.ascontiguousarray(tissue, np.uint8).tobytes())
        if nuclei is not None:
            self.files["centroids"].write(np.ascontiguousarray(nuclei.centroids, np.float32).tobytes())
            self.files["class_ids"].write(np.ascontiguousarray(nuclei.class_ids, np.uint8).tobytes())
            self.offsets.append(self.offsets[-1] + len(nuclei))

    def finish(self, tissue: bool, nuclei: bool) -> dict[str, np.ndarray | None]:
        self.close()
        np.asarray(self.offsets, np.int64).tofile(self.folder / _FILES["offsets"])
        np.asarray(self.mpp, np.float64).tofile(self.folder / _FILES["mpp"])
        n, r, m = self.n, self.resolution, self.offsets[-1]
        return {"images": _map(self.folder / _FILES["images"], np.uint8, (n, r, r, 3)),
                "tissue": _map(self.folder / _FILES["tissue"], np.uint8, (n, r, r)) if tissue else None,
                "mpp": _map(self.folder / _FILES["mpp"], np.float64, (n,)),
                "centroids": _map(self.folder / _FILES["centroids"], np.float32, (m, 2)) if nuclei else None,
                "class_ids": _map(self.folder / _FILES["class_ids"], np.uint8, (m,)) if nuclei else None,
                "offsets": _map(self.folder / _FILES["offsets"], np.int64, (n + 1,)) if nuclei else None}

    def close(self) -> None:
        for file in self.files.values():
            file.close()


def _nuclei_layout(nuclei: Nuclei, height: int, width: int, resolution: int) -> NucleiLayout:
    return NucleiLayout(scale_centroids(nuclei.centroids, height, width, resolution), nuclei.class_ids)


def _read(data: Path | str | Iterable[Sample], resolution: int, parts: Sequence[str],
          heterogeneity: tuple[float, float] | None, sink: _MemorySink | _SpillSink) -> TrainingArrays:
    description, license, sources = "in-memory Samples", "other", []
    if isinstance(data, (str, Path)):
        from histosynth.disk import iter_samples, read_metadata

        meta = read_metadata(data)
        description = f"dataset folder {Path(data).name!r} ({meta.get('pretty_name', '')})"
        license = str(meta.get("license", "other"))
        sources = [s.split("|")[-1] for s in meta.get("source_datasets", []) if s != "original"]
        samples: Iterable[Sample] = iter_samples(data)
    else:
        samples = data
    want_tissue, want_nuclei = _reads_tissue(parts), "nuclei" in parts
    tissue_schema: str | None = None
    nuclei_schema: str | None = None
    dropped = kept = 0
    for i, sample in enumerate(samples):
        if want_tissue:
            if sample.tissue is None:
                raise TrainingDataError(f"training sample {i} ({sample.where}) has no tissue map; this generator is "
                                        f"conditioned on tissue maps (label the data first, e.g. with pseudo-labels)")
            tissue_schema = tissue_schema or sample.tissue_schema
            if sample.tissue_schema != tissue_schema:
                raise TrainingDataError(f"training sample {i} ({sample.where}) uses tissue schema "
                                        f"{sample.tissue_schema!r}, earlier ones {tissue_schema!r}")
        if want_nuclei:
            if sample.nuclei is None:
                raise TrainingDataError(f"training sample {i} ({sample.where}) has no nuclei; this generator is "
                                        f"conditioned on nuclei centroids (label the data first, e.g. with pseudo "
                                        f"nuclei)")
            nuclei_schema = nuclei_schema or sample.nuclei.schema
            if sample.nuclei.schema != nuclei_schema:
                raise TrainingDataError(f"training sample {i} ({sample.where}) uses nuclei schema "
                                        f"{sample.nuclei.schema!r}, earlier ones {nuclei_schema!r}")
        if sample.tissue is not None and heterogeneity is not None and not is_heterogeneous(sample.tissue,
                                                                                             *heterogeneity):
            dropped += 1
            continue
        sink.add(resize_image(sample.image, resolution),
                 resize_map(sample.tissue, resolution) if want_tissue else None,  # type: ignore[arg-type]
                 _nuclei_layout(sample.nuclei, sample.height, sample.width, resolution)  # type: ignore[arg-type]
                 if want_nuclei else None,
                 model_mpp(sample, resolution))
        kept += 1
    if not kept:
        hint = (f" ({dropped} patches failed the heterogeneity rule {heterogeneity}; relax it with "
                f"heterogeneity=None)" if dropped else "")
        raise TrainingDataError(f"no training patches in {description}{hint}")
    arrays = sink.finish(want_tissue, want_nuclei)
    return TrainingArrays(arrays["images"], arrays["tissue"], tissue_schema, description,  # type: ignore[arg-type]
                          arrays["centroids"], arrays["class_ids"], arrays["offsets"], nuclei_schema,
                          arrays["mpp"], license, sources, dropped)


def model_mpp(sample: Sample, resolution: int) -> float:
    """Microns per pixel of `sample` once resized to the model resolution (NaN when its mpp is unknown)."""
    mpp = sample.provenance.mpp
    return float("nan") if mpp is None else float(mpp) * sample.width / resolution


def _one_schema(schemas: set[str], label: str) -> str:
    if len(schemas) > 1:
        raise TrainingDataError(f"conditions mix {label} schemas {sorted(schemas)}")
    return schemas.pop()


def condition_batch(conditions: Sequence[Sample], resolution: int, parts: Iterable[str]) -> ConditionBatch:
    """The parts of condition Samples a generator reads, at the model resolution, as one ConditionBatch."""
    parts = check_parts(parts)
    conditions = list(conditions)
    needs = [("tissue map", _reads_tissue(parts), lambda c: c.tissue is not None),
             ("nuclei", "nuclei" in parts, lambda c: c.nuclei is not None),
             ("completion mask", "mask" in parts, lambda c: c.completion_mask is not None)]
    for label, needed, has in needs:
        missing = [i for i, c in enumerate(conditions) if not has(c)] if needed else []
        if missing:
            raise TrainingDataError(f"conditions {missing[:5]} have no {label}; this generator needs one per "
                                    f"condition (it reads {list(parts)})")
    r = resolution
    batch = ConditionBatch(np.stack([resize_image(c.image, r) for c in conditions]) if conditions
                           else np.empty((0, r, r, 3), np.uint8))
    batch.mpp = np.array([model_mpp(c, r) for c in conditions], np.float64)
    if _reads_tissue(parts) and conditions:
        batch.tissue_schema = _one_schema({c.tissue_schema for c in conditions}, "tissue")  # type: ignore[misc]
        batch.tissue = np.stack([resize_map(c.tissue, r) for c in conditions])  # type: ignore[arg-type]
    if "nuclei" in parts and conditions:
        batch.nuclei_schema = _one_schema({c.nuclei.schema for c in conditions}, "nuclei")  # type: ignore[union-attr]
        batch.nuclei = [_nuclei_layout(c.nuclei, c.height, c.width, r) for c in conditions]  # type: ignore[arg-type]
    if "mask" in parts and conditions:
        batch.masks = np.stack([resize_map(c.completion_mask.view(np.uint8), r) for c in conditions  # type: ignore[union-attr]
                                ]).astype(bool)
    return batch


def rotate_flip_centroids(centroids: np.ndarray, k: int, flip: bool, size: int) -> np.ndarray:
    """(x, y) centroids of a size x size patch after `np.rot90(patch, k)` and then, with `flip`, `[:, ::-1]`.

    np.rot90 moves pixel (row r, column c) to (size - 1 - c, r), i.e. (x, y) -> (y, size - 1 - x); the flip
    mirrors columns, x -> size - 1 - x.
    """
    xy = np.asarray(centroids, np.float32)
    last = np.float32(size - 1)
    for _ in range(k % 4):
        xy = np.stack([xy[:, 1], last - xy[:, 0]], axis=1)
    if flip:
        xy = np.stack([last - xy[:, 0], xy[:, 1]], axis=1)
    return xy.reshape(-1, 2).astype(np.float32, copy=False)


def _rotate_flip(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(array, k)[:, ::-1] if flip else np.rot90(array, k)


def augment(batch: ConditionBatch, rng: np.random.Generator) -> ConditionBatch:
    """A copy of `batch` with each item rotated by k quarter turns (then maybe mirrored), every part alike.

    Draws k for all items and then the flips, as HTD's training batches always did, so images and maps come out
    byte-identical to that loop for the same generator state; nuclei centroids follow the same transform.
    """
    n = len(batch)
    turns, flips = rng.integers(0, 4, n), rng.integers(0, 2, n)
    images = batch.images.copy()
    tissue = None if batch.tissue is None else batch.tissue.copy()
    masks = None if batch.masks is None else batch.masks.copy()
    nuclei = None if batch.nuclei is None else list(batch.nuclei)
    for j, (k, flip) in enumerate(zip(turns, flips, strict=True)):
        images[j] = _rotate_flip(images[j], k, flip)
        if tissue is not None:
            tissue[j] = _rotate_flip(tissue[j], k, flip)
        if masks is not None:
            masks[j] = _rotate_flip(masks[j], k, flip)
        if nuclei is not None:
            nuclei[j] = NucleiLayout(rotate_flip_centroids(nuclei[j].centroids, int(k), bool(flip), batch.resolution),
                                     nuclei[j].class_ids.copy())
    return replace(batch, images=images, tissue=tissue, masks=masks, nuclei=nuclei)
