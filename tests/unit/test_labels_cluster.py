"""k-means, k-center greedy, weighted Ward, ARI/purity and the granularity curriculum."""

import numpy as np
import pytest
from numerics import gamma
from scipy.cluster.hierarchy import fcluster, linkage

from histosynth.labels.cluster import (
    adjusted_rand_index,
    cut_linkage,
    kcenter_greedy,
    kmeans,
    purity,
    ward_linkage,
)
from histosynth.labels.curriculum import curriculum_k, curriculum_stages


def blobs(n_per: int = 40, centers=((0, 0), (10, 0), (0, 10), (10, 10)), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 0.5, size=(n_per, 2)) for c in centers])
    return x, np.repeat(np.arange(len(centers)), n_per)


def ward_gap(ref: np.ndarray) -> float:
    """Two Ward implementations' height gap: each Lance-Williams update is a 3-term weighted sum of squared
    distances <= the largest (a few roundings, γ_6 of it), chained over at most n - 1 merges, then a square root,
    per side (Higham §3.1)."""
    return 2 * gamma(6 * (len(ref) + 1)) * float(ref[:, 2].max())


def test_ward_matches_scipy_with_unit_weights():
    x = np.random.default_rng(1).normal(size=(40, 6))
    ours, ref = ward_linkage(x), linkage(x, "ward")
    np.testing.assert_allclose(ours[:, 2], ref[:, 2], rtol=0, atol=ward_gap(ref))
    assert np.array_equal(ours[:, :2], ref[:, :2]) and np.array_equal(ours[:, 3], ref[:, 3])
    for k in (2, 5, 13):
        assert adjusted_rand_index(cut_linkage(ours, 40, k), fcluster(ref, k, "maxclust")) == 1.0


def test_weighted_ward_equals_ward_of_replicated_points():
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(9, 3)), np.array([1, 3, 2, 1, 4, 1, 2, 5, 1])
    ours = ward_linkage(x, w)
    ref = linkage(np.repeat(x, w, axis=0), "ward")  # duplicates merge first at height 0
    np.testing.assert_allclose(ours[:, 2], ref[-8:, 2], rtol=0, atol=ward_gap(ref))


def test_kmeans_recovers_blobs_and_is_deterministic():
    x, truth = blobs()
    c1, l1, i1 = kmeans(x, 4, seed=3)
    c2, l2, i2 = kmeans(x, 4, seed=3)
    assert adjusted_rand_index(l1, truth) == 1.0
    assert np.array_equal(l1, l2) and np.array_equal(c1, c2) and i1 == i2
    with pytest.raises(ValueError, match="distinct"):
        kmeans(np.zeros((10, 2)), 2)


def test_kcenter_greedy_reaches_outliers_and_skips_duplicates():
    x, _ = blobs(n_per=50)
    x = np.concatenate([x, [[40.0, 40.0]]])
    picked = kcenter_greedy(x, 5)
    assert 200 in picked[:2]  # the outlier is the first farthest point
    assert len({tuple(np.round(x[i] / 10)) for i in picked}) == 5  # one per blob + the outlier
    dup = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert sorted(kcenter_greedy(dup, 10).tolist()) in ([0, 2], [0, 3], [1, 2], [1, 3])


def test_ari_and_purity_reference_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    # scikit-learn's doc example; ARI is ~10 float64 operations on exact integer counts: γ_16 (Higham §3.1)
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(0.5714285714285715, rel=gamma(16))
    rng = np.random.default_rng(0)
    assert abs(adjusted_rand_index(rng.integers(0, 5, 5000), rng.integers(0, 5, 5000))) < 0.02
    assert purity([0, 0, 1, 1, 1], [5, 5, 6, 6, 5]) == 0.8  # exact: 4 / 5, one correctly rounded division


def test_curriculum_stages_are_equal_and_coarse_first():
    stages = [curriculum_k(s, 1000, schedule="stages") for s in (0, 199, 200, 400, 799, 800, 999, 5000)]
    assert stages == [5, 5, 10, 20, 50, 100, 100, 100]
    assert curriculum_stages(1000, schedule="stages") == [(0, 5), (200, 10), (400, 20), (600, 50), (800, 100)]
    assert curriculum_stages(100, ks=(20, 5), warmup=0.5, schedule="stages") == [(0, 5), (25, 20)]


def test_curriculum_linear_follows_htd_formula():
    # k'(t) = 5 + 95 t / T, snapped down to an available k
    assert curriculum_k(0, 1000, schedule="linear") == 5
    assert curriculum_k(52, 1000, schedule="linear") == 5 and curriculum_k(53, 1000, schedule="linear") == 10
    assert curriculum_k(499, 1000, warmup=0.5, schedule="linear") == 50
    assert curriculum_k(500, 1000, warmup=0.5, schedule="linear") == 100
    assert curriculum_k(53, 1000) == 10 and curriculum_stages(1000)[:2] == [(0, 5), (53, 10)]  # linear is the default
    with pytest.raises(ValueError, match="schedule"):
        curriculum_k(0, 10, schedule="cosine")
