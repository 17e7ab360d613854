"""Label consistency (the SPADE / OASIS protocol): does a generated image show the map it was conditioned on?

A segmenter trained on real (image, map) pairs (histosynth.benchmark.segmenter) segments the generated images;
the mean intersection-over-union of its maps against the conditioning maps is the score. Conventions, stated once:
pixels whose reference id is 255 (ignore) are left out; IoU_c = TP / (TP + FP + FN) from the confusion matrix
summed over all images; the mean is over the foreground classes (ids >= 1; 0 is background / glass) present in the
reference maps. The interval is a percentile bootstrap over images (the confusion matrices of resampled images are
summed again), so it reflects which patches were drawn, not the segmenter's own error. The same segmenter on real
held-out images against their own maps gives the ceiling; a model that ignores the maps gives the floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.benchmark.intervals import EXTENDED_NOTE, containing
from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError


def confusion_matrices(predicted: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """(N, K, K) int64 per-image confusion counts, rows = reference class, columns = predicted class."""
    if predicted.shape != reference.shape or predicted.ndim != 3:
        raise ValueError(f"predicted {predicted.shape} and reference {reference.shape} maps must both be (N, H, W)")
    n = len(reference)
    ref = reference.reshape(n, -1).astype(np.int64)
    pred = predicted.reshape(n, -1).astype(np.int64)
    keep = ref != IGNORE_ID
    labeled = ref[keep]
    if labeled.size and (labeled.max() >= num_classes or pred[keep].max() >= num_classes):
        raise ValueError(f"class ids reach {max(int(labeled.max()), int(pred[keep].max()))}; expected < {num_classes}")
    image = np.broadcast_to(np.arange(n)[:, None], ref.shape)[keep]
    flat = (image * num_classes + labeled) * num_classes + pred[keep]
    return np.bincount(flat, minlength=n * num_classes * num_classes).reshape(n, num_classes, num_classes)


def per_class_iou(confusion: np.ndarray) -> np.ndarray:
    """(..., K) IoU per class of (..., K, K) confusion matrices; NaN for a class absent from both reference and
    prediction."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    union = confusion.sum(axis=-2) + confusion.sum(axis=-1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def foreground_mean(values: np.ndarray, confusion: np.ndarray, first_foreground: int = 1) -> np.ndarray:
    """(...) mean of per-class `values` (..., K) over the foreground classes (id >= first_foreground) present in the
    reference rows of `confusion` (..., K, K); NaN where none is present. The one averaging rule of the IoU scores."""
    present = confusion.sum(axis=-1) > 0
    present[..., :first_foreground] = False
    count = present.sum(axis=-1)
    total = np.where(present, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mean_iou(confusion: np.ndarray, first_foreground: int = 1) -> tuple[float, np.ndarray]:
    """(mIoU over the foreground classes present in the reference, their ids)."""
    present = np.flatnonzero(confusion.sum(axis=1) > 0)
    present = present[present >= first_foreground]
    return float(foreground_mean(per_class_iou(confusion), confusion, first_foreground)), present


@dataclass
class LabelConsistency:
    """mIoU with its bootstrap interval, the per-class IoU and what it was computed on."""

    miou: float
    ci_low: float
    ci_high: float
    per_class: dict[int, float]
    n_images: int
    pixels: int
    confidence: float

    def to_dict(self) -> dict:
        return {"miou": self.miou, "ci_low": self.ci_low, "ci_high": self.ci_high, "confidence": self.confidence,
                "per_class_iou": {str(k): v for k, v in self.per_class.items()}, "n_images": self.n_images,
                "pixels": self.pixels, "mean_over": "foreground classes (id >= 1) present in the reference maps",
                "interval": f"{EXTENDED_NOTE}, over images"}


def label_consistency(predicted: np.ndarray, reference: np.ndarray, num_classes: int, bootstrap: int = 200,
                      confidence: float = 0.95, seed: int = 0, first_foreground: int = 1) -> LabelConsistency:
    """Score (N, H, W) predicted maps against (N, H, W) reference maps (see the module docstring)."""
    per_image = confusion_matrices(predicted, reference, num_classes)
    total = per_image.sum(axis=0)
    miou, present = mean_iou(total, first_foreground)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap if len(per_image) > 1 else 0):
        value = mean_iou(per_image[rng.integers(0, len(per_image), len(per_image))].sum(axis=0), first_foreground)[0]
        if np.isfinite(value):
            draws.append(value)
    alpha = 1.0 - confidence
    low, high = (np.quantile(draws, [alpha / 2, 1 - alpha / 2]) if draws else (np.nan, np.nan))
    low, high = containing(miou, float(low), float(high))
    ious = per_class_iou(total)
    return LabelConsistency(miou, float(low), float(high), {int(c): float(ious[c]) for c in present}, len(per_image),
                            int(total.sum()), confidence)


def dataset_arrays(folder: Path | str, resolution: int, lut: np.ndarray | None = None, split: str = "train",
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, R, R, 3) and tissue maps (N, R, R) of a dataset folder at `resolution` (Lanczos / nearest);
    maps go through `lut` (e.g. a hierarchy's coarsening table) when given, and are None if the set has none."""
    from histosynth.disk import iter_samples
    from histosynth.resize import resize_image, resize_map

    images, maps = [], []
    for sample in iter_samples(folder, split):
        images.append(resize_image(sample.image, resolution))
        if sample.tissue is not None:
            tissue = resize_map(sample.tissue, resolution)
            maps.append(lut[tissue] if lut is not None else tissue)
    if not images:
        raise InputError(f"{folder}: no samples in split {split!r}")
    if maps and len(maps) != len(images):
        raise InputError(f"{folder}: only {len(maps)} of {len(images)} samples have a tissue map")
    return np.stack(images), np.stack(maps) if maps else None


__all__ = ["LabelConsistency", "confusion_matrices", "dataset_arrays", "foreground_mean", "label_consistency", "mean_iou",
           "per_class_iou"]
