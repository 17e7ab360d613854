"""Nuclei instance metrics against MONAI (an independent PQ implementation) and hand-built maps with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from monai.metrics import PanopticQualityMetric, compute_panoptic_quality

from histosynth.benchmark.downstream.nuclei_metrics import (
    MPP_40X,
    PQCounts,
    detection_f1,
    mean_pq,
    mpq_plus,
    pairing_radius_px,
    pannuke_mpq_bpq,
    panoptic_quality,
)
from histosynth.errors import InputError

NUM_CLASSES = 4  # background + classes 1..3, as ClassSchema.num_classes counts them


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
            if counts.empty:  # ours: NaN and left out; MONAI's smoothing gives 0 / 1e-6 = 0
                assert math.isnan(ours.per_class[c]) and monai[b, c - 1] == 0
            else:
                assert ours.per_class[c] == pytest.approx(monai[b, c - 1], rel=_monai_rtol(counts.tp), abs=1e-12)
                compared += 1
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
    # every class occurs here, so mPQ+ is the plain mean of the class PQs (CoNIC's definition)
    assert ours.mpq_plus == pytest.approx(float(np.mean(monai_pq)), rel=_monai_rtol(max(k.tp for k in ours.counts.values())))


def _box(shape: tuple[int, int], rows: slice, cols: slice, value: int = 1, into: np.ndarray | None = None) -> np.ndarray:
    out = np.zeros(shape, np.int32) if into is None else into
    out[rows, cols] = value
    return out


def test_empty_maps() -> None:
    empty = np.zeros((8, 8), np.int32)
    both = panoptic_quality(empty, empty)
    assert (both.dq, both.sq, both.pq) == (1.0, 1.0, 1.0)  # nothing on either side: 1 by definition
    assert mean_pq([(empty, empty), (empty, empty)]).pq == 1.0
    one = _box((8, 8), slice(2, 5), slice(2, 5))
    assert panoptic_quality(empty, one) == PQCounts(0, 1, 0, 0.0)
    assert panoptic_quality(empty, one).pq == 0.0 and panoptic_quality(one, empty).pq == 0.0
    assert mean_pq([(empty, empty), (one, empty)]).pq == 0.5


def test_touching_nuclei() -> None:
    true = _box((4, 8), slice(0, 4), slice(4, 8), 2, _box((4, 8), slice(0, 4), slice(0, 4), 1))
    assert panoptic_quality(true, true).pq == 1.0
    merged = _box((4, 8), slice(0, 4), slice(0, 8), 7)  # one prediction over both: IoU 16/32 = 0.5 each, no pair
    assert panoptic_quality(true, merged) == PQCounts(0, 1, 2, 0.0)
    shifted = _box((4, 8), slice(0, 4), slice(5, 8), 2, _box((4, 8), slice(0, 4), slice(0, 5), 1))
    pq = panoptic_quality(true, shifted)  # boundary moved one column: IoU 16/20 and 12/16
    assert (pq.tp, pq.fp, pq.fn) == (2, 0, 0)
    assert pq.sq == pytest.approx((0.8 + 0.75) / 2, rel=1e-15) and pq.pq == pytest.approx(0.775, rel=1e-15)


def test_iou_just_above_and_below_half() -> None:
    true = _box((10, 20), slice(0, 10), slice(0, 10))  # 100 px
    half = _box((10, 20), slice(0, 10), slice(0, 5))  # inside: IoU 50/100 = 0.5 exactly
    assert panoptic_quality(true, half).tp == 0
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
    fp = panoptic_quality(true, pred)
    assert fp == PQCounts(1, 1, 0, 1.0) and fp.dq == pytest.approx(2 / 3, rel=1e-15) and fp.sq == 1.0
    fn = panoptic_quality(pred, true)
    assert fn == PQCounts(1, 0, 1, 1.0) and fn.pq == pytest.approx(2 / 3, rel=1e-15)


def test_low_threshold_uses_unique_assignment() -> None:
    true = _box((10, 10), slice(0, 10), slice(0, 2))  # 20 px
    pred = _box((10, 10), slice(0, 8), slice(0, 1), 1)  # 8 px inside: IoU 0.4
    pred = _box((10, 10), slice(0, 7), slice(1, 2), 2, pred)  # 7 px inside: IoU 0.35
    assert panoptic_quality(true, pred).tp == 0
    low = panoptic_quality(true, pred, match_iou=0.3)
    assert (low.tp, low.fp, low.fn) == (1, 1, 0) and low.iou_sum == pytest.approx(0.4, rel=1e-15)


def _typed_case() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    inst = _box((10, 10), slice(6, 9), slice(6, 9), 2, _box((10, 10), slice(0, 3), slice(0, 3), 1))
    return inst, np.array([1, 2]), inst, np.array([1, 3])


def test_class_missing_from_ground_truth() -> None:
    true, true_types, pred, pred_types = _typed_case()
    scores = mpq_plus([(true, true_types, pred, pred_types)], NUM_CLASSES)
    # class 1 matched; class 2 only in truth (FN); class 3 only predicted (FP): it scores 0 and counts
    assert scores.per_class == {1: 1.0, 2: 0.0, 3: 0.0}
    assert scores.mpq_plus == pytest.approx(1 / 3, rel=1e-15)
    absent = mpq_plus([(true, true_types, pred, true_types)], NUM_CLASSES)  # class 3 on neither side
    assert math.isnan(absent.per_class[3]) and absent.mpq_plus == 1.0
    empty = np.zeros((10, 10), np.int32)
    assert mpq_plus([(empty, np.array([]), empty, np.array([]))], NUM_CLASSES).mpq_plus == 1.0


def test_pannuke_averages_per_image_then_per_tissue() -> None:
    perfect = _typed_case()[:2] * 2
    empty = np.zeros((10, 10), np.int32)
    nothing = (empty, np.array([], np.int64), empty, np.array([], np.int64))
    spurious = (empty, np.array([], np.int64), _box((10, 10), slice(0, 3), slice(0, 3)), np.array([2]))
    mistyped = _typed_case()  # mPQ_i = 1/3 (class 3 predicted only), bPQ_i = 1
    images = [perfect, nothing, perfect, spurious, mistyped]
    scores = pannuke_mpq_bpq(images, ["a", "a", "a", "b", "b"], NUM_CLASSES)
    assert scores.per_tissue["a"] == (1.0, 1.0)
    assert scores.per_tissue["b"] == pytest.approx((1 / 6, 0.5), rel=1e-15)
    assert scores.mpq == pytest.approx(7 / 12, rel=1e-15)  # not the image mean (10/15)
    assert scores.bpq == pytest.approx(0.75, rel=1e-15)
    with pytest.raises(InputError, match="2 tissue types for 5 images"):
        pannuke_mpq_bpq(images, ["a", "b"], NUM_CLASSES)


def test_detection_pairs_within_radius() -> None:
    true = np.array([[0, 0], [20, 0], [50, 50]], np.float32)
    pred = np.array([[3, 4], [20, 11], [100, 100]], np.float32)
    classes = np.array([1, 1, 1])
    at12 = detection_f1(true, classes, pred, classes, radius_px=12, num_classes=NUM_CLASSES)
    assert (at12.tp, at12.fp, at12.fn) == (2, 1, 1) and at12.f1 == pytest.approx(2 / 3, rel=1e-15)
    assert detection_f1(true, classes, pred, classes, 11, NUM_CLASSES).tp == 2  # distance 11: inclusive
    at10 = detection_f1(true, classes, pred, classes, 10, NUM_CLASSES)
    assert (at10.tp, at10.fp, at10.fn) == (1, 2, 2) and at10.f1 == pytest.approx(1 / 3, rel=1e-15)


def test_detection_pairing_maximises_pairs_within_radius() -> None:
    # Least total distance pairs 0-13 and 24-37 (both 13 > 12 px): no pair. The within-radius Hungarian pairs 24-13.
    true, pred = np.array([[0, 0], [24, 0]], float), np.array([[13, 0], [37, 0]], float)
    scores = detection_f1(true, np.array([1, 1]), pred, np.array([1, 1]), 12, NUM_CLASSES)
    assert (scores.tp, scores.fp, scores.fn) == (1, 1, 1)


def test_detection_pairs_only_within_an_image() -> None:
    here, none = np.zeros((1, 2)), np.zeros((0, 2))
    scores = detection_f1([here, none], [np.array([1]), np.array([], int)], [none, here],
                          [np.array([], int), np.array([1])], 12, NUM_CLASSES)
    assert (scores.tp, scores.fp, scores.fn) == (0, 1, 1)
    empty = detection_f1(none, np.array([], int), none, np.array([], int), 12, NUM_CLASSES)
    assert empty.f1 == 1.0 and math.isnan(empty.type_accuracy) and all(map(math.isnan, empty.per_class_f1.values()))


def test_weighted_type_f1_hand_case() -> None:
    # pairs (true, pred): (1,1) (1,2) (2,2) (3,3) (3,1); one unpaired true of type 1; two unpaired preds of type 2
    true_types, pred_types = [1, 1, 2, 3, 3, 1], [1, 2, 2, 3, 1, 2, 2]
    true_xy = np.array([[100 * i, 0] for i in range(5)] + [[0, 500]], float)
    pred_xy = np.array([[100 * i, 0] for i in range(5)] + [[500, 500], [900, 900]], float)
    s = detection_f1(true_xy, np.array(true_types), pred_xy, np.array(pred_types), 12, NUM_CLASSES)
    assert (s.tp, s.fp, s.fn) == (5, 2, 1) and s.f1 == pytest.approx(10 / 13, rel=1e-15)
    assert s.type_accuracy == pytest.approx(3 / 5, rel=1e-15)
    c1 = s.per_class_counts[1]
    assert (c1.tp, c1.tn, c1.fp, c1.fn, c1.fp_d, c1.fn_d) == (1, 2, 1, 1, 0, 1)
    # 2(TP+TN) / (2(TP+TN) + 2 FP_c + 2 FN_c + FP_d + FN_d)
    assert s.per_class_f1 == pytest.approx({1: 6 / 11, 2: 8 / 12, 3: 8 / 10}, rel=1e-15)
    assert s.per_class_f1_without_tn == pytest.approx({1: 2 / 7, 2: 2 / 6, 3: 2 / 4}, rel=1e-15)


def test_pairing_radius_scales_with_mpp() -> None:
    assert pairing_radius_px(MPP_40X) == 12.0
    assert pairing_radius_px(0.5) == 6.0  # 20x: half the pixels for the same 3 um
    with pytest.raises(InputError):
        pairing_radius_px(0.0)


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
    assert mean_pq([(t, p_) for t, _, p_, _ in cases]).pq == pytest.approx(
        mean_pq([(t, p_) for t, _, p_, _ in shuffled]).pq, rel=rel)

    def centroids(case: tuple[np.ndarray, ...], which: int) -> tuple[np.ndarray, np.ndarray]:
        inst, types = case[2 * which], case[2 * which + 1]
        ids = np.unique(inst)[1:]
        return np.array([np.argwhere(inst == i).mean(0)[::-1] for i in ids]).reshape(-1, 2), types[ids - 1]

    def f1_of(seq: list) -> object:
        t = [centroids(c, 0) for c in seq]
        p = [centroids(c, 1) for c in seq]
        return detection_f1([x for x, _ in t], [y for _, y in t], [x for x, _ in p], [y for _, y in p], 6,
                            NUM_CLASSES)

    f, g = f1_of(cases), f1_of(shuffled)
    assert (f.tp, f.fp, f.fn, f.per_class_counts) == (g.tp, g.fp, g.fn, g.per_class_counts)
    assert f.tp > 0 and f.fp + f.fn > 0


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
    with pytest.raises(InputError, match="2 classes for 3 centroids"):
        detection_f1(np.zeros((3, 2)), np.array([1, 1]), np.zeros((0, 2)), np.array([], int), 12, NUM_CLASSES)


def test_results_serialise_as_strict_json() -> None:
    # BenchmarkRun.save writes json with allow_nan=False: undefined scores must become null, not NaN
    true, true_types, pred, _ = _typed_case()
    absent = mpq_plus([(true, true_types, pred, true_types)], NUM_CLASSES)
    none = np.zeros((0, 2))
    empty_f1 = detection_f1(none, np.array([], int), none, np.array([], int), 12, NUM_CLASSES)
    pannuke = pannuke_mpq_bpq([(true, true_types, pred, true_types)], ["a"], NUM_CLASSES)
    for result in (absent, empty_f1, pannuke, mean_pq([(true, pred)]), panoptic_quality(true, pred)):
        json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert absent.to_dict()["per_class_pq"]["3"] is None
