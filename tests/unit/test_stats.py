"""StreamingStats: exact merging, batch-size independence, accuracy at large means, errors, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numerics import gamma, moment_errors, sum_error

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.stats import StreamingStats, as_feature_matrix


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def features() -> np.ndarray:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((24, 24)) / 5
    return rng.standard_normal((1000, 24)) @ mix + np.linspace(-3, 3, 24)


def test_mean_and_cov_match_numpy(features):
    stats = StreamingStats.from_features(features)
    assert stats.count == 1000 and stats.dim == 24
    mean_tol, cov_tol = (2 * e for e in moment_errors(features))  # two routes, each within moment_errors
    assert _rel(stats.mean, features.mean(axis=0)) <= mean_tol
    assert _rel(stats.cov, np.cov(features, rowvar=False)) <= cov_tol
    assert np.array_equal(stats.cov, stats.cov.T)


@pytest.mark.parametrize("batch", [1, 7, 100, 999, 1000])
def test_batch_size_does_not_change_stats(features, batch):
    whole = StreamingStats.from_features(features)
    streamed = StreamingStats()
    for start in range(0, len(features), batch):
        streamed.update(features[start : start + batch])
    assert streamed.count == whole.count
    mean_tol, cov_tol = (2 * e for e in moment_errors(features))  # two summation orders, each within moment_errors
    assert _rel(streamed.mean, whole.mean) <= mean_tol
    assert _rel(streamed.cov, whole.cov) <= cov_tol
    assert streamed.allclose(whole, rtol=max(mean_tol, cov_tol))


def test_merged_shards_equal_whole_set(features):
    whole = StreamingStats.from_features(features)
    bounds = [0, 3, 250, 251, 700, 1000]
    shards = [StreamingStats.from_features(features[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    merged = StreamingStats.merged(shards)
    assert merged.count == 1000
    mean_tol, cov_tol = (2 * e for e in moment_errors(features))  # merging is one more order: moment_errors each
    assert _rel(merged.mean, whole.mean) <= mean_tol
    assert _rel(merged.cov, whole.cov) <= cov_tol
    # Merge order and in-place merging agree too (a tree reduction across processes).
    left = StreamingStats.merged(shards[:2]).merge(StreamingStats.merged(shards[2:]))
    assert _rel(left.cov, whole.cov) <= cov_tol
    # Empty states are neutral.
    assert StreamingStats().merge(whole) == whole
    assert whole.copy().merge(StreamingStats()) == whole


def test_covariance_accurate_for_large_mean():
    """Mean 1e3, std 1: plain Σxxᵀ - nμμᵀ loses ~9 digits; the shifted sums keep 1e-10."""
    rng = np.random.default_rng(1)
    x = 1e3 + rng.standard_normal((4000, 16))
    expected = np.cov(x, rowvar=False)
    n, s = len(x), x.sum(axis=0)
    # Row-by-row numpy sum (fixed order, no BLAS): this error is the same on every IEEE-754 machine.
    naive = ((x[:, :, None] * x[:, None, :]).sum(axis=0) - np.outer(s, s) / n) / (n - 1)
    cov_tol = 2 * moment_errors(x)[1]  # the shifted sums' bound, from the data's column ranges, not its mean
    assert _rel(naive, expected) > cov_tol  # the case is hard enough to tell the schemes apart
    streamed = StreamingStats()
    for start in range(0, n, 512):
        streamed.update(x[start : start + 512])
    assert _rel(streamed.cov, expected) <= cov_tol
    shards = [StreamingStats.from_features(x[i::3] + 0.0) for i in range(3)]
    assert _rel(StreamingStats.merged(shards).cov, expected) <= cov_tol


def test_fixed_shift_and_raw_sums(features):
    stats = StreamingStats(shift=np.zeros(24)).update(features)
    n, raw_outer = len(features), np.abs(features).T @ np.abs(features)
    # Plain sums of n terms in two orders: γ_n Σ|x| each (Higham §4.2), relative to the largest entry.
    sum_tol = 2 * sum_error(features, axis=0).max() / np.abs(features.sum(axis=0)).max()
    outer_tol = 2 * gamma(n) * raw_outer.max() / np.abs(features.T @ features).max()
    assert _rel(stats.sum, features.sum(axis=0)) <= sum_tol
    assert _rel(stats.sum_outer, features.T @ features) <= outer_tol
    other = StreamingStats.from_features(features)
    # Rebuilt from sums about another shift: a few more γ_n of the same magnitudes (moment_errors' 4γ_{n+8}).
    assert _rel(other.sum_outer, features.T @ features) <= 4 * gamma(n + 8) * raw_outer.max() / np.abs(
        features.T @ features).max() + outer_tol
    assert stats.allclose(other, rtol=2 * max(moment_errors(features)))


def test_torch_input_equals_numpy(features):
    a = StreamingStats.from_features(torch.from_numpy(features).float())
    b = StreamingStats.from_features(features.astype(np.float32))
    assert a == b


def test_nan_names_sample_by_id_or_index(features):
    stats = StreamingStats().update(features[:10])
    bad = features[:5].copy()
    bad[3, 2] = np.nan
    with pytest.raises(MetricInputError, match=r"'tile-0042'"):
        stats.update(bad, ids=["a", "b", "c", "tile-0042", "e"])
    with pytest.raises(MetricInputError, match=r"index 13\b"):  # global index: 10 earlier samples + row 3
        stats.update(bad)
    bad[4, 0] = np.inf
    with pytest.raises(MetricInputError, match="2 sample"):
        stats.update(bad)
    assert stats.count == 10  # a rejected batch leaves the state untouched


def test_input_errors(features):
    with pytest.raises(MetricInputError, match="2-D"):
        StreamingStats().update(features[0])
    with pytest.raises(MetricInputError, match="ids"):
        StreamingStats().update(features[:3], ids=["a"])
    stats = StreamingStats.from_features(features)
    with pytest.raises(MetricInputError, match="dims"):
        stats.update(features[:, :5])
    with pytest.raises(MetricInputError, match="merge"):
        stats.merge(StreamingStats.from_features(features[:, :5]))
    with pytest.raises(MetricInputError, match="at least 2"):
        _ = StreamingStats.from_features(features[:1]).cov
    with pytest.raises(MetricInputError):
        as_feature_matrix(np.zeros((4, 0)))


def test_save_load_roundtrip(tmp_path, features):
    stats = StreamingStats.from_features(features, metadata={"encoder": "uni", "version": 2, "ids": ["x"]})
    path = stats.save(tmp_path / "sub" / "real.npz")
    loaded = StreamingStats.load(path)
    assert loaded == stats
    assert loaded.metadata == {"encoder": "uni", "version": 2, "ids": ["x"]}
    with np.load(path) as raw:  # pytorch-fid readers find mu/sigma
        assert np.array_equal(raw["mu"], stats.mean) and np.array_equal(raw["sigma"], stats.cov)
        assert int(raw["dim"]) == 24 and int(raw["count"]) == 1000
    # A loaded state keeps streaming exactly like the original.
    assert loaded.update(features[:10]) == stats.update(features[:10])
    empty = StreamingStats.load(StreamingStats(dim=3).save(tmp_path / "empty.npz"))
    assert empty.count == 0 and empty.dim == 3
    np.savez(tmp_path / "foreign.npz", mu=np.zeros(3), sigma=np.eye(3))
    with pytest.raises(MetricInputError, match="not a StreamingStats"):
        StreamingStats.load(tmp_path / "foreign.npz")
    with pytest.raises(MetricInputError, match="JSON"):
        StreamingStats(metadata={"bad": object()}).save(tmp_path / "bad.npz")


def test_a_bootstrap_interval_that_misses_its_estimate_is_extended_to_it():
    from histosynth.benchmark.intervals import containing

    assert containing(0.5, 0.6, 0.9) == (0.5, 0.9) and containing(0.95, 0.6, 0.9) == (0.6, 0.95)
    assert containing(0.7, 0.6, 0.9) == (0.6, 0.9)  # an interval that holds its estimate is left alone
    low, high = containing(float("nan"), 0.6, 0.9)
    assert (low, high) == (0.6, 0.9)
