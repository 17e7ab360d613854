"""Nuclei instance metrics against MONAI (an independent PQ implementation) and hand-built maps whose values under
the released evaluation code (vqdang/hover_net metrics/stats_utils.py and compute_stats.py; TissueImageAnalytics/
CoNIC metrics/stats_utils.py and compute_stats.py; TissueImageAnalytics/PanNuke-metrics run.py) are worked out by
hand next to each case, with the function of the released code it follows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import PanopticQualityMetric, compute_panoptic_quality
from numerics import EPS64

from histosynth.benchmark.downstream.nuclei_metrics import (
    DatasetPQ,
    PQCounts,
    aji,
    dataset_pq,
    image_scores,
    mpq_plus,
    pannuke_mpq_bpq,
    panoptic_quality,
    score_instances,
)
from histosynth.errors import InputError

NUM_CLASSES = 4  # background + classes 1..3, as ClassSchema.num_classes counts them
RELEASED_EPS_RTOL = (1 + 1e-6) ** 2 - 1 + 4 * EPS64
"""The released code adds 1e-6 to the denominators of DQ (>= 1 when TP >= 1) and SQ (TP >= 1): the exact value is
at most (1 + 1e-6)^2 times theirs, plus a few float64 roundings. With TP = 0 both codes give exactly 0."""


def _monai_rtol(n_pairs: int) -> float:
    """MONAI adds 1e-6 to denominators >= 0.5 (relative error <= 2e-6) and sums float32 IoUs, each one division
    of exact integers (relative error <= 2^-24), with at most n - 1 float32 additions (each <= 2^-24)."""
    return 2e-6 + 2 * (n_pairs + 1) * 2.0 ** -24


def _disc(shape: tuple[int, int], cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _random_case(rng: np.random.Generator, size: int = 64, n: int = 14) -> tuple[np.ndarray, ...]:
    """True map of overlapping (so touching) discs painted in order; prediction = shifted/resized copies of most,
    with some nuclei dropped, some spurious ones added and non-contiguous ids; random types 0..3."""
    true = np.zeros((size, size), np.int32)
    pred = np.zeros((size, size), np.int32)
    for k in range(1, n + 1):
        cx, cy, r = rng.uniform(4, size - 4), rng.uniform(4, size - 4), rng.uniform(2.5, 6)
        true[_disc(true.shape, cx, cy, r)] = k
        if rng.random() < 0.8:
            dx, dy = rng.normal(0, 1.5, 2)
            pred[_disc(pred.shape, cx + dx, cy + dy, r * rng.uniform(0.7, 1.3))] = 3 * k + 1
    for j in range(int(rng.integers(0, 4))):
        pred[_disc(pred.shape, rng.uniform(0, size), rng.uniform(0, size), rng.uniform(2, 5))] = 3 * n + 10 + j
    true_types = rng.integers(0, NUM_CLASSES, true.max())
    pred_types = rng.integers(0, NUM_CLASSES, max(pred.max(), 1))
    return true, true_types, pred, pred_types


def _class_map(inst: np.ndarray, types: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], types])[inst]


def _monai_batch(cases: list[tuple[np.ndarray, ...]]) -> tuple[torch.Tensor, torch.Tensor]:
    """MONAI's input layout: (B, 2, H, W) with channel 0 the instance map and channel 1 the class map."""
    y = torch.as_tensor(np.stack([np.stack([t, _class_map(t, tt)]) for t, tt, _, _ in cases]))
    y_pred = torch.as_tensor(np.stack([np.stack([p, _class_map(p, pt)]) for _, _, p, pt in cases]))
    return y_pred, y


def _box(shape: tuple[int, int], rows: slice, cols: slice, value: int = 1, into: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(shape, np.int32) if into is None else into
    out[rows, cols] = value
    return out


EMPTY = np.zeros((10, 10), np.int32)
NO_TYPES = np.array([], np.int64)


# ---- against MONAI -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_binary_pq_counts_match_monai(seed: int) -> None:
    true, _, pred, _ = _random_case(np.random.default_rng(seed))
    ours = panoptic_quality(true, pred)
    tp, fp, fn, iou_sum = compute_panoptic_quality(torch.as_tensor(pred), torch.as_tensor(true),
                                                   output_confusion_matrix=True).tolist()
    assert (ours.tp, ours.fp, ours.fn) == (tp, fp, fn)
    assert ours.tp > 0 and ours.fp + ours.fn > 0  # the random case exercises pairs and errors
    assert ours.iou_sum == pytest.approx(iou_sum, rel=_monai_rtol(ours.tp))
    monai_pq = compute_panoptic_quality(torch.as_tensor(pred), torch.as_tensor(true), metric_name="pq").item()
    assert ours.pq == pytest.approx(monai_pq, rel=_monai_rtol(ours.tp))


def test_per_image_class_pq_matches_monai_reduction_none() -> None:
    rng = np.random.default_rng(11)
    cases = [_random_case(rng) for _ in range(5)]
    metric = PanopticQualityMetric(num_classes=NUM_CLASSES - 1, metric_name="pq", reduction="none")
    metric(*_monai_batch(cases))
    monai = metric.aggregate().numpy()  # (B, classes): per image, per class
    compared = 0
    for b, case in enumerate(cases):
        ours = mpq_plus([case], NUM_CLASSES)  # one image: PQ_c of that image
        for c in range(1, NUM_CLASSES):
            counts = ours.counts[c]
            assert ours.per_class[c] == pytest.approx(monai[b, c - 1], rel=_monai_rtol(counts.tp), abs=1e-12)
            compared += not counts.empty
    assert compared >= 10


def test_mpq_plus_matches_monai_pooled_counts() -> None:
    rng = np.random.default_rng(3)
    cases = [_random_case(rng) for _ in range(6)]
    counts_metric = PanopticQualityMetric(num_classes=NUM_CLASSES - 1, reduction="sum_batch",
                                          return_confusion_matrix=True)
    pq_metric = PanopticQualityMetric(num_classes=NUM_CLASSES - 1, metric_name="pq", reduction="sum_batch")
    batch = _monai_batch(cases)
    counts_metric(*batch)
    pq_metric(*batch)
    monai_counts, monai_pq = counts_metric.aggregate().numpy(), pq_metric.aggregate().numpy()
    ours = mpq_plus(cases, NUM_CLASSES)
    for c in range(1, NUM_CLASSES):
        k = ours.counts[c]
        assert (k.tp, k.fp, k.fn) == tuple(monai_counts[c - 1, :3].astype(int))
        assert ours.per_class[c] == pytest.approx(monai_pq[c - 1], rel=_monai_rtol(k.tp))
    assert ours.mpq_plus == pytest.approx(float(np.mean(monai_pq)), rel=_monai_rtol(max(k.tp for k in ours.counts.values())))


# ---- PQ: matching ------------------------------------------------------------------------------------------------


def test_below_half_the_assignment_runs_over_all_overlapping_pairs() -> None:
    # A worked example. IoU: t1-p1 1/4, t2-p1 2/6, t2-p2 1/4; t3 overlaps nothing.
    true, pred = np.array([[1, 0, 2, 2, 2, 2, 3]]), np.array([[1, 1, 1, 1, 2, 0, 0]])
    # hover_net get_fast_pq, `else` branch: linear_sum_assignment(-pairwise_iou) over the whole IoU matrix picks
    # t1-p1 + t2-p2 (total 1/2 > 1/3), then `paired_iou > match_iou` drops both. Released: TP 0, FP 2, FN 3, PQ 0.
    released = panoptic_quality(true, pred, match_iou=0.3)
    assert released == PQCounts(0, 2, 3, 0.0) and released.pq == 0.0
    # histosynth's alternative assigns among the pairs above the threshold only: t2-p1, PQ (1/3) / (1 + 1/2 + 1)
    alternative = panoptic_quality(true, pred, match_iou=0.3, assignment="above-threshold")
    assert (alternative.tp, alternative.fp, alternative.fn) == (1, 1, 2)
    assert alternative.pq == pytest.approx(2 / 15, rel=1e-15)  # 0.133
    with pytest.raises(InputError, match="assignment must be one of"):
        panoptic_quality(true, pred, 0.3, assignment="greedy")  # type: ignore[arg-type]


def test_low_threshold_keeps_the_largest_iou_of_competing_predictions() -> None:
    true = _box((10, 10), slice(0, 10), slice(0, 2))  # 20 px
    pred = _box((10, 10), slice(0, 8), slice(0, 1), 1)  # 8 px inside: IoU 0.4
    pred = _box((10, 10), slice(0, 7), slice(1, 2), 2, pred)  # 7 px inside: IoU 0.35
    # get_fast_pq at 0.5: `pairwise_iou > match_iou` leaves nothing; at 0.3 the Hungarian takes the 0.4 pair.
    assert panoptic_quality(true, pred).tp == 0
    low = panoptic_quality(true, pred, match_iou=0.3)
    assert (low.tp, low.fp, low.fn) == (1, 1, 0) and low.iou_sum == pytest.approx(0.4, rel=1e-15)


def test_touching_nuclei() -> None:
    # get_fast_pq (match_iou 0.5): pairs need IoU strictly above 0.5.
    true = _box((4, 8), slice(0, 4), slice(4, 8), 2, _box((4, 8), slice(0, 4), slice(0, 4), 1))
    assert panoptic_quality(true, true).pq == 1.0  # released: 1 / (1 + 1e-6)
    merged = _box((4, 8), slice(0, 4), slice(0, 8), 7)  # one prediction over both: IoU 16/32 = 0.5 each, no pair
    assert panoptic_quality(true, merged) == PQCounts(0, 1, 2, 0.0)  # released: TP 0, FP 1, FN 2, PQ 0
    shifted = _box((4, 8), slice(0, 4), slice(5, 8), 2, _box((4, 8), slice(0, 4), slice(0, 5), 1))
    pq = panoptic_quality(true, shifted)  # boundary moved one column: IoU 16/20 and 12/16
    assert (pq.tp, pq.fp, pq.fn) == (2, 0, 0)
    # released: SQ 1.55 / (2 + 1e-6), PQ the same (DQ 1)
    assert pq.sq == pytest.approx((0.8 + 0.75) / 2, rel=1e-15) and pq.pq == pytest.approx(0.775, rel=1e-15)
    assert pq.pq == pytest.approx(1.55 / (2 + 1e-6), rel=RELEASED_EPS_RTOL)


def test_iou_just_above_and_below_half() -> None:
    true = _box((10, 20), slice(0, 10), slice(0, 10))  # 100 px
    half = _box((10, 20), slice(0, 10), slice(0, 5))  # inside: IoU 50/100 = 0.5 exactly
    assert panoptic_quality(true, half).tp == 0  # get_fast_pq: `pairwise_iou > match_iou`
    above = half.copy()
    above[0, 5] = 1  # IoU 51/100
    assert panoptic_quality(true, above) == PQCounts(1, 0, 0, 0.51)
    grown = true.copy()
    grown[:, 10:20] = 1  # IoU 100/200 = 0.5: no pair
    assert panoptic_quality(true, grown).tp == 0
    grown[0, 19] = 0  # IoU 100/199
    assert panoptic_quality(true, grown).iou_sum == pytest.approx(100 / 199, rel=1e-15)


def test_one_false_positive_and_one_false_negative() -> None:
    true = _box((10, 10), slice(0, 3), slice(0, 3))
    pred = _box((10, 10), slice(6, 9), slice(6, 9), 5, true.copy())
    fp = panoptic_quality(true, pred)  # get_fast_pq: DQ 1 / (1 + 0.5), SQ 1 / (1 + 1e-6)
    assert fp == PQCounts(1, 1, 0, 1.0) and fp.dq == pytest.approx(2 / 3, rel=1e-15) and fp.sq == 1.0
    fn = panoptic_quality(pred, true)
    assert fn == PQCounts(1, 0, 1, 1.0) and fn.pq == pytest.approx(2 / 3, rel=1e-15)


# ---- PQ: empty images and the dataset aggregation ---------------------------------------------------------------


def test_empty_true_and_empty_prediction_score_zero() -> None:
    # CoNIC get_pq: dq = 0 / ((0 + 0) + 1e-6) = 0, sq = 0 / (0 + 1e-6) = 0, PQ 0 (worked example 2).
    # hover_net get_fast_pq divides 0 by 0 here (ZeroDivisionError).
    both = panoptic_quality(EMPTY, EMPTY)
    assert both.empty and (both.dq, both.sq, both.pq) == (0.0, 0.0, 0.0)
    one = _box((10, 10), slice(2, 5), slice(2, 5))
    assert panoptic_quality(EMPTY, one) == PQCounts(0, 1, 0, 0.0) and panoptic_quality(EMPTY, one).pq == 0.0
    assert panoptic_quality(one, EMPTY).pq == 0.0


def test_a_model_that_predicts_nothing_scores_zero() -> None:
    nucleus = _box((10, 10), slice(2, 5), slice(2, 5))
    truth = [nucleus] * 6 + [EMPTY] * 2  # a quarter of the patches hold no nucleus
    nothing = dataset_pq([(t, EMPTY) for t in truth])
    assert nothing.pq == 0.0 and nothing.dq == 0.0 and nothing.sq == 0.0  # pooled: TP 0, FN 6
    assert nothing.image_mean()[2] == 0.0  # the empty patches are left out: 6 zeros
    assert nothing.image_mean("zero")[2] == 0.0  # CoNIC compute_stats' binary pq: mean of 8 get_pq values, all 0
    assert nothing.image_mean("one")[2] == 0.25  # the rule that paid for predicting nothing: the empty share
    perfect = dataset_pq([(t, t) for t in truth])
    assert (perfect.pq, perfect.image_mean()[2], perfect.image_mean("zero")[2]) == (1.0, 1.0, 0.75)


def test_pooled_and_per_image_pq_differ_by_weighting() -> None:
    a = PQCounts(tp=1, fp=0, fn=0, iou_sum=0.8)  # PQ 0.8
    b = PQCounts(tp=1, fp=2, fn=2, iou_sum=0.6)  # PQ 0.6 / 3 = 0.2
    scores = DatasetPQ((a, b, PQCounts()))
    # pooled: 1.4 / (2 + 1 + 1), as CoNIC compute_stats sums tp/fp/fn/sum_iou before dq * sq
    assert scores.pq == pytest.approx(0.35, rel=1e-15) and scores.dq == 0.5 and scores.sq == pytest.approx(0.7, rel=1e-15)
    dq, sq, pq = scores.image_mean()  # hover_net run_nuclei_inst_stat: mean of get_fast_pq per image (empty skipped)
    assert (dq, sq, pq) == pytest.approx((2 / 3, 0.7, 0.5), rel=1e-15)
    assert all(math.isnan(v) for v in DatasetPQ((PQCounts(),)).image_mean())
    with pytest.raises(InputError, match="empty must be one of"):
        scores.image_mean("drop")  # type: ignore[arg-type]


# ---- AJI / AJI+ ---------------------------------------------------------------------------------------------------


def test_aji_counts_a_shared_prediction_once_per_nucleus_and_aji_plus_pairs_one_to_one() -> None:
    true = _box((4, 8), slice(0, 4), slice(4, 8), 2, _box((4, 8), slice(0, 4), slice(0, 4), 1))
    merged = _box((4, 8), slice(0, 4), slice(0, 8), 7)
    # get_fast_aji: both true nuclei take the 32 px prediction (IoU 0.5 each): inter 16 + 16, union 32 + 32
    assert aji(true, merged) == 0.5
    # get_fast_aji_plus: one pair (inter 16, union 32), the other true nucleus (16 px) joins the union: 16 / 48
    assert aji(true, merged, plus=True) == pytest.approx(1 / 3, rel=1e-15)
    assert aji(true, true) == 1.0 and aji(true, true, plus=True) == 1.0
    assert aji(true, np.zeros_like(true)) == 0.0  # released: 0 / (16 + 16)
    assert math.isnan(aji(EMPTY, EMPTY))  # released: 0.0 / 0.0 (numpy) is nan


def test_aji_breaks_an_iou_tie_towards_the_larger_union() -> None:
    true = _box((2, 8), slice(0, 1), slice(0, 6))  # 6 px
    pred = _box((2, 8), slice(0, 1), slice(0, 2), 1)  # inside: inter 2, union 6, IoU 1/3
    pred = _box((2, 8), slice(0, 2), slice(2, 5), 2, pred)  # inter 3, union 9, IoU 1/3
    # get_fast_aji: argmax of inter / (union + 1e-6) is prediction 2 (3 / 9.000001 > 2 / 6.000001); the unpaired
    # prediction 1 (2 px) joins the union: 3 / (9 + 2)
    assert aji(true, pred) == pytest.approx(3 / 11, rel=1e-15)


# ---- CoNIC mPQ+ ----------------------------------------------------------------------------------------------------


def _typed_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    inst = _box((10, 10), slice(6, 9), slice(6, 9), 2, _box((10, 10), slice(0, 3), slice(0, 3), 1))
    return inst, np.array([1, 2]), inst, np.array([1, 3])


def test_mpq_plus_scores_a_class_absent_everywhere_zero() -> None:
    # Worked example 3: classes 1 and 2 matched perfectly, class 3 on neither side. CoNIC compute_stats:
    # per class dq = tp / (tp + fp/2 + fn/2 + 1e-6), sq = sum_iou / (tp + 1e-6); class 3: 0 / 1e-6 = 0;
    # np.mean over the three classes.
    inst, types, _, _ = _typed_case()
    scores = mpq_plus([(inst, types, inst, types)], NUM_CLASSES)
    assert scores.per_class == {1: 1.0, 2: 1.0, 3: 0.0}
    released = 2 / 3 / (1 + 1e-6) ** 2  # 0.6666653
    assert scores.mpq_plus == pytest.approx(released, rel=RELEASED_EPS_RTOL) and scores.mpq_plus == pytest.approx(2 / 3)
    assert scores.mpq_plus_present == 1.0  # histosynth's alternative leaves class 3 out
    assert mpq_plus([(EMPTY, NO_TYPES, EMPTY, NO_TYPES)], NUM_CLASSES).mpq_plus == 0.0  # every class 0 / 1e-6


def test_mpq_plus_counts_a_class_only_predicted() -> None:
    true, true_types, pred, pred_types = _typed_case()
    scores = mpq_plus([(true, true_types, pred, pred_types)], NUM_CLASSES)
    # get_multi_pq_info per class: class 1 TP 1; class 2 FN 1; class 3 FP 1 -> PQ_c 1, 0, 0; mean 1/3
    assert scores.per_class == {1: 1.0, 2: 0.0, 3: 0.0}
    assert scores.mpq_plus == pytest.approx(1 / 3, rel=1e-15)


# ---- PanNuke mPQ / bPQ ---------------------------------------------------------------------------------------------


def test_pannuke_skips_a_class_only_predicted() -> None:
    # Worked example 4. run.py: `if len(np.unique(true_tmp)) == 1: nan` for a class absent from the ground
    # truth, then np.nanmean over classes: class 1 (PQ 1) alone, so mPQ 1.0 (histosynth before: 0.5).
    inst = _box((10, 10), slice(0, 3), slice(0, 3))
    pred = _box((10, 10), slice(6, 9), slice(6, 9), 2, inst.copy())
    scores = pannuke_mpq_bpq([(inst, np.array([1]), pred, np.array([1, 2]))], ["breast"], NUM_CLASSES)
    assert scores.mpq == 1.0
    # bPQ: binarize merges both predictions: TP 1, FP 1, PQ 1 / 1.5 (get_fast_pq: dq 2/3, sq 1 / (1 + 1e-6))
    assert scores.bpq == pytest.approx(2 / 3, rel=1e-15)


def test_pannuke_binarize_does_not_see_unclassified_nuclei() -> None:
    true = _box((10, 10), slice(6, 9), slice(6, 9), 2, _box((10, 10), slice(0, 3), slice(0, 3), 1))
    pred = _box((10, 10), slice(0, 3), slice(0, 3))  # nucleus 2 (type 0) is missed
    case = (true, np.array([1, 0]), pred, np.array([1]))
    # run.py's binarize(x[..., :5], 5) stacks the class channels only: the type-0 nucleus is in none of them
    assert pannuke_mpq_bpq([case], ["a"], NUM_CLASSES).bpq == 1.0
    assert panoptic_quality(true, pred).pq == pytest.approx(2 / 3, rel=1e-15)  # the binary PQ counts it (FN)
    only_unclassified = (true, np.array([0, 0]), EMPTY, NO_TYPES)
    skipped = pannuke_mpq_bpq([only_unclassified], ["a"], NUM_CLASSES)  # no class channel holds a nucleus
    assert math.isnan(skipped.mpq) and math.isnan(skipped.bpq)


def test_pannuke_averages_per_image_then_per_tissue() -> None:
    perfect = _typed_case()[:2] * 2  # classes 1 and 2, both matched: mPQ_i 1, bPQ_i 1
    nothing = (EMPTY, NO_TYPES, EMPTY, NO_TYPES)  # no ground truth: skipped for both (nan, then np.nanmean)
    spurious = (EMPTY, NO_TYPES, _box((10, 10), slice(0, 3), slice(0, 3)), np.array([2]))  # skipped too
    missed = (_typed_case()[0], np.array([1, 2]), _typed_case()[0], np.array([1, 0]))  # class 2 missed
    # missed: class 1 PQ 1, class 2 PQ 0 -> mPQ_i 0.5; binarize: true 2 nuclei, pred 1 -> bPQ_i 1 / 1.5
    images = [perfect, nothing, perfect, spurious, missed, perfect]
    scores = pannuke_mpq_bpq(images, ["a", "a", "a", "b", "b", "c"], NUM_CLASSES)
    assert scores.per_tissue["a"] == (1.0, 1.0)
    assert scores.per_tissue["b"] == pytest.approx((0.5, 2 / 3), rel=1e-15)
    assert scores.mpq == pytest.approx((1 + 0.5 + 1) / 3, rel=1e-15)  # tissues weigh equally
    assert scores.bpq == pytest.approx((1 + 2 / 3 + 1) / 3, rel=1e-15)
    with pytest.raises(InputError, match="2 tissue types for 6 images"):
        pannuke_mpq_bpq(images, ["a", "b"], NUM_CLASSES)


# ---- one pass ------------------------------------------------------------------------------------------------------


def test_one_pass_equals_the_separate_functions() -> None:
    rng = np.random.default_rng(5)
    cases = [_random_case(rng) for _ in range(4)] + [(EMPTY, NO_TYPES, EMPTY, NO_TYPES)]
    tissues = ["a", "b", "a", "b", "a"]
    together = score_instances(cases, NUM_CLASSES, tissues)
    assert together.pq == dataset_pq([(t, p) for t, _, p, _ in cases])
    assert together.mpq == mpq_plus(cases, NUM_CLASSES)
    pannuke = pannuke_mpq_bpq(cases, tissues, NUM_CLASSES)
    assert (together.pannuke.mpq, together.pannuke.bpq) == (pannuke.mpq, pannuke.bpq)
    per_image = [aji(t, p) for t, _, p, _ in cases]
    assert math.isnan(per_image[-1]) and together.aji == float(np.mean(per_image[:-1]))
    assert together.aji_plus == float(np.mean([aji(t, p, plus=True) for t, _, p, _ in cases[:-1]]))
    assert image_scores(cases[0], NUM_CLASSES).binary == panoptic_quality(cases[0][0], cases[0][2])


def test_pooled_metrics_do_not_depend_on_image_order() -> None:
    rng = np.random.default_rng(7)
    cases = [_random_case(rng) for _ in range(6)]
    tissues = ["a", "b", "a", "c", "b", "a"]
    order = rng.permutation(len(cases))
    shuffled = [cases[i] for i in order]
    n_terms = sum(panoptic_quality(t, p).tp for t, _, p, _ in cases)
    rel = n_terms * 2.0 ** -52  # float64 IoU sums in another order: each addition rounds by <= 2^-53
    a, b = mpq_plus(cases, NUM_CLASSES), mpq_plus(shuffled, NUM_CLASSES)
    assert all((a.counts[c].tp, a.counts[c].fp, a.counts[c].fn) == (b.counts[c].tp, b.counts[c].fp, b.counts[c].fn)
               for c in a.counts)
    assert a.mpq_plus == pytest.approx(b.mpq_plus, rel=rel)
    p, q = pannuke_mpq_bpq(cases, tissues, NUM_CLASSES), pannuke_mpq_bpq(shuffled, [tissues[i] for i in order],
                                                                         NUM_CLASSES)
    assert (p.mpq, p.bpq) == pytest.approx((q.mpq, q.bpq), rel=rel)
    assert dataset_pq([(t, p_) for t, _, p_, _ in cases]).pq == pytest.approx(
        dataset_pq([(t, p_) for t, _, p_, _ in shuffled]).pq, rel=rel)


def test_bad_input_is_a_clear_error() -> None:
    true, true_types, pred, pred_types = _typed_case()
    with pytest.raises(InputError, match="image 0: true .* and predicted .* differ in shape"):
        mpq_plus([(true, true_types, pred[:5], pred_types)], NUM_CLASSES)
    with pytest.raises(InputError, match="instance id 2 has no type"):
        mpq_plus([(true, true_types[:1], pred, pred_types)], NUM_CLASSES)
    with pytest.raises(InputError, match=r"type ids must be 0\.\.3"):
        mpq_plus([(true, true_types, pred, np.array([1, 4]))], NUM_CLASSES)
    with pytest.raises(InputError, match="2-D integer"):
        panoptic_quality(true.astype(float), pred)
    with pytest.raises(InputError, match="no images"):
        dataset_pq([])


def test_results_serialize_as_strict_json() -> None:
    # BenchmarkRun.save writes json with allow_nan=False: undefined scores must become null, not NaN
    true, true_types, pred, _ = _typed_case()
    empty = (EMPTY, NO_TYPES, EMPTY, NO_TYPES)
    pannuke = pannuke_mpq_bpq([empty], ["a"], NUM_CLASSES)
    nothing = dataset_pq([(EMPTY, EMPTY)])
    for result in (mpq_plus([empty], NUM_CLASSES), pannuke, nothing, panoptic_quality(true, pred)):
        json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert pannuke.to_dict()["mpq"] is None and nothing.to_dict()["pq_image_mean"] is None
