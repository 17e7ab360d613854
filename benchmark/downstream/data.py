"""Labeled sets of the downstream tasks: images with the labels a task trains on, loaded from dataset folders,
remapped between class schemas, cropped and augmented; and the check that a training set shares no patch with the
test set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.benchmark.results import DataRef
from histosynth.classes import IGNORE_ID
from histosynth.deprecated import renamed_names
from histosynth.errors import InputError


@dataclass
class LabeledSet:
    """Images (N, H, W, 3) uint8 and their label maps (N, H, W) in `schema`: tissue class maps, or nuclei instance
    maps (ids 1..n) with `types[i][k]` the class of instance k + 1 of image i."""

    images: np.ndarray
    maps: np.ndarray
    schema: str
    ref: DataRef
    slides: set[str] = field(default_factory=set)
    types: list[np.ndarray] | None = None
    mpp: float | None = None
    positions: dict[str, list[tuple[int, int] | None]] = field(default_factory=dict)  # slide -> level-0 (x, y)


def load_set(path: Path | str, split: str, label: str, name: str | None = None) -> LabeledSet:
    """Read a split with `label` ("tissue" or "nuclei" instance maps) into memory; all samples need it and share one
    size (and, for nuclei, one mpp)."""
    from histosynth.benchmark.features import scan_rows
    from histosynth.disk import iter_samples, read_metadata

    path = Path(path)
    read_metadata(path)
    images, maps, types, slides, schema, mpps = [], [], [], set(), None, set()
    positions: dict[str, list[tuple[int, int] | None]] = {}
    for i, sample in enumerate(iter_samples(path, split)):
        where = f"{path}: split {split!r} sample {i} ({sample.where})"
        if label == "tissue":
            if sample.tissue is None:
                raise InputError(f"{where} has no tissue map; the tissue task needs one")
            maps.append(sample.tissue)
            schema = sample.tissue_schema
        else:
            if sample.nuclei is None or sample.nuclei.instances is None:
                raise InputError(f"{where} has no nuclei instance map; the nuclei task needs one")
            maps.append(sample.nuclei.instances)
            types.append(sample.nuclei.class_ids)
            schema = sample.nuclei.schema
            mpps.add(sample.provenance.mpp)
        if images and sample.image.shape != images[0].shape:
            raise InputError(f"{where} is {sample.image.shape[:2]}, sample 0 is {images[0].shape[:2]}; one size per dataset")
        images.append(sample.image)
        prov = sample.provenance
        if prov.slide_id is not None:
            slide = f"{prov.source}:{prov.slide_id}"
            slides.add(slide)
            positions.setdefault(slide, []).append(None if prov.x is None or prov.y is None else (prov.x, prov.y))
    if not images:
        raise InputError(f"{path}: split {split!r} holds no samples")
    mpp = None
    if label == "nuclei":
        if None in mpps:
            raise InputError(f"{path}: split {split!r} has samples without mpp; nuclei post-processing scales with it")
        if max(mpps) > min(mpps) * 1.01:  # one magnification per set, up to the rounding of resampled reads
            raise InputError(f"{path}: split {split!r} mixes mpp {min(mpps)}..{max(mpps)}; one magnification per set")
        mpp = float(np.median(sorted(mpps)))
    ref = DataRef(name or path.name, str(path.resolve()), scan_rows(path, split).content_hash, len(images))
    return LabeledSet(np.stack(images), np.stack(maps), schema, ref, slides, types if label == "nuclei" else None, mpp,
                       positions)


def load_tissue_set(path: Path | str, split: str, name: str | None = None) -> LabeledSet:
    """`load_set` of tissue maps."""
    return load_set(path, split, "tissue", name)


def remap_set(data: LabeledSet, target_schema: str, mapping: dict[str, str] | None) -> LabeledSet:
    """`data` with its classes in `target_schema` (tissue.class_remap's LUT); unchanged when the schemas agree.
    A nucleus class mapped to 'ignore' becomes type 0 (unclassified: it still counts for detection and binary PQ)."""
    from histosynth.benchmark.downstream.tissue import class_remap

    if data.schema == target_schema and not mapping:
        return data
    lut = class_remap(data.schema, target_schema, mapping)
    if data.types is None:
        return dataclasses.replace(data, maps=lut[data.maps], schema=target_schema)
    lut = np.where(lut == IGNORE_ID, 0, lut).astype(np.uint8)
    return dataclasses.replace(data, types=[lut[t] for t in data.types], schema=target_schema)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1] (the Lite0 weights' preprocessing)."""
    from histosynth.benchmark.segmenter import to_input as lite0_input

    return lite0_input(images)


def crop_plan(rng: np.random.Generator, data: LabeledSet, batch_size: int, crop: int, group: Group = ONE_PROCESS):
    """Random (image, top, left) of `batch_size` crops and one rotation k (x 90 degrees) and flip for the batch.

    In a process group every rank draws the plan of the global batch (batch_size x world) and keeps its own
    `batch_size` consecutive crops: the same draws as one process with the global batch."""
    n, h, w = data.maps.shape
    total = batch_size * group.world
    index = rng.integers(0, n, total)
    top = rng.integers(0, h - crop + 1, total)
    left = rng.integers(0, w - crop + 1, total)
    plan = list(zip(index, top, left, strict=True))[group.rank * batch_size : (group.rank + 1) * batch_size]
    return plan, int(rng.integers(0, 4)), bool(rng.integers(0, 2))


def augment(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the (H, W, ...) leading axes by k x 90 degrees, then flip columns if `flip`."""
    array = np.rot90(array, k, axes=(0, 1))
    return np.ascontiguousarray(array[:, ::-1] if flip else array)


def _tile_stride(points: np.ndarray) -> float | None:
    """The smallest Chebyshev distance between two distinct positions (None with fewer than two)."""
    from scipy.spatial import cKDTree

    points = np.unique(points, axis=0)
    if len(points) < 2:
        return None
    distances, _ = cKDTree(points).query(points, k=2, p=np.inf)
    return float(distances[:, 1].min())


def _overlapping(train: list[tuple[int, int] | None], test: list[tuple[int, int] | None]) -> bool:
    """Whether a test patch may overlap a training patch of the same slide. The tiles' level-0 extent is not in the
    provenance, so it is taken as the tiling's stride: the smallest distance between two patches of the same set
    (the smaller of the two sets' strides). A split by region (histosynth.splits) leaves every test tile at least one
    stride from every training tile. Patches without a position, or sets too small to show a stride, could be
    anywhere."""
    from scipy.spatial import cKDTree

    if any(p is None for p in train) or any(p is None for p in test):
        return True
    a, b = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    strides = [s for s in (_tile_stride(a), _tile_stride(b)) if s is not None]
    if not strides:
        return True
    nearest, _ = cKDTree(a).query(b, k=1, p=np.inf)
    return bool(nearest.min() < min(strides))


def check_disjoint(train: LabeledSet, test: LabeledSet, where: str) -> None:
    """Refuse a test set that shares patches of a slide with a training set (a model tested on what it saw): a
    shared slide is allowed only when the two sets' patches do not overlap, as a split by region gives."""
    shared = sorted(s for s in train.slides & test.slides
                    if _overlapping(train.positions.get(s, [None]), test.positions.get(s, [None])))
    if shared:
        listed = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise InputError(f"{where} and the test set have overlapping (or unplaced) patches of slide(s) {listed}; "
                         "test on held-out slides or regions (`data build --split-by slide|region`)")


__getattr__ = renamed_names(__name__, {"LabelledSet": "LabeledSet"}, globals())
