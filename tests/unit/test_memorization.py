"""Memorization ratio d1/d2: planted near-copies are flagged, novel samples are not, chunking changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial.distance
from numerics import gamma, sq_distance_error

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.memorization import memorization_ratios


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.standard_normal((600, 48))
    synthetic = rng.standard_normal((200, 48))
    copies = np.array([5, 17, 42, 99, 150, 151, 198])
    sources = rng.choice(len(train), len(copies), replace=False)
    synthetic[copies] = train[sources] + 0.01 * rng.standard_normal((len(copies), 48))
    synthetic[copies[0]] = train[sources[0]]  # one exact copy
    return train, synthetic, copies


def test_flags_planted_copies_only(planted):
    train, synthetic, copies = planted
    result = memorization_ratios(synthetic, train)
    assert np.array_equal(result.flagged, copies)
    assert result.fraction == len(copies) / len(synthetic)  # exact: the same integers, one correctly rounded division
    assert result.ratios[copies[0]] == 0.0 and result.nearest_distance[copies[0]] == 0.0
    novel = np.setdiff1d(np.arange(len(synthetic)), copies)
    assert result.ratios[novel].min() > 0.5  # random samples sit near 1, far above the 1/3 threshold


def test_random_samples_are_not_flagged():
    rng = np.random.default_rng(1)
    result = memorization_ratios(rng.standard_normal((300, 32)), rng.standard_normal((500, 32)))
    assert len(result.flagged) == 0 and result.fraction == 0.0


def test_matches_brute_force_and_chunking(planted):
    train, synthetic, _ = planted
    dists = scipy.spatial.distance.cdist(synthetic, train)
    order = np.argsort(dists, axis=1)
    d_sorted = np.take_along_axis(dists, order, axis=1)
    expected = d_sorted[:, 0] / d_sorted[:, 1]
    # Both sides take distances directly: differences, a sum of d positive squares and a root, so each is within
    # γ_{d+3} relative (Higham §3.1, no cancellation); a ratio of two such within 2γ per side.
    rel = gamma(train.shape[1] + 3)
    # Exact indices: the expansion-based search is off by sq_distance_error at most, which is far below the gap
    # between each sample's 2nd and 3rd nearest (and the direct distances separate the 1st from the 2nd).
    sq = d_sorted**2
    assert (sq[:, 2] - sq[:, 1]).min() > 2 * sq_distance_error(train, synthetic)
    assert (d_sorted[:, 1] - d_sorted[:, 0]).min() > 2 * rel * d_sorted[:, 1].max()
    for chunk in (37, 5000):
        result = memorization_ratios(synthetic, train, chunk_size=chunk)
        np.testing.assert_allclose(result.ratios, expected, rtol=4 * rel, atol=0)
        np.testing.assert_array_equal(result.nearest_index, order[:, 0])
        np.testing.assert_allclose(result.second_distance, d_sorted[:, 1], rtol=2 * rel)


def test_threshold_and_errors(planted):
    train, synthetic, copies = planted
    assert len(memorization_ratios(synthetic, train, threshold=1.0).flagged) == len(synthetic)
    with pytest.raises(MetricInputError, match="threshold"):
        memorization_ratios(synthetic, train, threshold=0.0)
    with pytest.raises(MetricInputError, match="at least 2"):
        memorization_ratios(synthetic, train[:1])
    with pytest.raises(MetricInputError, match="dimensions differ"):
        memorization_ratios(synthetic, train[:, :10])


def test_the_flagged_share_has_a_clopper_pearson_interval():
    from scipy.stats import binomtest

    from histosynth.benchmark.memorization import binomial_interval

    for k, n in ((0, 64), (3, 64), (64, 64), (10, 40)):
        low, high = binomial_interval(k, n)
        exact = binomtest(k, n).proportion_ci(0.95, method="exact")  # an independent implementation
        assert (low, high) == pytest.approx((exact.low, exact.high), abs=1e-12)
    assert binomial_interval(0, 64)[1] == pytest.approx(1 - 0.025 ** (1 / 64), rel=1e-12)  # closed form at k = 0
