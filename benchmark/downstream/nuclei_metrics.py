"""Nuclei instance metrics as the released evaluation code computes them: PQ/DQ/SQ, AJI/AJI+, CoNIC mPQ+ and
PanNuke mPQ/bPQ. Detection and type F1 are in nuclei_detection.py.

Each default reproduces a released script, so a number can sit next to a published table: vqdang/hover_net
`metrics/stats_utils.py` and `compute_stats.py` (HoVer-Net), TissueImageAnalytics/CoNIC `metrics/stats_utils.py`
and `compute_stats.py`, TissueImageAnalytics/PanNuke-metrics `run.py`. This is an independent implementation of
their formulas. Where histosynth prefers another choice it is a named alternative, never the default.

Inputs
- An instance map is a 2-D non-negative integer array; 0 is background, every other id is one nucleus (ids need
  not be contiguous). Types are an (n,) integer array with `types[k - 1]` the class of instance k (the
  histosynth.schema.Nuclei layout); ids 0..num_classes-1 where `num_classes` counts background, as
  ClassSchema.num_classes does. Type 0 marks an unclassified nucleus: it counts for the binary PQ, AJI and
  detection, and belongs to no class.

Matching (`panoptic_quality`)
- A true and a predicted instance pair when IoU > match_iou. At match_iou >= 0.5 such pairs are unique. Below
  0.5 the released code (get_fast_pq, CoNIC get_pq) first takes the one-to-one assignment of largest total IoU
  over all overlapping pairs (Hungarian), then drops the assigned pairs at or below the threshold, so a pair above
  the threshold can be lost to a weaker assignment: `assignment="all-overlaps"`, the default. histosynth's
  alternative `assignment="above-threshold"` assigns among the pairs above the threshold only.
- Per image: DQ = TP / (TP + FP/2 + FN/2), SQ = sum IoU / TP, PQ = DQ SQ. With no pair SQ = 0; with nothing on
  either side DQ = SQ = PQ = 0, as CoNIC's get_pq (HoVer-Net's get_fast_pq divides by zero there). The released
  code adds 1e-6 to these denominators; the exact ratios here differ from theirs by a relative 2e-6 at most.

Dataset PQ (`DatasetPQ`)
- Headline `pq`/`dq`/`sq`: TP, FP, FN and IoU sums pooled over all images, then the ratios (the aggregation CoNIC's
  compute_stats uses for each class of mPQ+). An image with nothing on either side adds nothing, and a model that
  predicts nothing scores 0.
- `pq_image_mean` (and dq/sq): the mean of per-image values (HoVer-Net run_nuclei_inst_stat, the per-image
  tables), leaving out images with no nucleus on either side (HoVer-Net's code cannot score them). The other rules
  are named alternatives: "zero" (CoNIC compute_stats' binary pq) and "one" (histosynth before: it pays a model
  for predicting nothing on empty images, so it is never a default).

AJI and AJI+ (`aji`, HoVer-Net get_fast_aji / get_fast_aji_plus)
- AJI: each true instance takes its largest-IoU prediction (a prediction may serve several); AJI+ takes the
  one-to-one assignment of largest total IoU. Pairs with IoU 0 are unpaired. AJI = sum of the pairs' intersections
  / (sum of their unions + areas of unpaired true and predicted instances). Nothing on either side: NaN (0/0 in the
  released code), left out of the dataset mean over images.

CoNIC mPQ+ (`mpq_plus`)
- Per class c, TP/FP/FN/IoU sums of the instances of type c over all patches, PQ_c from the sums, mPQ+ the mean
  over classes 1..num_classes-1. A class absent from every true and predicted map scores 0 and is in the mean,
  as in CoNIC's compute_stats. `mpq_plus_present` (histosynth's alternative) leaves such classes out.

PanNuke mPQ / bPQ (`pannuke_mpq_bpq`, PanNuke-metrics run.py)
- Per image, PQ_c only for classes present in the ground truth (a class only predicted is skipped, so its false
  positives never count); mPQ_i = the mean of those. bPQ_i = PQ of the nuclei of classes 1..num_classes-1 with
  classes merged (run.py's `binarize` sees only the class channels, so type-0 nuclei are invisible to it),
  skipped when the ground truth has none. Then the mean per tissue type over the images scored, then over tissues.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy.optimize import linear_sum_assignment

from histosynth.errors import InputError

MPP_40X = 0.25
"""Microns per pixel at 40x, the magnification HoVer-Net's pixel constants refer to."""

InstancePair = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(true_instances, true_types, pred_instances, pred_types) of one image."""
Assignment = Literal["all-overlaps", "above-threshold"]
EmptyRule = Literal["skip", "zero", "one"]
ASSIGNMENTS: tuple[str, ...] = ("all-overlaps", "above-threshold")
EMPTY_RULES: tuple[str, ...] = ("skip", "zero", "one")


def none_if_nan(value: float) -> float | None:
    """`value`, or None for NaN (results files are strict JSON)."""
    return None if math.isnan(value) else value


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


@dataclass(frozen=True)
class PQCounts:
    """Matched (tp), unmatched predicted (fp) and unmatched true (fn) instances and the IoU sum of the pairs.

    Counts add (`a + b`), so datasets pool them; dq, sq and pq are 0 where their denominator is (CoNIC get_pq).
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
        """Detection quality TP / (TP + FP/2 + FN/2); 0 when empty."""
        return _ratio(self.tp, self.tp + 0.5 * self.fp + 0.5 * self.fn)

    @property
    def sq(self) -> float:
        """Segmentation quality, the mean IoU of the pairs; 0 with no pair."""
        return _ratio(self.iou_sum, self.tp)

    @property
    def pq(self) -> float:
        """Panoptic quality sum IoU / (TP + FP/2 + FN/2) = DQ SQ; 0 when empty."""
        return _ratio(self.iou_sum, self.tp + 0.5 * self.fp + 0.5 * self.fn)

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
    """Instances of one image pair, their areas, and every overlapping (true, pred) pair by dense index."""

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    rows: np.ndarray  # index into true_ids
    cols: np.ndarray  # index into pred_ids
    inter: np.ndarray
    union: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        return self.inter / self.union


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
    union = true_area[rows] + pred_area[cols] - inter
    return _Overlaps(true_ids, pred_ids, true_area, pred_area, rows, cols, inter.astype(np.float64),
                     union.astype(np.float64))


def _max_iou_assignment(rows: np.ndarray, cols: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices into `rows`/`cols`/`weight` of the one-to-one assignment of largest total weight (Hungarian).

    Solved on the instances that overlap something: instances without any overlap could only take weight 0.
    Between two assignments of exactly equal total the choice may differ from the released code's.
    """
    r_idx, r = np.unique(rows, return_inverse=True)
    c_idx, c = np.unique(cols, return_inverse=True)
    matrix = np.zeros((len(r_idx), len(c_idx)))
    entry = np.full((len(r_idx), len(c_idx)), -1, np.int64)
    matrix[r, c] = weight
    entry[r, c] = np.arange(len(weight))
    chosen_r, chosen_c = linear_sum_assignment(matrix, maximize=True)
    picked = entry[chosen_r, chosen_c]
    return picked[picked >= 0]


def _match(ov: _Overlaps, true_keep: np.ndarray, pred_keep: np.ndarray, match_iou: float,
           assignment: Assignment = "all-overlaps") -> PQCounts:
    """PQ counts of the true and predicted instances selected by the boolean masks `true_keep`, `pred_keep`."""
    n_true, n_pred = int(true_keep.sum()), int(pred_keep.sum())
    iou = ov.iou
    sel = true_keep[ov.rows] & pred_keep[ov.cols]
    if assignment == "above-threshold" or match_iou >= 0.5:  # at >= 0.5 the pairs above it are unique
        sel &= iou > match_iou
    idx = np.flatnonzero(sel)
    if match_iou < 0.5 and idx.size:
        idx = idx[_max_iou_assignment(ov.rows[idx], ov.cols[idx], iou[idx])]
        idx = idx[iou[idx] > match_iou]
    tp = int(idx.size)
    return PQCounts(tp, n_pred - tp, n_true - tp, float(iou[idx].sum()))


def _check_match_iou(match_iou: float, assignment: str = "all-overlaps") -> None:
    if not 0.0 <= match_iou < 1.0:
        raise InputError(f"match_iou must be in [0, 1), got {match_iou}")
    if assignment not in ASSIGNMENTS:
        raise InputError(f"assignment must be one of {ASSIGNMENTS}, got {assignment!r}")


def panoptic_quality(true_inst: np.ndarray, pred_inst: np.ndarray, match_iou: float = 0.5,
                     assignment: Assignment = "all-overlaps") -> PQCounts:
    """PQ counts of one image's predicted instance map against its true one (classes ignored)."""
    _check_match_iou(match_iou, assignment)
    ov = _overlaps(true_inst, pred_inst, "panoptic quality")
    return _match(ov, np.ones(len(ov.true_ids), bool), np.ones(len(ov.pred_ids), bool), match_iou, assignment)


def _aji_of(ov: _Overlaps, plus: bool) -> float:
    """AJI (each true instance to its best prediction) or AJI+ (one-to-one) of one image; NaN when empty."""
    iou = ov.iou
    if plus:
        idx = _max_iou_assignment(ov.rows, ov.cols, iou) if iou.size else np.zeros(0, np.int64)
    else:
        # per true instance: largest IoU, then the larger union (the released code's IoU / (union + 1e-6) breaks
        # exact ties that way), then the lowest prediction id (np.argmax's first maximum)
        order = np.lexsort((ov.cols, -ov.union, -iou, ov.rows))
        first = np.ones(order.size, bool)
        first[1:] = ov.rows[order][1:] != ov.rows[order][:-1]
        idx = order[first]
    idx = idx[iou[idx] > 0]
    union = ov.union[idx].sum()
    union += ov.true_area.sum() - ov.true_area[np.unique(ov.rows[idx])].sum()
    union += ov.pred_area.sum() - ov.pred_area[np.unique(ov.cols[idx])].sum()
    return float(ov.inter[idx].sum() / union) if union else math.nan


def aji(true_inst: np.ndarray, pred_inst: np.ndarray, plus: bool = False) -> float:
    """Aggregated Jaccard Index of one image (AJI+ with `plus`); NaN with no nucleus on either side."""
    return _aji_of(_overlaps(true_inst, pred_inst, "AJI+" if plus else "AJI"), plus)


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


@dataclass(frozen=True)
class DatasetPQ:
    """Binary PQ of a dataset: pooled counts (the headline) and means of the per-image values."""

    per_image: tuple[PQCounts, ...]

    @property
    def pooled(self) -> PQCounts:
        """TP, FP, FN and IoU sums over all images."""
        return sum(self.per_image, PQCounts())

    @property
    def pq(self) -> float:
        return self.pooled.pq

    @property
    def dq(self) -> float:
        return self.pooled.dq

    @property
    def sq(self) -> float:
        return self.pooled.sq

    def image_mean(self, empty: EmptyRule = "skip") -> tuple[float, float, float]:
        """(DQ, SQ, PQ) as means of the per-image values; an image with no nucleus on either side is left out
        ("skip", NaN when every image is empty), scores 0 ("zero", CoNIC) or 1 ("one", not a published rule)."""
        if empty not in EMPTY_RULES:
            raise InputError(f"empty must be one of {EMPTY_RULES}, got {empty!r}")
        if empty == "skip":
            rows = [(c.dq, c.sq, c.pq) for c in self.per_image if not c.empty]
        else:
            fill = (1.0, 1.0, 1.0) if empty == "one" else (0.0, 0.0, 0.0)
            rows = [fill if c.empty else (c.dq, c.sq, c.pq) for c in self.per_image]
        if not rows:
            return math.nan, math.nan, math.nan
        dq, sq, pq = np.mean(np.array(rows), axis=0)
        return float(dq), float(sq), float(pq)

    def to_dict(self) -> dict[str, Any]:
        dq, sq, pq = self.image_mean()
        return {"pooled": self.pooled.to_dict(), "pq_image_mean": none_if_nan(pq), "dq_image_mean": none_if_nan(dq),
                "sq_image_mean": none_if_nan(sq), "n_images": len(self.per_image),
                "n_empty_images": sum(c.empty for c in self.per_image)}


def dataset_pq(pairs: Iterable[tuple[np.ndarray, np.ndarray]], match_iou: float = 0.5,
               assignment: Assignment = "all-overlaps") -> DatasetPQ:
    """Binary PQ over a dataset of (true_instances, pred_instances) pairs."""
    counts = tuple(panoptic_quality(t, p, match_iou, assignment) for t, p in pairs)
    if not counts:
        raise InputError("dataset PQ: no images to score")
    return DatasetPQ(counts)


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


@dataclass(frozen=True)
class ImageScores:
    """Everything one image contributes: binary and per-class PQ counts, the class-only binary counts PanNuke's
    bPQ uses, and AJI / AJI+ (NaN when the image is empty)."""

    binary: PQCounts
    per_class: tuple[PQCounts, ...]  # classes 1..num_classes-1
    classed_binary: PQCounts  # nuclei of classes 1..num_classes-1, classes merged
    true_classes: frozenset[int]  # classes with a true instance
    aji: float
    aji_plus: float


def image_scores(pair: InstancePair, num_classes: int, match_iou: float = 0.5, where: str = "image") -> ImageScores:
    """All instance scores of one (true_instances, true_types, pred_instances, pred_types) image."""
    if len(pair) != 4:
        raise InputError(f"{where}: expected (true_instances, true_types, pred_instances, pred_types), "
                         f"got {len(pair)} items")
    true_inst, true_types, pred_inst, pred_types = pair
    ov = _overlaps(true_inst, pred_inst, where)
    t_cls = _types(true_types, ov.true_ids, num_classes, f"{where} true")
    p_cls = _types(pred_types, ov.pred_ids, num_classes, f"{where} prediction")
    binary = _match(ov, np.ones(len(t_cls), bool), np.ones(len(p_cls), bool), match_iou)
    per_class = tuple(_match(ov, t_cls == c, p_cls == c, match_iou) for c in range(1, num_classes))
    classed = _match(ov, t_cls > 0, p_cls > 0, match_iou)
    return ImageScores(binary, per_class, classed, frozenset(int(c) for c in t_cls if c > 0),
                       _aji_of(ov, plus=False), _aji_of(ov, plus=True))


def _score_images(pairs: Iterable[InstancePair], num_classes: int, match_iou: float, what: str) -> list[ImageScores]:
    _check_num_classes(num_classes)
    _check_match_iou(match_iou)
    images = [image_scores(pair, num_classes, match_iou, f"{what} image {i}") for i, pair in enumerate(pairs)]
    if not images:
        raise InputError(f"{what}: no images to score")
    return images


@dataclass(frozen=True)
class MPQPlus:
    """CoNIC mPQ+: the mean of PQ_c over all classes, each from counts summed over all patches."""

    mpq_plus: float
    per_class: dict[int, float]  # a class absent from every map scores 0 (CoNIC)
    counts: dict[int, PQCounts]

    @property
    def mpq_plus_present(self) -> float:
        """histosynth's alternative: the mean over the classes present in some true or predicted map (NaN if none)."""
        return _mean_finite([math.nan if self.counts[c].empty else v for c, v in self.per_class.items()])

    def to_dict(self) -> dict[str, Any]:
        return {"mpq_plus": self.mpq_plus, "mpq_plus_present": none_if_nan(self.mpq_plus_present),
                "per_class_pq": {str(c): v for c, v in self.per_class.items()},
                "counts": {str(c): k.to_dict() for c, k in self.counts.items()}}


def _mpq_plus_of(images: Sequence[ImageScores]) -> MPQPlus:
    totals = [sum(column, PQCounts()) for column in zip(*(s.per_class for s in images), strict=True)]
    counts = dict(enumerate(totals, start=1))
    per = {c: k.pq for c, k in counts.items()}
    return MPQPlus(float(np.mean(list(per.values()))), per, counts)


def mpq_plus(pairs: Iterable[InstancePair], num_classes: int, match_iou: float = 0.5) -> MPQPlus:
    """CoNIC multi-class PQ+ of (true_instances, true_types, pred_instances, pred_types) patches."""
    return _mpq_plus_of(_score_images(pairs, num_classes, match_iou, "mPQ+"))


@dataclass(frozen=True)
class PanNukeScores:
    """PanNuke mPQ and bPQ: per image, then the mean per tissue type, then over tissue types (NaN: nothing scored)."""

    mpq: float
    bpq: float
    per_tissue: dict[str, tuple[float, float]]  # tissue -> (mPQ, bPQ)
    per_image_mpq: np.ndarray = field(repr=False)  # NaN: no class in the image's ground truth
    per_image_bpq: np.ndarray = field(repr=False)  # NaN: no classed nucleus in the image's ground truth

    def to_dict(self) -> dict[str, Any]:
        return {"mpq": none_if_nan(self.mpq), "bpq": none_if_nan(self.bpq),
                "per_tissue": {t: {"mpq": none_if_nan(m), "bpq": none_if_nan(b)} for t, (m, b) in self.per_tissue.items()},
                "n_images": len(self.per_image_mpq)}


def _pannuke_of(images: Sequence[ImageScores], tissue_types: Sequence[str]) -> PanNukeScores:
    tissues = list(tissue_types)
    if len(tissues) != len(images):
        raise InputError(f"PanNuke mPQ/bPQ: {len(tissues)} tissue types for {len(images)} images")
    mpq_i = np.array([_mean_finite([k.pq for c, k in enumerate(s.per_class, start=1) if c in s.true_classes])
                      for s in images])
    bpq_i = np.array([s.classed_binary.pq if s.true_classes else math.nan for s in images])
    tissue_a = np.array(tissues, dtype=object)
    per_tissue = {t: (_mean_finite(mpq_i[tissue_a == t].tolist()), _mean_finite(bpq_i[tissue_a == t].tolist()))
                  for t in sorted(set(tissues))}
    return PanNukeScores(_mean_finite([m for m, _ in per_tissue.values()]),
                         _mean_finite([b for _, b in per_tissue.values()]), per_tissue, mpq_i, bpq_i)


def pannuke_mpq_bpq(pairs: Iterable[InstancePair], tissue_types: Sequence[str], num_classes: int,
                    match_iou: float = 0.5) -> PanNukeScores:
    """PanNuke mPQ/bPQ of (true_instances, true_types, pred_instances, pred_types) images with one tissue each."""
    return _pannuke_of(_score_images(pairs, num_classes, match_iou, "PanNuke mPQ/bPQ"), tissue_types)


@dataclass(frozen=True)
class InstanceScores:
    """Every instance metric of one test set, from one pass over its images."""

    pq: DatasetPQ
    aji: float  # mean over the images with a nucleus on some side (HoVer-Net compute_stats)
    aji_plus: float
    mpq: MPQPlus
    pannuke: PanNukeScores


def score_instances(pairs: Iterable[InstancePair], num_classes: int, tissue_types: Sequence[str] | None = None,
                    match_iou: float = 0.5) -> InstanceScores:
    """Binary PQ, AJI/AJI+, mPQ+ and PanNuke mPQ/bPQ of (true_instances, true_types, pred_instances, pred_types)
    images; without `tissue_types` all images are one tissue."""
    images = _score_images(pairs, num_classes, match_iou, "instance scores")
    tissues = list(tissue_types) if tissue_types is not None else ["all"] * len(images)
    return InstanceScores(DatasetPQ(tuple(s.binary for s in images)), _mean_finite([s.aji for s in images]),
                          _mean_finite([s.aji_plus for s in images]), _mpq_plus_of(images),
                          _pannuke_of(images, tissues))


__all__ = ["ASSIGNMENTS", "EMPTY_RULES", "MPP_40X", "DatasetPQ", "ImageScores", "InstancePair", "InstanceScores",
           "MPQPlus", "PQCounts", "PanNukeScores", "aji", "dataset_pq", "image_scores", "mpq_plus", "none_if_nan",
           "panoptic_quality", "pannuke_mpq_bpq", "score_instances"]
