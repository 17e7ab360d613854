"""Nuclei instance metrics: PQ/DQ/SQ, CoNIC mPQ+, PanNuke mPQ/bPQ and HoVer-Net detection / type F1.

Formulas are ported from the papers (Kirillov et al. 2019 panoptic quality; Graham et al. 2019 HoVer-Net; Gamper
et al. 2020 PanNuke; Graham et al. 2021 CoNIC), not from the published scripts, which divide by zero on empty
images and score empty classes 0. Conventions, stated once:

Inputs
- An instance map is a 2-D non-negative integer array; 0 is background, every other id is one nucleus (ids need
  not be contiguous). Types are an (n,) integer array with `types[k - 1]` the class of instance k (the
  histosynth.schema.Nuclei layout); ids 0..num_classes-1 where `num_classes` counts background, as
  ClassSchema.num_classes does. Type 0 marks an unclassified nucleus: it counts for the binary PQ and for
  detection, and belongs to no class.
- Centroids are (n, 2) float arrays (x, y) in pixels, as in Nuclei.centroids.

PQ (one image, `panoptic_quality`)
- A true and a predicted instance pair when IoU > match_iou (strictly). For match_iou >= 0.5 such pairs are
  unique (two disjoint instances cannot both overlap one instance by more than half its union); below 0.5 the
  pairs are a maximum-IoU assignment (scipy's linear_sum_assignment), kept when IoU > match_iou.
- DQ = TP / (TP + FP/2 + FN/2), SQ = sum IoU / TP, PQ = DQ SQ = sum IoU / (TP + FP/2 + FN/2); no smoothing term.
- Nothing on either side (TP + FP + FN = 0) is perfect agreement: DQ = SQ = PQ = 1 by definition. With errors
  but no pair (TP = 0), DQ = SQ = PQ = 0.
- Dataset PQ (`mean_pq`, HoVer-Net and PanNuke) is the mean over images of the per-image DQ, SQ and PQ
  (so mean PQ is not mean DQ times mean SQ).

CoNIC mPQ+ (`mpq_plus`)
- Per class c, the TP, FP, FN and IoU sums of the instances of type c (true and predicted restricted to c) are
  summed over all patches; PQ_c comes from the sums; mPQ+ is the mean of PQ_c over classes 1..num_classes-1.
- A class absent from the ground truth but predicted scores PQ_c = 0 (all its predictions are false positives)
  and is in the mean. A class absent from both the ground truth and the predictions of every patch carries no
  information: PQ_c is NaN and it is left out of the mean (the CoNIC script scores it 0, which punishes a model
  for correctly predicting nothing). If every class is left out, mPQ+ = 1 (the empty-agreement rule above).

PanNuke mPQ / bPQ (`pannuke_mpq_bpq`)
- Per image: bPQ_i is the PQ of all nuclei with classes merged (1 when both maps are empty, as above); mPQ_i is
  the mean of the per-image PQ_c over the classes present in that image's ground truth or prediction (a class
  only predicted scores 0; the PanNuke script skips classes absent from the ground truth and so never counts
  their false positives); an image with no class on either side has mPQ_i = 1.
- Then the mean over the images of each tissue type, then the mean over tissue types.

Detection and type F1 (`detection_f1`, HoVer-Net)
- Per image, true and predicted centroids are paired one-to-one within `radius_px` (distance <= radius) by the
  Hungarian algorithm: the assignment with the most pairs within the radius, and among those the least total
  distance. (The HoVer-Net script minimises the total distance over all pairs first and then drops the far ones,
  which can lose a pair.) 12 px at 40x (0.25 um/px) is the HoVer-Net radius: `pairing_radius_px(mpp)` scales it.
- Counts are pooled over all images. F1_d = 2 TP / (2 TP + FP + FN); 1 when there are no nuclei at all.
  Type accuracy = correctly typed pairs / pairs (NaN with no pair).
- Per class c (classes 1..num_classes-1), among the pairs: TP_c (true c, predicted c), TN_c (neither c),
  FP_c (true not c, predicted c), FN_c (true c, predicted not c); among the unpaired: FP_d,c (predicted c),
  FN_d,c (true c). F1_c = 2 (TP_c + TN_c) / (2 (TP_c + TN_c) + w0 FP_c + w1 FN_c + w2 FP_d,c + w3 FN_d,c) with
  w = [2, 2, 1, 1] (the HoVer-Net paper's formula) in `per_class_f1`. The released HoVer-Net code keeps only the
  pairs where c is the true or the predicted type before counting, so its TN_c is always 0 and the per-class
  scores it publishes are `per_class_f1_without_tn`, reported alongside for comparison with the literature.
  A class in neither the true nor the predicted types has F1_c = NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from histosynth.errors import InputError

MPP_40X = 0.25
"""Microns per pixel at 40x, the magnification of HoVer-Net's 12 px pairing radius."""
PAIRING_RADIUS_40X_PX = 12.0
HOVERNET_F1_WEIGHTS = (2.0, 2.0, 1.0, 1.0)
"""Weights of FP_c, FN_c, FP_d,c, FN_d,c in the HoVer-Net per-class F1."""

InstancePair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(true_instances, true_types, pred_instances, pred_types) of one image."""


def pairing_radius_px(mpp: float) -> float:
    """HoVer-Net's detection pairing radius (12 px at 40x) in pixels at `mpp` microns per pixel."""
    if not mpp > 0:
        raise InputError(f"pairing radius: mpp must be > 0, got {mpp}")
    return PAIRING_RADIUS_40X_PX * MPP_40X / mpp


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class PQCounts:
    """Matched (tp), unmatched predicted (fp) and unmatched true (fn) instances and the IoU sum of the pairs.

    Counts add (`a + b`) so that datasets pool them; dq, sq and pq follow the module's conventions.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: PQCounts) -> PQCounts:
        return PQCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum)

    @property
    def empty(self) -> bool:
        """True when neither side has an instance."""
        return self.tp + self.fp + self.fn == 0

    @property
    def dq(self) -> float:
        """Detection quality TP / (TP + FP/2 + FN/2); 1 when empty."""
        return 1.0 if self.empty else self.tp / (self.tp + 0.5 * self.fp + 0.5 * self.fn)

    @property
    def sq(self) -> float:
        """Segmentation quality, the mean IoU of the pairs; 1 when empty, 0 with no pair."""
        if self.empty:
            return 1.0
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def pq(self) -> float:
        """Panoptic quality sum IoU / (TP + FP/2 + FN/2) = DQ SQ; 1 when empty."""
        return 1.0 if self.empty else self.iou_sum / (self.tp + 0.5 * self.fp + 0.5 * self.fn)

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "iou_sum": self.iou_sum,
                "dq": self.dq, "sq": self.sq, "pq": self.pq}


def _instance_map(labels: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{what}: an instance map must be a 2-D integer array, got {array.dtype} {array.shape}")
    if array.size and array.min() < 0:
        raise InputError(f"{what}: instance map has negative ids (min {array.min()})")
    return array


def _dense_ids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(instance ids (n,) ascending, per-pixel index 0 = background, k = ids[k - 1])."""
    ids, inverse = np.unique(labels.ravel(), return_inverse=True)
    if ids.size and ids[0] == 0:
        return ids[1:], inverse
    return ids, inverse + 1


@dataclass(frozen=True)
class _Overlaps:
    """Instances of one image pair and the IoU of every overlapping (true, pred) pair, by dense index."""

    true_ids: np.ndarray
    pred_ids: np.ndarray
    rows: np.ndarray  # index into true_ids
    cols: np.ndarray  # index into pred_ids
    iou: np.ndarray


def _overlaps(true_inst: np.ndarray, pred_inst: np.ndarray, where: str) -> _Overlaps:
    true_inst = _instance_map(true_inst, f"{where} true")
    pred_inst = _instance_map(pred_inst, f"{where} prediction")
    if true_inst.shape != pred_inst.shape:
        raise InputError(f"{where}: true {true_inst.shape} and predicted {pred_inst.shape} maps differ in shape")
    true_ids, t = _dense_ids(true_inst)
    pred_ids, p = _dense_ids(pred_inst)
    n, m = len(true_ids), len(pred_ids)
    true_area = np.bincount(t, minlength=n + 1)[1:]
    pred_area = np.bincount(p, minlength=m + 1)[1:]
    both = (t > 0) & (p > 0)
    codes, inter = np.unique((t[both] - 1).astype(np.int64) * max(m, 1) + (p[both] - 1), return_counts=True)
    rows, cols = np.divmod(codes, max(m, 1))
    iou = inter / (true_area[rows] + pred_area[cols] - inter)
    return _Overlaps(true_ids, pred_ids, rows, cols, iou.astype(np.float64))


def _match(overlaps: _Overlaps, true_keep: np.ndarray, pred_keep: np.ndarray, match_iou: float) -> PQCounts:
    """PQ counts of the true and predicted instances selected by the boolean masks `true_keep`, `pred_keep`."""
    n_true, n_pred = int(true_keep.sum()), int(pred_keep.sum())
    sel = true_keep[overlaps.rows] & pred_keep[overlaps.cols] & (overlaps.iou > match_iou)
    iou = overlaps.iou[sel]
    if match_iou < 0.5 and iou.size:
        rows, cols = overlaps.rows[sel], overlaps.cols[sel]
        r_idx, r = np.unique(rows, return_inverse=True)
        c_idx, c = np.unique(cols, return_inverse=True)
        matrix = np.zeros((len(r_idx), len(c_idx)))
        matrix[r, c] = iou
        chosen_r, chosen_c = linear_sum_assignment(matrix, maximize=True)
        iou = matrix[chosen_r, chosen_c]
        iou = iou[iou > match_iou]
    tp = int(iou.size)
    return PQCounts(tp, n_pred - tp, n_true - tp, float(iou.sum()))


def _check_match_iou(match_iou: float) -> None:
    if not 0.0 <= match_iou < 1.0:
        raise InputError(f"match_iou must be in [0, 1), got {match_iou}")


def panoptic_quality(true_inst: np.ndarray, pred_inst: np.ndarray, match_iou: float = 0.5) -> PQCounts:
    """PQ counts of one image's predicted instance map against its true one (classes ignored)."""
    _check_match_iou(match_iou)
    ov = _overlaps(true_inst, pred_inst, "panoptic quality")
    return _match(ov, np.ones(len(ov.true_ids), bool), np.ones(len(ov.pred_ids), bool), match_iou)


@dataclass(frozen=True)
class MeanPQ:
    """Dataset DQ, SQ and PQ as means of the per-image values, and the per-image counts."""

    dq: float
    sq: float
    pq: float
    per_image: tuple[PQCounts, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dq": self.dq, "sq": self.sq, "pq": self.pq, "n_images": len(self.per_image),
                "averaging": "mean over images of the per-image value; an image with no nuclei on either side "
                             "scores 1"}


def _mean_of(counts: Sequence[PQCounts], what: str) -> MeanPQ:
    if not counts:
        raise InputError(f"{what}: no images to score")
    return MeanPQ(float(np.mean([c.dq for c in counts])), float(np.mean([c.sq for c in counts])),
                  float(np.mean([c.pq for c in counts])), tuple(counts))


def mean_pq(pairs: Iterable[tuple[np.ndarray, np.ndarray]], match_iou: float = 0.5) -> MeanPQ:
    """Binary PQ over a dataset of (true_instances, pred_instances) pairs: the mean of the per-image DQ/SQ/PQ."""
    return _mean_of([panoptic_quality(t, p, match_iou) for t, p in pairs], "mean PQ")


def _types(types: np.ndarray, ids: np.ndarray, num_classes: int, what: str) -> np.ndarray:
    """The class of each instance id in `ids` from the (n,) `types` with types[k - 1] the class of instance k."""
    array = np.asarray(types).reshape(-1)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{what}: types must be integers, got {array.dtype}")
    if ids.size and ids[-1] > array.size:
        raise InputError(f"{what}: instance id {ids[-1]} has no type (types has {array.size} entries; "
                         "types[k - 1] is the class of instance k)")
    of_ids = array[ids - 1].astype(np.int64) if ids.size else np.zeros(0, np.int64)
    if of_ids.size and (of_ids.min() < 0 or of_ids.max() >= num_classes):
        raise InputError(f"{what}: type ids must be 0..{num_classes - 1}, got {of_ids.min()}..{of_ids.max()}")
    return of_ids


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise InputError(f"num_classes counts background and must be >= 2, got {num_classes}")


def _image_counts(pair: InstancePair, num_classes: int, match_iou: float,
                  where: str) -> tuple[PQCounts, list[PQCounts]]:
    """(binary PQ counts, PQ counts of classes 1..num_classes-1) of one image."""
    if len(pair) != 4:
        raise InputError(f"{where}: expected (true_instances, true_types, pred_instances, pred_types), "
                         f"got {len(pair)} items")
    true_inst, true_types, pred_inst, pred_types = pair
    ov = _overlaps(true_inst, pred_inst, where)
    t_cls = _types(true_types, ov.true_ids, num_classes, f"{where} true")
    p_cls = _types(pred_types, ov.pred_ids, num_classes, f"{where} prediction")
    binary = _match(ov, np.ones(len(t_cls), bool), np.ones(len(p_cls), bool), match_iou)
    per_class = [_match(ov, t_cls == c, p_cls == c, match_iou) for c in range(1, num_classes)]
    return binary, per_class


@dataclass(frozen=True)
class MPQPlus:
    """CoNIC mPQ+: the mean of PQ_c over classes, each from counts summed over all patches."""

    mpq_plus: float
    per_class: dict[int, float]  # NaN: class absent from every true and predicted map (left out of the mean)
    counts: dict[int, PQCounts]

    def to_dict(self) -> dict[str, Any]:
        return {"mpq_plus": self.mpq_plus,
                "per_class_pq": {str(c): _none_if_nan(v) for c, v in self.per_class.items()},
                "counts": {str(c): k.to_dict() for c, k in self.counts.items()},
                "averaging": "per class, TP/FP/FN/IoU summed over all patches; mean of PQ_c over the classes "
                             "present in the ground truth or the predictions"}


def _mean_present(values: Sequence[float]) -> float:
    present = [v for v in values if not math.isnan(v)]
    return float(np.mean(present)) if present else 1.0


def mpq_plus(pairs: Iterable[InstancePair], num_classes: int, match_iou: float = 0.5) -> MPQPlus:
    """CoNIC multi-class PQ+ of (true_instances, true_types, pred_instances, pred_types) patches."""
    _check_num_classes(num_classes)
    _check_match_iou(match_iou)
    totals = [PQCounts() for _ in range(1, num_classes)]
    n = 0
    for n, pair in enumerate(pairs, start=1):
        _, per_class = _image_counts(pair, num_classes, match_iou, f"mPQ+ image {n - 1}")
        totals = [a + b for a, b in zip(totals, per_class, strict=True)]
    if n == 0:
        raise InputError("mPQ+: no images to score")
    per = {c: (math.nan if k.empty else k.pq) for c, k in enumerate(totals, start=1)}
    return MPQPlus(_mean_present(list(per.values())), per, dict(enumerate(totals, start=1)))


@dataclass(frozen=True)
class PanNukeScores:
    """PanNuke mPQ and bPQ: per image, then the mean per tissue type, then the mean over tissue types."""

    mpq: float
    bpq: float
    per_tissue: dict[str, tuple[float, float]]  # tissue -> (mPQ, bPQ)
    per_image_mpq: np.ndarray = field(repr=False)
    per_image_bpq: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"mpq": self.mpq, "bpq": self.bpq,
                "per_tissue": {t: {"mpq": m, "bpq": b} for t, (m, b) in self.per_tissue.items()},
                "n_images": len(self.per_image_mpq),
                "averaging": "per image (mPQ over the classes present in its ground truth or prediction), then "
                             "the mean per tissue type, then the mean over tissue types"}


def pannuke_mpq_bpq(pairs: Iterable[InstancePair], tissue_types: Sequence[str], num_classes: int,
                    match_iou: float = 0.5) -> PanNukeScores:
    """PanNuke mPQ/bPQ of (true_instances, true_types, pred_instances, pred_types) images with one tissue each."""
    _check_num_classes(num_classes)
    _check_match_iou(match_iou)
    tissues = list(tissue_types)
    mpq_i: list[float] = []
    bpq_i: list[float] = []
    for i, pair in enumerate(pairs):
        binary, per_class = _image_counts(pair, num_classes, match_iou, f"PanNuke image {i}")
        bpq_i.append(binary.pq)
        mpq_i.append(_mean_present([math.nan if k.empty else k.pq for k in per_class]))
    if not mpq_i:
        raise InputError("PanNuke mPQ/bPQ: no images to score")
    if len(tissues) != len(mpq_i):
        raise InputError(f"PanNuke mPQ/bPQ: {len(tissues)} tissue types for {len(mpq_i)} images")
    mpq_a, bpq_a, tissue_a = np.array(mpq_i), np.array(bpq_i), np.array(tissues, dtype=object)
    per_tissue = {t: (float(mpq_a[tissue_a == t].mean()), float(bpq_a[tissue_a == t].mean()))
                  for t in sorted(set(tissues))}
    return PanNukeScores(float(np.mean([m for m, _ in per_tissue.values()])),
                         float(np.mean([b for _, b in per_tissue.values()])), per_tissue, mpq_a, bpq_a)


def pair_centroids(true_xy: np.ndarray, pred_xy: np.ndarray, radius_px: float) -> np.ndarray:
    """(k, 2) index pairs (true, pred): most pairs within `radius_px`, then least total distance (Hungarian)."""
    if len(true_xy) == 0 or len(pred_xy) == 0:
        return np.zeros((0, 2), np.int64)
    dist = np.linalg.norm(true_xy[:, None, :].astype(np.float64) - pred_xy[None, :, :], axis=-1)
    inside = dist <= radius_px
    # A pair beyond the radius costs more than any set of in-radius pairs, so a larger pair count always wins.
    too_far = radius_px * (min(dist.shape) + 1) + 1.0
    rows, cols = linear_sum_assignment(np.where(inside, dist, too_far))
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

    def f1(self, weights: Sequence[float], with_tn: bool = True) -> float:
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
    per_class_f1: dict[int, float]
    per_class_f1_without_tn: dict[int, float]
    per_class_counts: dict[int, ClassF1Counts]
    radius_px: float
    weights: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "f1_d": self.f1, "precision": _none_if_nan(self.precision),
                "recall": _none_if_nan(self.recall), "type_accuracy": _none_if_nan(self.type_accuracy),
                "per_class_f1": {str(c): _none_if_nan(v) for c, v in self.per_class_f1.items()},
                "per_class_f1_without_tn": {str(c): _none_if_nan(v) for c, v in self.per_class_f1_without_tn.items()},
                "per_class_counts": {str(c): vars(k) for c, k in self.per_class_counts.items()},
                "radius_px": self.radius_px, "weights": list(self.weights)}


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


def detection_f1(true_centroids: np.ndarray | Sequence[np.ndarray], true_classes: np.ndarray | Sequence[np.ndarray],
                 pred_centroids: np.ndarray | Sequence[np.ndarray], pred_classes: np.ndarray | Sequence[np.ndarray],
                 radius_px: float, num_classes: int,
                 weights: Sequence[float] = HOVERNET_F1_WEIGHTS) -> DetectionScores:
    """HoVer-Net detection F1 and per-class F1 of one image's arrays, or of sequences with one array per image.

    Centroids pair only within their own image; the counts are then pooled over images.
    """
    _check_num_classes(num_classes)
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
        pairs = pair_centroids(t_xy, p_xy, radius_px)
        paired_true.append(t_c[pairs[:, 0]])
        paired_pred.append(p_c[pairs[:, 1]])
        lone_true.append(np.delete(t_c, pairs[:, 0]))
        lone_pred.append(np.delete(p_c, pairs[:, 1]))
    pt, pp, ut, up = (np.concatenate(v) if v else np.zeros(0, np.int64)
                      for v in (paired_true, paired_pred, lone_true, lone_pred))
    tp, fp, fn = len(pt), len(up), len(ut)
    f1 = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    counts = {c: ClassF1Counts(tp=int(((pt == c) & (pp == c)).sum()), tn=int(((pt != c) & (pp != c)).sum()),
                               fp=int(((pt != c) & (pp == c)).sum()), fn=int(((pt == c) & (pp != c)).sum()),
                               fp_d=int((up == c).sum()), fn_d=int((ut == c).sum()))
              for c in range(1, num_classes)}
    present = set(np.concatenate([pt, pp, ut, up]).tolist())
    w = tuple(float(x) for x in weights)
    return DetectionScores(
        tp, fp, fn, f1,
        precision=tp / (tp + fp) if tp + fp else math.nan, recall=tp / (tp + fn) if tp + fn else math.nan,
        type_accuracy=float((pt == pp).mean()) if tp else math.nan,
        per_class_f1={c: k.f1(w) if c in present else math.nan for c, k in counts.items()},
        per_class_f1_without_tn={c: k.f1(w, with_tn=False) if c in present else math.nan
                                 for c, k in counts.items()},
        per_class_counts=counts, radius_px=float(radius_px), weights=w)
