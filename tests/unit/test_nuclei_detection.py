"""Detection and type F1 on hand-built centroids, each with the value HoVer-Net's released compute_stats.py
(run_nuclei_type_stat with metrics/stats_utils.py pair_coordinates) gives, worked out next to the case."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from histosynth.benchmark.downstream.nuclei_detection import detection_f1, pair_centroids, pairing_radius_px
from histosynth.benchmark.downstream.nuclei_metrics import MPP_40X
from histosynth.errors import InputError

NUM_CLASSES = 4
ONES = np.array([1, 1])


def test_pairing_minimizes_total_distance_then_drops_far_pairs() -> None:
    # A two-nucleus example. Distances: A-a 12, B-b 12 (both inside 12 px), B-a 1, A-b sqrt(313) = 17.7.
    true = np.array([[0, 0], [12, 1]], float)  # A, B
    pred = np.array([[12, 0], [12, 13]], float)  # a, b
    # pair_coordinates: linear_sum_assignment(pair_distance) takes A-b + B-a (18.7 < 24), then `pair_cost <= radius`
    # keeps B-a only: TP 1, FP 1, FN 1, F1_d = 2 / (2 + 1 + 1) = 0.5
    released = detection_f1(true, ONES, pred, ONES, 12, NUM_CLASSES)
    assert (released.tp, released.fp, released.fn) == (1, 1, 1) and released.f1 == 0.5
    alternative = detection_f1(true, ONES, pred, ONES, 12, NUM_CLASSES, pairing="max-pairs")
    assert (alternative.tp, alternative.f1) == (2, 1.0)  # histosynth's most-pairs pairing keeps A-a and B-b


def test_a_far_assignment_can_cost_every_pair() -> None:
    # Least total distance pairs 0-13 and 24-37 (13 px each, beyond 12): released F1_d 0. Most pairs: 24-13 (11 px).
    true, pred = np.array([[0, 0], [24, 0]], float), np.array([[13, 0], [37, 0]], float)
    assert pair_centroids(true, pred, 12).shape == (0, 2)
    assert pair_centroids(true, pred, 12, "max-pairs").tolist() == [[1, 0]]
    assert detection_f1(true, ONES, pred, ONES, 12, NUM_CLASSES).f1 == 0.0
    with pytest.raises(InputError, match="pairing must be one of"):
        pair_centroids(true, pred, 12, "greedy")  # type: ignore[arg-type]


def test_detection_pairs_within_radius_inclusive() -> None:
    true = np.array([[0, 0], [20, 0], [50, 50]], np.float32)
    pred = np.array([[3, 4], [20, 11], [100, 100]], np.float32)
    classes = np.array([1, 1, 1])
    # pair_coordinates keeps `pair_cost <= radius`: distances 5 and 11 pair at 12 and at 11, not 11 at 10
    at12 = detection_f1(true, classes, pred, classes, radius_px=12, num_classes=NUM_CLASSES)
    assert (at12.tp, at12.fp, at12.fn) == (2, 1, 1) and at12.f1 == pytest.approx(2 / 3, rel=1e-15)
    assert detection_f1(true, classes, pred, classes, 11, NUM_CLASSES).tp == 2
    at10 = detection_f1(true, classes, pred, classes, 10, NUM_CLASSES)
    assert (at10.tp, at10.fp, at10.fn) == (1, 2, 2) and at10.f1 == pytest.approx(1 / 3, rel=1e-15)


def test_detection_pairs_only_within_an_image() -> None:
    here, none = np.zeros((1, 2)), np.zeros((0, 2))
    scores = detection_f1([here, none], [np.array([1]), np.array([], int)], [none, here],
                          [np.array([], int), np.array([1])], 12, NUM_CLASSES)
    assert (scores.tp, scores.fp, scores.fn) == (0, 1, 1)
    # No nucleus anywhere: F1_d is 0 / 0 (the released script would pair its two (0, 0) placeholders instead)
    empty = detection_f1(none, np.array([], int), none, np.array([], int), 12, NUM_CLASSES)
    assert math.isnan(empty.f1) and math.isnan(empty.type_accuracy)
    assert all(map(math.isnan, empty.per_class_f1.values()))


def test_per_class_f1_published_without_tn_and_the_papers_with_tn() -> None:
    # pairs (true, pred): (1,1) (1,2) (2,2) (3,3) (3,1); one unpaired true of type 1; two unpaired preds of type 2
    true_types, pred_types = [1, 1, 2, 3, 3, 1], [1, 2, 2, 3, 1, 2, 2]
    true_xy = np.array([[100 * i, 0] for i in range(5)] + [[0, 500]], float)
    pred_xy = np.array([[100 * i, 0] for i in range(5)] + [[500, 500], [900, 900]], float)
    s = detection_f1(true_xy, np.array(true_types), pred_xy, np.array(pred_types), 12, NUM_CLASSES)
    # run_nuclei_type_stat: f1_d = 2 tp_d / (2 tp_d + fp_d + fn_d) = 10 / 13; acc_type = 3 / 5
    assert (s.tp, s.fp, s.fn) == (5, 2, 1) and s.f1 == pytest.approx(10 / 13, rel=1e-15)
    assert s.type_accuracy == pytest.approx(3 / 5, rel=1e-15)
    c1 = s.per_class_counts[1]
    assert (c1.tp, c1.tn, c1.fp, c1.fn, c1.fp_d, c1.fn_d) == (1, 2, 1, 1, 0, 1)
    # _f1_type keeps `(paired_true == type_id) | (paired_pred == type_id)`, so tn_dt = 0:
    # 2 TP / (2 TP + 2 FP_c + 2 FN_c + FP_d + FN_d); class 1: 2 / (2 + 2 + 2 + 0 + 1)
    assert s.per_class_f1 == pytest.approx({1: 2 / 7, 2: 2 / 6, 3: 2 / 4}, rel=1e-15)
    # the paper's formula counts TN_c: class 1: 2 (1 + 2) / (6 + 2 + 2 + 0 + 1)
    assert s.per_class_f1_with_tn == pytest.approx({1: 6 / 11, 2: 8 / 12, 3: 8 / 10}, rel=1e-15)


def test_the_tn_term_can_move_a_class_far() -> None:
    # 9 correctly typed pairs of class 2 and one class-1 nucleus predicted as class 3: for class 1, TN = 9 pairs
    true_types = np.array([2] * 9 + [1])
    pred_types = np.array([2] * 9 + [3])
    xy = np.array([[20 * i, 0] for i in range(10)], float)
    s = detection_f1(xy, true_types, xy, pred_types, 12, NUM_CLASSES)
    assert s.per_class_f1[1] == 0.0  # released: 0 / (0 + 2 FN_c) = 0
    assert s.per_class_f1_with_tn[1] == pytest.approx(18 / 20, rel=1e-15)  # 2 * 9 / (2 * 9 + 2 FN_c)
    assert s.per_class_f1[3] == 0.0 and s.per_class_f1_with_tn[3] == pytest.approx(18 / 20, rel=1e-15)


def test_pairing_radius_scales_with_mpp() -> None:
    assert pairing_radius_px(MPP_40X) == 12.0
    assert pairing_radius_px(0.5) == 6.0  # 20x: half the pixels for the same 3 um
    with pytest.raises(InputError):
        pairing_radius_px(0.0)


def test_bad_input_and_strict_json() -> None:
    with pytest.raises(InputError, match="2 classes for 3 centroids"):
        detection_f1(np.zeros((3, 2)), np.array([1, 1]), np.zeros((0, 2)), np.array([], int), 12, NUM_CLASSES)
    none = np.zeros((0, 2))
    empty = detection_f1(none, np.array([], int), none, np.array([], int), 12, NUM_CLASSES)
    data = json.loads(json.dumps(empty.to_dict(), allow_nan=False))  # BenchmarkRun.save refuses NaN
    assert data["f1_d"] is None and data["pairing"] == "min-total-distance"
