"""Nuclei detection and type F1 as HoVer-Net's released `compute_stats.py` (run_nuclei_type_stat) computes them.

Conventions (inputs as in nuclei_metrics.py; centroids are (n, 2) float arrays (x, y) in pixels, as
Nuclei.centroids):
- Pairing (`pair_centroids`), per image. Default "min-total-distance", the released `pair_coordinates`: one
  Hungarian assignment over all true and predicted centroids minimizing the total Euclidean distance, then the
  assigned pairs farther than the radius are dropped (distance <= radius keeps). A far assignment can cost a pair
  that another assignment would keep. histosynth's alternative "max-pairs": the assignment with the most pairs
  within the radius, and among those the least total distance. 12 px at 40x (0.25 um/px) is HoVer-Net's radius:
  `pairing_radius_px(mpp)` scales it.
- Counts are pooled over all images. F1_d = 2 TP / (2 TP + FP + FN); type accuracy = correctly typed pairs /
  pairs. With no nucleus anywhere both are NaN. (The released script puts a placeholder nucleus of type 0 at
  (0, 0) into an image without nuclei; no placeholder is added here.)
- Per class c (classes 1..num_classes-1), among the pairs: TP_c (true c, predicted c), TN_c (neither c),
  FP_c (true not c, predicted c), FN_c (true c, predicted not c); among the unpaired: FP_d,c (predicted c),
  FN_d,c (true c). F1_c = 2 (TP_c + TN_c) / (2 (TP_c + TN_c) + w0 FP_c + w1 FN_c + w2 FP_d,c + w3 FN_d,c),
  w = [2, 2, 1, 1]. The released code keeps only the pairs where c is the true or the predicted type before
  counting, so its TN_c is always 0: that is `per_class_f1`, the published default. The HoVer-Net paper's formula
  with TN_c is `per_class_f1_with_tn`. The released script scores the classes of its ground truth; here every
  class in the true or predicted types is scored (a class only predicted scores 0), and a class in neither is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from histosynth.benchmark.downstream.nuclei_metrics import MPP_40X, none_if_nan
from histosynth.errors import InputError

PAIRING_RADIUS_40X_PX = 12.0
HOVERNET_F1_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
"""Weights of FP_c, FN_c, FP_d,c, FN_d,c in the HoVer-Net per-class F1."""
Pairing = Literal["min-total-distance", "max-pairs"]
PAIRINGS: tuple[str, ...] = ("min-total-distance", "max-pairs")


def pairing_radius_px(mpp: float) -> float:
    """HoVer-Net's detection pairing radius (12 px at 40x) in pixels at `mpp` microns per pixel."""
    if not mpp > 0:
        raise InputError(f"pairing radius: mpp must be > 0, got {mpp}")
    return PAIRING_RADIUS_40X_PX * MPP_40X / mpp


def pair_centroids(true_xy: np.ndarray, pred_xy: np.ndarray, radius_px: float,
                   pairing: Pairing = "min-total-distance") -> np.ndarray:
    """(k, 2) index pairs (true, pred) of one image's centroids within `radius_px`, by `pairing` (module doc)."""
    if pairing not in PAIRINGS:
        raise InputError(f"pairing must be one of {PAIRINGS}, got {pairing!r}")
    if len(true_xy) == 0 or len(pred_xy) == 0:
        return np.zeros((0, 2), np.int64)
    dist = np.linalg.norm(true_xy[:, None, :].astype(np.float64) - pred_xy[None, :, :], axis=-1)
    inside = dist <= radius_px
    cost = dist
    if pairing == "max-pairs":
        # A pair beyond the radius costs more than any set of in-radius pairs, so a larger pair count always wins.
        cost = np.where(inside, dist, radius_px * (min(dist.shape) + 1) + 1.0)
    rows, cols = linear_sum_assignment(cost)
    keep = inside[rows, cols]
    return np.stack([rows[keep], cols[keep]], axis=1).astype(np.int64)


@dataclass(frozen=True)
class ClassF1Counts:
    """HoVer-Net's per-class counts: among pairs tp/tn/fp/fn of the type, among unpaired fp_d/fn_d of the type."""

    tp: int
    tn: int
    fp: int
    fn: int
    fp_d: int
    fn_d: int

    def f1(self, weights: Sequence[float], with_tn: bool = False) -> float:
        """The weighted F1 of this class: with TN_c = 0 (the released code) or with TN_c (the paper)."""
        correct = self.tp + (self.tn if with_tn else 0)
        w0, w1, w2, w3 = weights
        denominator = 2 * correct + w0 * self.fp + w1 * self.fn + w2 * self.fp_d + w3 * self.fn_d
        return 2 * correct / denominator if denominator else math.nan


@dataclass(frozen=True)
class DetectionScores:
    """Detection F1, type accuracy and per-class F1 with counts pooled over all images."""

    tp: int
    fp: int
    fn: int
    f1: float
    precision: float
    recall: float
    type_accuracy: float
    per_class_f1: dict[int, float]  # TN_c = 0, as the released code
    per_class_f1_with_tn: dict[int, float]  # the paper's formula
    per_class_counts: dict[int, ClassF1Counts]
    radius_px: float
    weights: tuple[float, ...]
    pairing: str

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "f1_d": none_if_nan(self.f1),
                "precision": none_if_nan(self.precision), "recall": none_if_nan(self.recall),
                "type_accuracy": none_if_nan(self.type_accuracy),
                "per_class_f1": {str(c): none_if_nan(v) for c, v in self.per_class_f1.items()},
                "per_class_f1_with_tn": {str(c): none_if_nan(v) for c, v in self.per_class_f1_with_tn.items()},
                "per_class_counts": {str(c): vars(k) for c, k in self.per_class_counts.items()},
                "radius_px": self.radius_px, "weights": list(self.weights), "pairing": self.pairing}


def _per_image(values: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One image's array, or a sequence of per-image arrays, as a list."""
    if isinstance(values, np.ndarray):
        return [values]
    return [np.asarray(v) for v in values]


def _centroids(xy: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(xy, dtype=np.float64)
    if array.size == 0:
        return array.reshape(0, 2)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise InputError(f"{what}: centroids must be a finite (n, 2) array of (x, y), got shape {array.shape}")
    return array


def _classes(ids: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    array = np.asarray(ids).reshape(-1)
    if array.size != n:
        raise InputError(f"{what}: {array.size} classes for {n} centroids")
    if n and (not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() >= num_classes):
        raise InputError(f"{what}: class ids must be integers 0..{num_classes - 1}, got {array.dtype} "
                         f"{array.min()}..{array.max()}")
    return array.astype(np.int64)


def _class_counts(pt: np.ndarray, pp: np.ndarray, ut: np.ndarray, up: np.ndarray, c: int) -> ClassF1Counts:
    return ClassF1Counts(tp=int(((pt == c) & (pp == c)).sum()), tn=int(((pt != c) & (pp != c)).sum()),
                         fp=int(((pt != c) & (pp == c)).sum()), fn=int(((pt == c) & (pp != c)).sum()),
                         fp_d=int((up == c).sum()), fn_d=int((ut == c).sum()))


def detection_f1(true_centroids: np.ndarray | Sequence[np.ndarray], true_classes: np.ndarray | Sequence[np.ndarray],
                 pred_centroids: np.ndarray | Sequence[np.ndarray], pred_classes: np.ndarray | Sequence[np.ndarray],
                 radius_px: float, num_classes: int, weights: Sequence[float] = HOVERNET_F1_WEIGHTS,
                 pairing: Pairing = "min-total-distance") -> DetectionScores:
    """HoVer-Net detection F1 and per-class F1 of one image's arrays, or of sequences with one array per image.

    Centroids pair only within their own image; the counts are then pooled over images.
    """
    if num_classes < 2:
        raise InputError(f"num_classes counts background and must be >= 2, got {num_classes}")
    if not radius_px > 0:
        raise InputError(f"detection F1: radius_px must be > 0, got {radius_px}")
    if len(weights) != 4:
        raise InputError(f"detection F1: 4 weights (FP_c, FN_c, FP_d, FN_d) expected, got {len(weights)}")
    images = [_per_image(v) for v in (true_centroids, true_classes, pred_centroids, pred_classes)]
    if len({len(v) for v in images}) != 1:
        raise InputError(f"detection F1: image counts differ: {[len(v) for v in images]} "
                         "(true centroids, true classes, pred centroids, pred classes)")
    paired_true, paired_pred, lone_true, lone_pred = [], [], [], []
    for i, (t_xy, t_c, p_xy, p_c) in enumerate(zip(*images, strict=True)):
        t_xy = _centroids(t_xy, f"detection F1 image {i} true")
        p_xy = _centroids(p_xy, f"detection F1 image {i} prediction")
        t_c = _classes(t_c, len(t_xy), num_classes, f"detection F1 image {i} true")
        p_c = _classes(p_c, len(p_xy), num_classes, f"detection F1 image {i} prediction")
        pairs = pair_centroids(t_xy, p_xy, radius_px, pairing)
        paired_true.append(t_c[pairs[:, 0]])
        paired_pred.append(p_c[pairs[:, 1]])
        lone_true.append(np.delete(t_c, pairs[:, 0]))
        lone_pred.append(np.delete(p_c, pairs[:, 1]))
    pt, pp, ut, up = (np.concatenate(v) if v else np.zeros(0, np.int64)
                      for v in (paired_true, paired_pred, lone_true, lone_pred))
    tp, fp, fn = len(pt), len(up), len(ut)
    counts = {c: _class_counts(pt, pp, ut, up, c) for c in range(1, num_classes)}
    present = set(np.concatenate([pt, pp, ut, up]).tolist())
    w = tuple(float(x) for x in weights)
    return DetectionScores(
        tp, fp, fn, f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
        precision=tp / (tp + fp) if tp + fp else math.nan, recall=tp / (tp + fn) if tp + fn else math.nan,
        type_accuracy=float((pt == pp).mean()) if tp else math.nan,
        per_class_f1={c: k.f1(w) if c in present else math.nan for c, k in counts.items()},
        per_class_f1_with_tn={c: k.f1(w, with_tn=True) if c in present else math.nan for c, k in counts.items()},
        per_class_counts=counts, radius_px=float(radius_px), weights=w, pairing=pairing)


__all__ = ["HOVERNET_F1_WEIGHTS", "PAIRINGS", "PAIRING_RADIUS_40X_PX", "ClassF1Counts", "DetectionScores",
           "detection_f1", "pair_centroids", "pairing_radius_px"]
