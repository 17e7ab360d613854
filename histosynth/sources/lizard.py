"""`lizard`: Lizard colon nuclei (20x), images as PNG with one MATLAB .mat label file per image.

Format (`Lizard_Images1/`, `Lizard_Images2/` with `<name>.png`, `Lizard_Labels/Labels/<name>.mat`; any layout
under `path` works, images and labels are paired by file stem, folders called `Overlay` are skipped):
- `inst_map` (H, W) int32, 0 = background, one value per nucleus;
- `id` (N, 1): the instance value of each row; `class` (N, 1): its class 1..6;
- `bbox` (N, 4) ordered (y1, y2, x1, x2); `centroid` (N, 2) ordered (x, y).
Rows are looked up through `id`, not by position (the Lizard `read_label.py` convention).

Checks (each failure names the .mat file): keys present, shapes, classes in 1..6, every instance value of the
map listed in `id`, and for every instance the exact centroid of its pixels agrees with the file's
`centroid` within 1 px per coordinate and its pixel extent with `bbox` within 1 px (this catches swapped
x/y orders). Rows whose id has no pixels are ignored.

Id mapping (schema `lizard`): class 1 Neutrophil, 2 Epithelial, 3 Lymphocyte, 4 Plasma, 5 Eosinophil,
6 Connective -> the same ids. Instances are relabeled 1..n per patch with exact centroids
(`Nuclei.from_instance_map`); nuclei cut by a tile border keep the centroid of their visible part.

Patches: tiles of `size` (default 256; None = whole images) at `stride` covering each image edge to edge
(see `folder.tile_corners`); provenance slide_id = image stem, x/y = tile top-left, level 0, mpp 0.5.

License: CC BY-NC-SA 4.0 (Graham et al., Lizard, ICCVW 2021).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from histosynth.sources.base import SourceMeta
from histosynth.sources.folder import column, format_error, integer_array, load_mat, read_rgb
from histosynth.sources.instance_tiles import InstanceTileSource

NATIVE_MPP = 0.5
KEYS = ("inst_map", "id", "class", "bbox", "centroid")
NUM_CLASSES = 6
TOLERANCE_PX = 1.0


def pair_files(root: Path, image_suffix: str = ".png") -> list[tuple[Path, Path]]:
    """[(label .mat, image)] under `root`, paired by stem; duplicate stems and labels without an image raise."""
    images: dict[str, Path] = {}
    for image in sorted(root.rglob(f"*{image_suffix}")):
        if "Overlay" in image.relative_to(root).parts:
            continue
        if image.stem in images:
            raise format_error(image, f"two images with stem {image.stem!r} (the other is {images[image.stem]})")
        images[image.stem] = image
    pairs = []
    for label in sorted(root.rglob("*.mat")):
        if label.stem not in images:
            raise format_error(label, f"no image {label.stem}{image_suffix} under {root}")
        pairs.append((label, images[label.stem]))
    if not pairs:
        raise format_error(root, "no Lizard label files (*.mat) found")
    return pairs


def read_labels(path: Path) -> tuple[np.ndarray, dict[int, int]]:
    """The instance map and {instance value: class} of a Lizard .mat, after every consistency check."""
    mat = load_mat(path, KEYS)
    inst = integer_array(path, "inst_map", mat["inst_map"], 2)
    ids = column(path, "id", mat["id"])
    classes = column(path, "class", mat["class"])
    n = len(ids)
    if len(classes) != n:
        raise format_error(path, f"class: {len(classes)} rows but id has {n}")
    bbox, centroid = np.asarray(mat["bbox"], dtype=np.float64), np.asarray(mat["centroid"], dtype=np.float64)
    if bbox.shape != (n, 4) and not (n == 0 and bbox.size == 0):
        raise format_error(path, f"bbox: expected shape ({n}, 4) ordered (y1, y2, x1, x2), got {bbox.shape}")
    if centroid.shape != (n, 2) and not (n == 0 and centroid.size == 0):
        raise format_error(path, f"centroid: expected shape ({n}, 2) ordered (x, y), got {centroid.shape}")
    bad = classes[(classes < 1) | (classes > NUM_CLASSES)]
    if bad.size:
        raise format_error(path, f"class: values {sorted(set(bad.tolist()))} outside the Lizard classes 1..{NUM_CLASSES}")
    if len(set(ids.tolist())) != n:
        raise format_error(path, "id: instance values listed more than once")
    row_of = {int(v): r for r, v in enumerate(ids.tolist())}
    present = np.unique(inst)
    present = present[present != 0]
    unlisted = [int(v) for v in present if int(v) not in row_of]
    if unlisted:
        raise format_error(path, f"inst_map values {unlisted[:10]} are not listed in id")
    if present.size:
        _check_geometry(path, inst, present, [row_of[int(v)] for v in present], bbox, centroid)
    return inst, {int(v): int(classes[r]) for v, r in row_of.items()}


def _check_geometry(path: Path, inst: np.ndarray, present: np.ndarray, rows: list[int], bbox: np.ndarray, centroid: np.ndarray) -> None:
    """Exact centroids and pixel extents of the instances against the file's centroid (x, y) and bbox (y1, y2, x1, x2)."""
    from scipy import ndimage

    exact = np.array(ndimage.center_of_mass(np.ones_like(inst, dtype=np.float64), inst, present)).reshape(-1, 2)[:, ::-1]  # (x, y)
    stated = centroid[rows]
    off = np.abs(exact - stated).max(axis=1)
    if (off > TOLERANCE_PX).any():
        k = int(np.argmax(off > TOLERANCE_PX))
        raise format_error(path, f"centroid of instance {int(present[k])} is (x, y) = {stated[k].tolist()} in the file but "
                           f"{np.round(exact[k], 2).tolist()} from inst_map (more than {TOLERANCE_PX:g} px apart: wrong (x, y) order?)")
    boxes = ndimage.find_objects(inst.astype(np.int64))
    for k, value in enumerate(present.tolist()):
        ys, xs = boxes[value - 1]
        y1, y2, x1, x2 = bbox[rows[k]]
        actual = (ys.start, ys.stop, xs.start, xs.stop)
        if max(abs(a - b) for a, b in zip(actual, (y1, y2, x1, x2), strict=False)) > TOLERANCE_PX:
            raise format_error(path, f"bbox of instance {value} is (y1, y2, x1, x2) = {[float(v) for v in (y1, y2, x1, x2)]} in the "
                               f"file but the pixels span {list(actual)} (more than {TOLERANCE_PX:g} px apart: wrong order?)")


class LizardSource(InstanceTileSource):
    """Lizard images (whole or tiled) with classed nuclei instances."""

    meta = SourceMeta(
        name="lizard",
        description="Lizard: colon H&E at 20x with ~495k nuclei in 6 classes (instance maps + classes)",
        license="CC-BY-NC-SA-4.0",
        url="https://warwick.ac.uk/fac/cross_fac/tia/data/lizard",
        citation="Graham et al., Lizard: A Large-Scale Dataset for Colonic Nuclear Instance Segmentation and Classification, ICCVW 2021",
        native_mpp=NATIVE_MPP,
        nuclei_schema="lizard",
    )

    expected: ClassVar[str] = "the Lizard images and labels"

    def __init__(self, path: str | Path, size: int | None = 256, stride: int | None = None, n: int | None = None,
                 mpp: float | None = None) -> None:
        """The Lizard folder `path`; `size` px tiles (None: whole images) `stride` apart; at most `n` patches."""
        super().__init__(path, size, stride, n, mpp)

    def pair_files(self, root: Path) -> list[tuple[Path, Path]]:
        return pair_files(root)

    def read_pair(self, label_path: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        inst, class_of = read_labels(label_path)
        return read_rgb(image_path), inst, class_of
