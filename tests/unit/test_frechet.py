"""Fréchet distance: agreement with sqrtm and torch-fidelity, exact zero, symmetry, low-rank path, FD∞, bootstrap."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from numerics import EPS64, cross_term_gap, fd_route_gap, fd_stats_gap, gamma, lowrank_fd_error
from torch_fidelity.metric_fid import fid_statistics_to_metric

from histosynth.benchmark.errors import MetricInputError, SmallSampleWarning
from histosynth.benchmark.frechet import (
    ReferenceSqrt,
    fd_bootstrap_ci,
    fd_from_features,
    fd_from_stats,
    fd_infinity,
    frechet_distance,
    sample_rank,
    trace_sqrt_product,
)
from histosynth.benchmark.stats import StreamingStats


def _random_gaussian(rng: np.random.Generator, d: int, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eigenvalues = scale * rng.uniform(0.5, 2.0, d)  # condition number <= 4
    return rng.standard_normal(d), (q * eigenvalues) @ q.T


def _sqrtm_fd(mu1, cov1, mu2, cov2) -> float:
    """pytorch-fid / clean-fid formula with scipy.linalg.sqrtm."""
    covmean = scipy.linalg.sqrtm(cov1 @ cov2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def _features(rng: np.random.Generator, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return shift + scale * rng.standard_normal((n, d))


@pytest.mark.parametrize("d", [1, 8, 64])
def test_matches_sqrtm_and_torch_fidelity(d):
    rng = np.random.default_rng(d)
    mu1, cov1 = _random_gaussian(rng, d)
    mu2, cov2 = _random_gaussian(rng, d, scale=3.0)
    ours = frechet_distance(mu1, cov1, mu2, cov2)
    # ours (symmetric eigvalsh) and the peers (eigvals / sqrtm of the non-symmetric Σ1Σ2): Weyl / Bauer-Fike bounds
    gap = fd_stats_gap(mu1, cov1, mu2, cov2) + fd_stats_gap(mu1, cov1, mu2, cov2, non_symmetric=True)
    assert ours == pytest.approx(_sqrtm_fd(mu1, cov1, mu2, cov2), rel=0, abs=gap)
    tf = fid_statistics_to_metric({"mu": mu1, "sigma": cov1}, {"mu": mu2, "sigma": cov2}, verbose=False)
    assert ours == pytest.approx(tf["frechet_inception_distance"], rel=0, abs=gap)


def test_matches_closed_form_for_diagonal_covariances():
    """FD of N(μ1, diag a) and N(μ2, diag b) is |μ1-μ2|² + Σ(√a - √b)²."""
    rng = np.random.default_rng(3)
    a, b = rng.uniform(0.1, 5, 40), rng.uniform(0.1, 5, 40)
    mu1, mu2 = rng.standard_normal(40), rng.standard_normal(40)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # Only rounding separates the two; the closed form's own sums are within γ_4d of their magnitude (Higham §4.2).
    gap = fd_stats_gap(mu1, np.diag(a), mu2, np.diag(b)) + gamma(4 * 40) * (expected + np.sum(a + b))
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=0, abs=gap)


def test_identical_sets_give_exactly_zero_and_never_negative():
    rng = np.random.default_rng(4)
    x = _features(rng, 300, 16)
    stats = StreamingStats.from_features(x)
    assert frechet_distance(stats.mean, stats.cov, stats.mean.copy(), stats.cov.copy()) == 0.0
    assert fd_from_stats(stats, StreamingStats.from_features(x.copy())) == 0.0
    assert fd_from_features(x, x.copy()) == 0.0
    assert ReferenceSqrt.from_stats(stats).distance_to_stats(stats) == 0.0
    # Same set in a different order: equal up to rounding, and clamped, never below 0.
    perm = StreamingStats.from_features(x[::-1])
    value = fd_from_stats(stats, perm)
    # The two covariances differ by summation order only (γ_n, Higham §3.5), so the true FD is O(eps²): the value
    # is the FD route's rounding, bounded by fd_stats_gap.
    assert 0.0 <= value <= fd_stats_gap(stats.mean, stats.cov, perm.mean, perm.cov, n_samples=300)
    # Near-identical and rank-deficient covariances: still >= 0.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        for n in (5, 17, 300):
            y = x[:n]
            for method in ("cov", "lowrank"):
                assert fd_from_features(y, y + 1e-12, method=method) >= 0.0
                assert fd_from_features(y, y[::-1], method=method) >= 0.0


def test_symmetric():
    rng = np.random.default_rng(5)
    mu1, cov1 = _random_gaussian(rng, 32)
    mu2, cov2 = _random_gaussian(rng, 32, scale=2.0)
    # Each order factors a different covariance; each is within fd_stats_gap of the exact value.
    gap = 2 * fd_stats_gap(mu1, cov1, mu2, cov2)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(frechet_distance(mu2, cov2, mu1, cov1), rel=0,
                                                                   abs=gap)
    # One singular covariance: the Cholesky factor is taken from the other one either way (if rounding let the
    # singular one's Cholesky succeed, its noise eigenvalues would still be inside cross_term_gap).
    x = _features(rng, 10, 32)
    sing = np.cov(x, rowvar=False)
    gap = 2 * cross_term_gap(sing, cov2, n_samples=10)
    assert trace_sqrt_product(sing, cov2) == pytest.approx(trace_sqrt_product(cov2, sing), rel=0, abs=gap)


def test_lowrank_path_equals_eigh_path():
    """tr(Σ1^½ Σ2 Σ1^½)^½ = ||A1 A2ᵀ||_* for A_i = centered features / sqrt(N_i - 1) (here N < d)."""
    rng = np.random.default_rng(6)
    x1 = _features(rng, 40, 96)
    x2 = _features(rng, 25, 96, shift=0.3, scale=1.5)
    with pytest.warns(SmallSampleWarning):
        lowrank = fd_from_features(x1, x2, method="lowrank")
    with pytest.warns(SmallSampleWarning):
        cov = fd_from_features(x1, x2, method="cov")
    assert lowrank == pytest.approx(cov, rel=0, abs=fd_route_gap(x1, x2))  # Weyl + √ bounds, from the data
    # Both covariances singular: the trace term equals the explicit eigh-based sqrt (Σ1^½ from eigh, clamped).
    c1, c2 = np.cov(x1, rowvar=False), np.cov(x2, rowvar=False)
    w, v = np.linalg.eigh(c1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    explicit = np.sqrt(np.clip(np.linalg.eigvalsh(root @ c2 @ root), 0, None)).sum()
    a1 = (x1 - x1.mean(0)) / np.sqrt(39)
    a2 = (x2 - x2.mean(0)) / np.sqrt(24)
    nuclear = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    # The product has rank <= min(N1, N2) - 1 = 24: counting only the 24 largest eigenvalues leaves out the
    # ~70 exact zeros that rounding turns into noise; counting all positive ones carries their sqrt(noise).
    # Bounds: cross_term_gap (Weyl + √ per eigenvalue, from the data) plus the nuclear norm's (lowrank_fd_error).
    svd_gap = lowrank_fd_error(x1, x2) / 2
    ranked = cross_term_gap(c1, c2, rank=sample_rank(40, 25), n_samples=65) + svd_gap
    assert trace_sqrt_product(c1, c2, max_rank=sample_rank(40, 25)) == pytest.approx(nuclear, rel=0, abs=ranked)
    # All 96 eigenvalues counted: each of the ~72 rounding-noise ones may add up to √δ.
    unranked = cross_term_gap(c1, c2, n_samples=65) + svd_gap
    assert trace_sqrt_product(c1, c2) == pytest.approx(nuclear, rel=0, abs=unranked)
    assert explicit == pytest.approx(nuclear, rel=0, abs=unranked)


def test_known_answer_below_d_lowrank_exact_where_torch_fidelity_drifts():
    """x2 = a x1 + c has FD = |(a - 1) μ1 + c|² + (1 - a)² tr Σ1 exactly; at N << d with a wide spectrum the
    traces dwarf FD."""
    rng = np.random.default_rng(11)
    x1 = rng.standard_normal((40, 256)) * np.logspace(1, -4, 256)
    c, a = np.full(256, 0.01), 1.001
    x2 = a * x1 + c
    s1 = StreamingStats.from_features(x1)
    shift = (a - 1) * s1.mean + c
    exact = shift @ shift + (1 - a) ** 2 * np.trace(s1.cov)
    s2 = StreamingStats.from_features(x2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        ours = fd_from_stats(s1, s2, x1, x2)
        assert ours == fd_from_features(x1, x2, method="lowrank")  # all features given, N < d: the low-rank form
        assert fd_from_stats(s1, s2, x1[:-1], x2) == fd_from_stats(s1, s2)  # features incomplete: covariances
        theirs = fid_statistics_to_metric({"mu": s1.mean, "sigma": s1.cov}, {"mu": s2.mean, "sigma": s2.cov}, False)
    # Low-rank route's rounding (lowrank_fd_error), plus x2 = a·x1 + c rounded entrywise (relative EPS64): FD is a
    # squared W2 distance, so that moves √FD by at most the perturbation's RMS row norm r: |ΔFD| <= 2r√FD + r².
    r = EPS64 * float(np.sqrt(np.mean(np.sum(x2**2, axis=1))))
    assert ours == pytest.approx(exact, rel=0, abs=lowrank_fd_error(x1, x2) + 2 * r * np.sqrt(exact) + r**2)
    # torch-fidelity's sqrt(eigvals(Σ1 Σ2)) keeps the square roots of 216 noise eigenvalues: off by ~5e-4
    assert abs(theirs["frechet_inception_distance"] - exact) > 100 * abs(ours - exact)


def test_reference_sqrt_reuses_one_factor():
    rng = np.random.default_rng(7)
    ref_x = _features(rng, 400, 24)
    ref = ReferenceSqrt.from_features(ref_x)
    ref_stats = StreamingStats.from_features(ref_x)
    for shift in (0.0, 0.5):
        x = _features(rng, 300, 24, shift=shift, scale=1.2)
        expected = fd_from_features(ref_x, x)
        x_stats = StreamingStats.from_features(x)
        # Two covariance routes, each within fd_stats_gap of the exact value (Weyl + √ bounds, from the data).
        gap = 2 * fd_stats_gap(ref_stats.mean, ref_stats.cov, x_stats.mean, x_stats.cov, n_samples=700)
        assert ref.distance_to_stats(x_stats) == pytest.approx(expected, rel=0, abs=gap)
        assert fd_from_stats(ref_stats, x_stats) == pytest.approx(expected, rel=0, abs=gap)
        assert ref.distance_to_features(x) == pytest.approx(expected, rel=0, abs=gap)
    small = _features(rng, 10, 24)  # N < d: nuclear-norm path inside the reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        # ||A G||_* against the covariance route keeping sample_rank(400, 10) = 9 eigenvalues
        gap = fd_route_gap(ref_x, small)
        assert ref.distance_to_features(small) == pytest.approx(fd_from_features(ref_x, small, "cov"), rel=0, abs=gap)


def test_nonnegative_on_random_inputs():
    rng = np.random.default_rng(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        for _ in range(20):
            d = int(rng.integers(1, 20))
            n1, n2 = (int(v) for v in rng.integers(2, 40, 2))
            x1 = _features(rng, n1, d, scale=float(rng.uniform(0.01, 10)))
            x2 = x1[rng.integers(0, n1, n2)] + 1e-9 * rng.standard_normal((n2, d))
            for method in ("cov", "lowrank"):
                assert fd_from_features(x1, x2, method) >= 0.0


def test_fd_infinity_is_closer_to_the_truth():
    """N(0, I) vs N(m, s²I): FD = |m|² + d(1-s)²; FD_N is biased up by O(d²/N), FD∞ removes most of it."""
    rng = np.random.default_rng(0)
    d, m, s = 32, 0.05, 1.1
    x1 = _features(rng, 30000, d)
    x2 = _features(rng, 1500, d, shift=m, scale=s)
    truth = d * m**2 + d * (1 - s) ** 2
    fd_n = fd_from_features(x1, x2)
    fd_inf = fd_infinity(x1, x2, seed=0)
    assert fd_n - truth > 0.1  # the small-sample bias is real here
    assert abs(fd_inf - truth) < 0.5 * abs(fd_n - truth)
    assert fd_inf == fd_infinity(x1, x2, seed=0)


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(10)
    x1 = _features(rng, 2000, 4)
    x2 = _features(rng, 2000, 4, shift=0.3, scale=1.2)
    point = fd_from_features(x1, x2)
    low, high = fd_bootstrap_ci(x1, x2, n_boot=60, seed=1)
    assert low < point < high
    assert high - low < point  # a clear signal gives a tight interval
    assert (low, high) == fd_bootstrap_ci(x1, x2, n_boot=60, seed=1)
    assert (low, high) != fd_bootstrap_ci(x1, x2, n_boot=60, seed=2)
    b_low, b_high = fd_bootstrap_ci(x1, x2, n_boot=60, seed=1, interval="basic")
    # exact: the library's point estimate is the same _fd_matrices call, and 2·point - q the same float operations
    assert b_low == 2 * point - high and b_high == 2 * point - low


def test_bootstrap_lowrank_and_cov_paths_agree():
    rng = np.random.default_rng(11)
    x1, x2 = _features(rng, 30, 50), _features(rng, 20, 50, shift=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        a = fd_bootstrap_ci(x1, x2, n_boot=10, seed=3, method="lowrank")
        b = fd_bootstrap_ci(x1, x2, n_boot=10, seed=3, method="cov")
    # Replicates have duplicate rows, so their rank is below the min(N)-1 eigenvalues the covariance route keeps:
    # bound over any resample (fd_route_gap); quantiles are 1-Lipschitz in the replicate values.
    assert a == pytest.approx(b, rel=0, abs=fd_route_gap(x1, x2, resampled=True))


def test_too_few_samples_and_bad_shapes():
    rng = np.random.default_rng(12)
    x = _features(rng, 50, 8)
    with pytest.raises(MetricInputError, match="at least 2"):
        fd_from_features(x[:1], x)
    with pytest.raises(MetricInputError, match="at least 2"):
        fd_from_stats(StreamingStats.from_features(x[:1]), StreamingStats.from_features(x))
    with pytest.warns(SmallSampleWarning, match=r"at least 9 samples.*2048.*5000"):
        value = fd_from_features(x[:6], x)
    assert np.isfinite(value) and value > 0
    with pytest.raises(MetricInputError, match="dimensions differ"):
        fd_from_features(x, x[:, :4])
    with pytest.raises(MetricInputError, match=r"\(d,\)"):
        frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(MetricInputError, match="dimensions differ"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(MetricInputError, match="NaN"):
        frechet_distance(np.zeros(3), np.full((3, 3), np.nan), np.zeros(3), np.eye(3))
    bad = x.copy()
    bad[7, 1] = np.nan
    with pytest.raises(MetricInputError, match="index 7"):
        fd_from_features(x, bad)
    with pytest.raises(MetricInputError, match="method"):
        fd_from_features(x, x + 1, method="sqrtm")  # type: ignore[arg-type]


def test_torch_tensors_accepted():
    rng = np.random.default_rng(13)
    x1, x2 = _features(rng, 100, 6), _features(rng, 120, 6, shift=1.0)
    assert fd_from_features(torch.from_numpy(x1), torch.from_numpy(x2)) == fd_from_features(x1, x2)


def _same_distribution_fd_draws(rng: np.random.Generator, n: int, d: int, draws: int) -> np.ndarray:
    return np.array([fd_from_features(rng.standard_normal((n, d)), rng.standard_normal((n, d))) for _ in range(draws)])


def test_centered_interval_contains_the_estimate_near_zero_and_covers_expected_fd():
    from histosynth.benchmark.frechet import fd_bootstrap

    rng = np.random.default_rng(21)
    n, d, trials = 100, 8, 40
    expected = _same_distribution_fd_draws(rng, n, d, 1000).mean()  # E[FD_N] of two N(0, I) sets of n
    covered, basic_misses = 0, 0
    for trial in range(trials):
        a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d))
        ci = fd_bootstrap(a, b, n_boot=100, seed=trial)
        assert ci.interval == "centred-percentile" and ci.low <= ci.estimate <= ci.high
        assert all(e >= 0 for e in ci.mc_error)
        covered += ci.low <= expected <= ci.high
        basic = fd_bootstrap(a, b, n_boot=100, seed=trial, interval="basic")
        basic_misses += not basic.low <= basic.estimate <= basic.high
    assert basic_misses > 0  # the interval bench used before: it can lie wholly below its own estimate here
    # A 95% interval: at true coverage >= 0.95, 40 trials give <= 33 hits with probability < 0.5% (binomial tail).
    assert covered >= 34


def test_centered_interval_contains_the_estimate_below_d_on_the_gram_route():
    from histosynth.benchmark.frechet import fd_bootstrap

    rng = np.random.default_rng(22)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        for trial in range(5):
            a, b = rng.standard_normal((40, 64)), rng.standard_normal((35, 64))
            ci = fd_bootstrap(a, b, n_boot=50, seed=trial)
            assert ci.method == "gram" and ci.low <= ci.estimate <= ci.high
            assert ci.estimate == fd_from_features(a, b)


def test_gram_bootstrap_replicates_equal_the_resampled_lowrank_form():
    from histosynth.benchmark.frechet import fd_bootstrap

    rng = np.random.default_rng(23)
    n1, n2, d = 30, 25, 50
    x1, x2 = _features(rng, n1, d, shift=3.0), _features(rng, n2, d, shift=3.1, scale=1.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        fast = fd_bootstrap(x1, x2, n_boot=20, seed=4, interval="percentile", method="gram")
        slow = fd_bootstrap(x1, x2, n_boot=20, seed=4, interval="percentile", method="lowrank")
    # Same resamples; each inner product rounds by <= d·eps·|x||y| (Higham's γ_d), and FD sums ~(n1 + n2) of them.
    tol = 4 * (n1 + n2) * d * np.finfo(float).eps
    assert fast.low == pytest.approx(slow.low, rel=tol) and fast.high == pytest.approx(slow.high, rel=tol)
