"""`consep`: CoNSeP colorectal nuclei, 41 tiles of 1000 x 1000 px at 40x, PNG images with .mat labels.

Format: `Train/Images/<name>.png` with `Train/Labels/<name>.mat` (likewise `Test/`); every `Labels/*.mat`
under `path` is paired with `../Images/<same stem>.png` (the `Overlay` PNGs are never read). Keys:
- `inst_map` (H, W): instance values 1..N (0 = background), stored as doubles;
- `type_map` (H, W): per-pixel class (shape-checked only: the per-instance `inst_type` is authoritative);
- `inst_type` (N, 1): the class 1..7 of instance k + 1 in row k;
- `inst_centroid` (N, 2) ordered (x, y): shape-checked; centroids are recomputed exactly from the map.
Errors (missing/unreadable files, missing keys, shapes, non-integral ids, ids above N, classes outside 1..7)
name the file.

Id mapping: `classes="consep"` keeps the seven original ids (1 other/miscellaneous, 2 inflammatory,
3 healthy epithelial, 4 dysplastic/malignant epithelial, 5 fibroblast, 6 muscle, 7 endothelial);
`classes="consep-4"` merges them as HoVer-Net trains (3, 4 -> epithelial 3; 5, 6, 7 -> spindle-shaped 4) through
`histosynth.classes.remap_ids`. Instances are relabeled 1..n per tile with exact centroids.

Patches: `size` x `size` tiles (default 256; None = whole 1000 px images) at `stride` (default `size`),
covering each image edge to edge (the last tiles are flush with the border: 0, 256, 512, 744 for 1000 px);
provenance slide_id = image stem, x/y = tile top-left, level 0, mpp 0.25.

License: UNVERIFIED. kaiko-ai/eva's CoNSeP page says Apache-2.0; the Warwick TIA data page (the only official
download, offline at times) states no license we could check. Citation: Graham et al., HoVer-Net, MedIA 2019.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from histosynth.classes import remap_ids
from histosynth.errors import InputError
from histosynth.sources.base import SourceMeta
from histosynth.sources.folder import column, format_error, integer_array, load_mat, read_rgb
from histosynth.sources.instance_tiles import InstanceTileSource

NATIVE_MPP = 0.25
KEYS = ("inst_map", "type_map", "inst_type", "inst_centroid")
NUM_CLASSES = 7
CLASS_SETS = ("consep", "consep-4")


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """[(label .mat, image .png)] for every Labels/*.mat under `root` (or in `root` itself when it is a Labels folder)."""
    labels = sorted(p for p in root.rglob("*.mat") if p.parent.name == "Labels")
    if not labels:
        raise format_error(root, "no CoNSeP label files (Labels/*.mat) found")
    pairs = []
    for label in labels:
        image = label.parent.parent / "Images" / f"{label.stem}.png"
        if not image.is_file():
            raise format_error(label, f"no matching image {image}")
        pairs.append((label, image))
    return pairs


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The instance map (int64) and the class of each instance value (index 0 unused) of a CoNSeP .mat."""
    mat = load_mat(path, KEYS)
    inst = integer_array(path, "inst_map", mat["inst_map"], 2)
    types = column(path, "inst_type", mat["inst_type"])
    n = len(types)
    if mat["type_map"].shape != inst.shape:
        raise format_error(path, f"type_map shape {mat['type_map'].shape} differs from inst_map {inst.shape}")
    if mat["inst_centroid"].shape != (n, 2) and not (n == 0 and mat["inst_centroid"].size == 0):
        raise format_error(path, f"inst_centroid: expected shape ({n}, 2) ordered (x, y), got {mat['inst_centroid'].shape}")
    bad = types[(types < 1) | (types > NUM_CLASSES)]
    if bad.size:
        raise format_error(path, f"inst_type: values {sorted(set(bad.tolist()))} outside the CoNSeP classes 1..{NUM_CLASSES}")
    top = int(inst.max()) if inst.size else 0
    if top > n:
        raise format_error(path, f"inst_map has instance value {top} but inst_type lists only {n} instances")
    return inst, np.concatenate([[0], types]).astype(np.int64)


class ConsepSource(InstanceTileSource):
    """CoNSeP tiles with classed nuclei instances, in the 7 original or the 4 merged classes."""

    meta = SourceMeta(
        name="consep",
        description="CoNSeP: 41 colorectal 1000x1000 tiles at 40x with 24k nuclei in 7 classes (license UNVERIFIED: "
                    "Apache-2.0 per kaiko-ai/eva docs)",
        license="Apache-2.0",
        url="https://warwick.ac.uk/fac/cross_fac/tia/data/hovernet/",
        citation="Graham et al., HoVer-Net: Simultaneous Segmentation and Classification of Nuclei in Multi-Tissue "
                 "Histology Images, Medical Image Analysis 58, 2019",
        native_mpp=NATIVE_MPP,
        nuclei_schema="consep",
    )

    expected: ClassVar[str] = "CoNSeP, or its Train/Test folder"

    def __init__(self, path: str | Path, size: int | None = 256, stride: int | None = None, classes: str = "consep",
                 n: int | None = None, mpp: float | None = None) -> None:
        """CoNSeP under `path` (root, Train or Test); `classes` "consep" (7) or "consep-4"; tiles of `size` px."""
        if classes not in CLASS_SETS:
            raise InputError(f"consep: classes must be one of {CLASS_SETS}, got {classes!r}")
        self.classes = classes
        self.meta = replace(type(self).meta, nuclei_schema=classes)
        super().__init__(path, size, stride, n, mpp)

    def pair_files(self, root: Path) -> list[tuple[Path, Path]]:
        return pair_files(root)

    def read_pair(self, label_path: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | dict[int, int]]:
        inst, class_of = read_labels(label_path)
        if self.classes != "consep":
            class_of = remap_ids(class_of, "consep", self.classes)
        return read_rgb(image_path), inst, class_of
