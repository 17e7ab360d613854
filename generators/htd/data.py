"""Training and condition data for the HTD family: Samples resized to the model's resolution, held as arrays.

Patches of another size are resized to the model resolution (images with Lanczos, tissue maps nearest, so ids
stay ids). The training set is uint8 arrays (N x R x R x 3 and N x R x R). In memory by default; with `spill_dir`
they are streamed to raw files there and memory-mapped, so RAM stays flat however many patches there are (a
paper-scale set of 100k 256 px patches is 20 GB of pixels), the OS page cache serves the hot ones, and torchrun
ranks share one copy: the main process writes it, the others wait and map it. A finished spill is reused when
the same dataset folder (same shards, sizes and times), resolution and rule are asked for again (a resumed run).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from histosynth.classes import get_schema
from histosynth.labels.heterogeneity import is_heterogeneous
from histosynth.resize import resize_image, resize_map
from histosynth.schema import Sample


@dataclass
class TrainingSet:
    """Patches as arrays at the model resolution, plus where they came from (for the model card)."""

    images: np.ndarray
    tissue: np.ndarray | None
    tissue_schema: str | None
    description: str
    licence: str = "other"
    source_datasets: list[str] = field(default_factory=list)
    dropped: int = 0  # patches left out by the heterogeneity rule

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int | None:
        return None if self.tissue_schema is None else get_schema(self.tissue_schema).num_classes


SPILL_MANIFEST = "manifest.json"
MANIFEST_FIELDS = ("tissue_schema", "description", "licence", "source_datasets", "dropped")


def load_training_set(data: Path | str | Iterable[Sample], resolution: int, need_tissue: bool,
                      heterogeneity: tuple[float, float] | None, spill_dir: Path | str | None = None) -> TrainingSet:
    """Read a dataset folder (or Samples), resize, and keep the heterogeneous patches when maps are present.

    With `spill_dir`, the arrays are memory-mapped files there instead of RAM (see the module docstring).
    """
    if spill_dir is None:
        return _read_training_set(data, resolution, need_tissue, heterogeneity, _MemoryArrays())
    from accelerate import PartialState

    spill_dir = Path(spill_dir)
    key = _spill_key(data, resolution, need_tissue, heterogeneity)
    state = PartialState()
    if state.is_main_process and (key is None or _open_spill(spill_dir, key) is None):
        if spill_dir.exists():
            shutil.rmtree(spill_dir)
        partial = spill_dir.with_name(spill_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            made = _read_training_set(data, resolution, need_tissue, heterogeneity, _SpillArrays(partial))
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        manifest = {"key": key, "n": len(made), "resolution": resolution, "has_tissue": made.tissue is not None,
                    **{k: getattr(made, k) for k in MANIFEST_FIELDS}}
        (partial / SPILL_MANIFEST).write_text(json.dumps(manifest, indent=1))
        del made  # close the maps before the folder moves
        os.replace(partial, spill_dir)
    state.wait_for_everyone()
    opened = _open_spill(spill_dir, key, check_key=key is not None)
    if opened is None:
        raise RuntimeError(f"{spill_dir}: the training arrays were not written (did the main process fail?)")
    return opened


def _spill_key(data: object, resolution: int, need_tissue: bool, heterogeneity: tuple[float, float] | None) -> str | None:
    """What a spill was made from: the folder's shard names, sizes and mtimes plus the settings; None for Samples."""
    if not isinstance(data, (str, Path)):
        return None
    from histosynth.disk import shard_paths

    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in shard_paths(data, "train")]
    spec = json.dumps([str(Path(data).resolve()), files, resolution, need_tissue, heterogeneity])
    return hashlib.sha256(spec.encode()).hexdigest()


def _open_spill(folder: Path, key: str | None, check_key: bool = True) -> TrainingSet | None:
    """The memory-mapped TrainingSet in `folder`, or None when it is missing or was made from other data."""
    try:
        manifest = json.loads((folder / SPILL_MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if check_key and manifest.get("key") != key:
        return None
    n, r = int(manifest["n"]), int(manifest["resolution"])
    images = np.memmap(folder / "images.u8", np.uint8, "r", shape=(n, r, r, 3))
    tissue = np.memmap(folder / "tissue.u8", np.uint8, "r", shape=(n, r, r)) if manifest["has_tissue"] else None
    fields = {k: manifest[k] for k in MANIFEST_FIELDS}
    return TrainingSet(images, tissue, **fields)


class _MemoryArrays:
    """Collects patches in lists and stacks them at the end."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        self.maps: list[np.ndarray] = []

    def add(self, image: np.ndarray, tissue: np.ndarray | None) -> None:
        self.images.append(image)
        if tissue is not None:
            self.maps.append(tissue)

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        maps = np.stack(self.maps) if self.maps and len(self.maps) == len(self.images) else None
        return np.stack(self.images), maps


class _SpillArrays:
    """Appends patches to raw files and maps them read-only at the end (flat memory)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.image_file = open(folder / "images.u8", "wb")
        self.tissue_file = open(folder / "tissue.u8", "wb")
        self.n = self.n_maps = 0
        self.shape: tuple[int, ...] = ()

    def add(self, image: np.ndarray, tissue: np.ndarray | None) -> None:
        self.shape = image.shape[:2]
        self.image_file.write(np.ascontiguousarray(image, np.uint8).tobytes())
        self.n += 1
        if tissue is not None:
            self.tissue_file.write(np.ascontiguousarray(tissue, np.uint8).tobytes())
            self.n_maps += 1

    def finish(self) -> tuple[np.ndarray, np.ndarray | None]:
        self.image_file.close()
        self.tissue_file.close()
        images = np.memmap(self.folder / "images.u8", np.uint8, "r", shape=(self.n, *self.shape, 3))
        has_maps = self.n_maps == self.n and self.n > 0
        maps = np.memmap(self.folder / "tissue.u8", np.uint8, "r", shape=(self.n, *self.shape)) if has_maps else None
        return images, maps


def _read_training_set(data: Path | str | Iterable[Sample], resolution: int, need_tissue: bool,
                       heterogeneity: tuple[float, float] | None, arrays: _MemoryArrays | _SpillArrays) -> TrainingSet:
    description, licence, sources = "in-memory Samples", "other", []
    if isinstance(data, (str, Path)):
        from histosynth.disk import iter_samples, read_metadata

        meta = read_metadata(data)
        description = f"dataset folder {Path(data).name!r} ({meta.get('pretty_name', '')})"
        licence = str(meta.get("license", "other"))
        sources = [s.split("|")[-1] for s in meta.get("source_datasets", []) if s != "original"]
        samples: Iterable[Sample] = iter_samples(data)
    else:
        samples = data
    schema, dropped, kept = None, 0, 0
    for i, sample in enumerate(samples):
        if sample.tissue is None:
            if need_tissue:
                raise ValueError(f"training sample {i} ({sample.where}) has no tissue map; this generator is "
                                 f"conditioned on tissue maps (label the data first, e.g. with pseudo-labels)")
        else:
            if schema is None:
                schema = sample.tissue_schema
            elif sample.tissue_schema != schema:
                raise ValueError(f"training sample {i} uses tissue schema {sample.tissue_schema!r}, earlier ones {schema!r}")
            if heterogeneity is not None and not is_heterogeneous(sample.tissue, *heterogeneity):
                dropped += 1
                continue
        tissue = None if sample.tissue is None else resize_map(sample.tissue, resolution)
        arrays.add(resize_image(sample.image, resolution), tissue)
        kept += 1
    if not kept:
        hint = f" ({dropped} patches failed the heterogeneity rule {heterogeneity}; relax it with heterogeneity=None)" if dropped else ""
        raise ValueError(f"no training patches in {description}{hint}")
    images, tissue_maps = arrays.finish()
    return TrainingSet(images, tissue_maps, schema if tissue_maps is not None else None, description, licence,
                       sources, dropped)


def condition_arrays(conditions: Sequence[Sample], resolution: int, need_tissue: bool
                     ) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Images (B, R, R, 3) and maps (B, R, R) of condition Samples at the model resolution, and their schema."""
    schemas = {c.tissue_schema for c in conditions}
    if need_tissue:
        missing = [i for i, c in enumerate(conditions) if c.tissue is None]
        if missing:
            raise ValueError(f"conditions {missing[:5]} have no tissue map; this generator needs one per condition")
        if len(schemas) > 1:
            raise ValueError(f"conditions mix tissue schemas {sorted(schemas)}")
    images = np.stack([resize_image(c.image, resolution) for c in conditions])
    if not need_tissue or not conditions:
        return images, None, None
    maps = np.stack([resize_map(c.tissue, resolution) for c in conditions])  # type: ignore[arg-type]
    return images, maps, schemas.pop()
