r"""Fréchet distance (FD / FID / FD_DINOv2) between Gaussian fits of two feature sets, plus FD∞ and bootstrap CIs.

Formula (Fréchet 1957; Dowson & Landau 1982; used as FID by Heusel et al. 2017, "GANs trained by a two time-scale
update rule converge to a local Nash equilibrium"), for N(μ1, Σ1) and N(μ2, Σ2):

    FD = ||μ1 - μ2||² + tr Σ1 + tr Σ2 - 2 tr (Σ1^½ Σ2 Σ1^½)^½

The trace term is computed in its symmetric form. For any factor G1 with G1 G1ᵀ = Σ1 (Cholesky factor, Σ1^½,
or the centered features A1ᵀ / sqrt(N1-1)) and any G2 with G2 G2ᵀ = Σ2, the non-zero eigenvalues of
Σ1^½ Σ2 Σ1^½, of Σ2 Σ1 and of G1ᵀ Σ2 G1 = (G2ᵀ G1)ᵀ (G2ᵀ G1) coincide (eig(XY) = eig(YX) off 0), so

    tr (Σ1^½ Σ2 Σ1^½)^½ = Σ sqrt(eigvalsh(G1ᵀ Σ2 G1)) = || G2ᵀ G1 ||_*   (nuclear norm)

With G1 = Cholesky(Σ1) this costs one Cholesky, two triangular products and one symmetric eigenvalue solve;
eigenvalues (≥ 0 in exact arithmetic) below the solver's resolution n·eps·λ_max count as 0. If Σ1 is singular
(N ≤ d) Σ2 is factored instead, and if both are, G1 = V_+ Λ_+^½ from `eigh` (eigenvalues clamped at 0). With
feature matrices and N < d, G_i = A_iᵀ (A_i = centered features / sqrt(N_i - 1)) gives the low-rank form
|| A1 A2ᵀ ||_* (an N1×N2 matrix), which `fd_bootstrap_ci` uses.

Other suites use `scipy.linalg.sqrtm(Σ1 Σ2)` (pytorch-fid, clean-fid, dgm-eval; slow, can return
complex values, and `disp=` is gone in SciPy 1.18) or `eigvals(Σ1 Σ2)` of a non-symmetric product
(torch-fidelity, torchmetrics). FD∞ follows dgm-eval's `compute_FD_infinity` (Chong & Forsyth 2020, "Effectively
unbiased FID and Inception Score and where to find them"): FD_N on subsets of the second set at 15 sizes, a line
fitted against 1/N, evaluated at 1/N = 0.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import numpy as np
import scipy.linalg
import scipy.linalg.blas

from histosynth.benchmark.errors import MetricInputError, SmallSampleWarning
from histosynth.benchmark.stats import FeatureArray, StreamingStats, as_feature_matrix

Method = Literal["auto", "cov", "lowrank"]


# ---------------------------------------------------------------------------------------------- validation
def _as_gaussian(mu: np.ndarray, cov: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mu.ndim != 1 or mu.shape[0] == 0 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise MetricInputError(f"{name}: mean must be (d,) and covariance (d, d); got {mu.shape} and {cov.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise MetricInputError(f"{name}: mean or covariance has NaN/inf values")
    return mu, cov


def _as_cov(cov: np.ndarray, name: str) -> np.ndarray:
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1] or cov.shape[0] == 0:
        raise MetricInputError(f"{name}: covariance must be a non-empty (d, d) matrix, got shape {cov.shape}")
    return _as_gaussian(np.zeros(cov.shape[0]), cov, name)[1]


def check_sample_count(n: int, dim: int, name: str = "features", stacklevel: int = 3) -> None:
    """Raise for n < 2; warn (SmallSampleWarning) when n <= dim, i.e. the covariance is rank-deficient."""
    if n < 2:
        raise MetricInputError(f"{name}: FD needs at least 2 samples to estimate a covariance, got {n}")
    if n <= dim:
        warnings.warn(
            f"{name}: {n} samples of {dim}-dim features give a rank-deficient covariance (rank <= {n - 1}); a "
            f"full-rank covariance needs at least {dim + 1} samples, and FD is only comparable across runs with "
            f"many more (pytorch-fid/TTUR maintainers recommend >= 2048, ideally >= 5000, and well above d). "
            f"The value is returned but is strongly biased upward.",
            SmallSampleWarning,
            stacklevel=stacklevel,
        )


def _check_dims(d1: int, d2: int) -> None:
    if d1 != d2:
        raise MetricInputError(f"feature dimensions differ: {d1} vs {d2}")


# ---------------------------------------------------------------------------------------------- trace term
def _symmetric(m: np.ndarray) -> np.ndarray:
    return (m + m.T) / 2


def _cholesky(cov: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor, or None if cov is not numerically positive definite."""
    try:
        return scipy.linalg.cholesky(cov, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None


def _psd_factor(cov: np.ndarray) -> tuple[np.ndarray, bool]:
    """(G, is_lower_triangular) with G Gᵀ = cov: Cholesky if positive definite, else V_+ sqrt(λ_+) from eigh."""
    lower = _cholesky(cov)
    if lower is not None:
        return lower, True
    eigenvalues, vectors = np.linalg.eigh(_symmetric(cov))
    keep = eigenvalues > 0  # clamp: negative eigenvalues of a PSD matrix are rounding noise
    return vectors[:, keep] * np.sqrt(eigenvalues[keep]), False


def _trace_sqrt_factor(factor: np.ndarray, cov: np.ndarray, lower_triangular: bool = False,
                       max_rank: int | None = None) -> float:
    """tr (Σ1^½ Σ2 Σ1^½)^½ given G1 (G1 G1ᵀ = Σ1) and Σ2: Σ sqrt(max(eigvalsh(G1ᵀ Σ2 G1), 0)).

    With `max_rank` (a bound on the product's rank, min(N1, N2) - 1 for sample covariances) only that many of
    the largest eigenvalues count: the others are exact zeros that rounding turns into noise, and each would add
    sqrt(noise) ~ 1e-8 sqrt(λ_max). Without it every positive eigenvalue counts: a noise floor would also drop the
    real small eigenvalues of an ill-conditioned product (6.8e-3 relative at N = 1000, d = 2048: perf/RESULTS.md).
    """
    if lower_triangular:
        # Triangular products (BLAS trmm) take half the flops of general ones. BLAS wants Fortran order; Σ2 is
        # symmetric, so its transpose is the same matrix in that order (and the result is symmetrized below).
        g = np.asfortranarray(factor)
        s = cov.T if cov.flags.c_contiguous else np.asfortranarray(cov)
        right = scipy.linalg.blas.dtrmm(1.0, g, s, side=1, lower=1)  # Σ2 G
        inner = scipy.linalg.blas.dtrmm(1.0, g, right, side=0, lower=1, trans_a=1, overwrite_b=1)  # Gᵀ Σ2 G
    else:
        inner = factor.T @ cov @ factor
    eigenvalues = scipy.linalg.eigh(_symmetric(inner), eigvals_only=True, check_finite=False, driver="evr")
    if max_rank is not None:
        eigenvalues = eigenvalues[max(len(eigenvalues) - max_rank, 0) :]  # ascending: keep the largest
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def sample_rank(*counts: int) -> int:
    """The rank bound min(N_i) - 1 of products of sample covariances from sets of these sizes."""
    return max(min(counts) - 1, 0)


def _nuclear_norm(m: np.ndarray) -> float:
    return float(scipy.linalg.svdvals(m, check_finite=False).sum())


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray, max_rank: int | None = None) -> float:
    """tr (Σ1^½ Σ2 Σ1^½)^½, the cross term of FD; symmetric in its arguments, never NaN or complex.

    `max_rank` bounds the product's rank (see `sample_rank`); only that many eigenvalues then count.
    """
    cov1, cov2 = _as_cov(cov1, "cov1"), _as_cov(cov2, "cov2")
    _check_dims(cov1.shape[0], cov2.shape[0])
    # Factor whichever covariance is positive definite (Cholesky is ~10x cheaper than eigh); else eigh of Σ1.
    for a, b in ((cov1, cov2), (cov2, cov1)):
        lower = _cholesky(a)
        if lower is not None:
            return _trace_sqrt_factor(lower, b, lower_triangular=True, max_rank=max_rank)
    factor, _ = _psd_factor(cov1)
    return _trace_sqrt_factor(factor, cov2, max_rank=max_rank)


def _combine(mean_term: float, trace1: float, trace2: float, cross: float) -> float:
    # FD is a squared 2-Wasserstein distance, so >= 0; a tiny negative value is rounding.
    return max(float(mean_term + trace1 + trace2 - 2.0 * cross), 0.0)


# ---------------------------------------------------------------------------------------------- FD from statistics
def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray,
                     max_rank: int | None = None) -> float:
    """FD between N(mu1, cov1) and N(mu2, cov2); exactly 0.0 for identical inputs and never negative.

    For sample covariances pass max_rank=sample_rank(N1, N2) when either N is <= d (see `trace_sqrt_product`).
    """
    mu1, cov1 = _as_gaussian(mu1, cov1, "set 1")
    mu2, cov2 = _as_gaussian(mu2, cov2, "set 2")
    _check_dims(mu1.shape[0], mu2.shape[0])
    if np.array_equal(mu1, mu2) and np.array_equal(cov1, cov2):
        return 0.0
    diff = mu1 - mu2
    return _combine(diff @ diff, np.trace(cov1), np.trace(cov2), trace_sqrt_product(cov1, cov2, max_rank))


def fd_from_stats(a: StreamingStats, b: StreamingStats, features_a: FeatureArray | None = None,
                  features_b: FeatureArray | None = None) -> float:
    """FD between two StreamingStats; raises if either has < 2 samples, warns if either has <= d samples.

    When both sets have fewer samples than dimensions and every one of their features is given (the feature
    pipeline keeps them up to a cap), FD is computed from the features in the low-rank form instead: its singular
    values are the square roots that the covariance route has to take of eigenvalues near the solver's noise
    floor, which costs up to ~1e-4 relative at N << d (perf/RESULTS.md, "FD when N < d").
    """
    if a.dim is None or b.dim is None:
        raise MetricInputError("FD needs at least 2 samples per set; got empty stats")
    _check_dims(a.dim, b.dim)
    check_sample_count(a.count, a.dim, "set 1")
    check_sample_count(b.count, b.dim, "set 2")
    complete = all(f is not None and len(f) == s.count for f, s in ((features_a, a), (features_b, b)))
    if complete and max(a.count, b.count) < a.dim:
        x1, x2 = _two_feature_sets(features_a, features_b, warn=False)  # type: ignore[arg-type]
        return 0.0 if np.array_equal(x1, x2) else _fd_matrices(x1, x2, "lowrank")
    return frechet_distance(a.mean, a.cov, b.mean, b.cov, sample_rank(a.count, b.count))


class ReferenceSqrt:
    """A reference Gaussian (μ, Σ) whose square-root factor G (G Gᵀ = Σ) is computed once and reused.

    Use when many sets are compared with one reference (a leaderboard's real-data stats, FD∞'s subsets): each FD
    then costs two matrix products and one symmetric eigenvalue solve, or for N < d samples given as features
    one (N×d)(d×d) product and an SVD of an N×d matrix.
    """

    def __init__(self, mu: np.ndarray, cov: np.ndarray, count: int | None = None) -> None:
        self.mu, self.cov = _as_gaussian(mu, cov, "reference")
        self.count = count  # samples behind cov, when known: bounds the cross term's rank
        self.trace = float(np.trace(self.cov))
        self.factor, self.factor_is_cholesky = _psd_factor(self.cov)

    @classmethod
    def from_stats(cls, stats: StreamingStats) -> "ReferenceSqrt":
        """Reference from StreamingStats (raises if < 2 samples, warns if <= d)."""
        if stats.dim is None:
            raise MetricInputError("reference stats are empty")
        check_sample_count(stats.count, stats.dim, "reference")
        return cls(stats.mean, stats.cov, stats.count)

    @classmethod
    def from_features(cls, features: FeatureArray) -> "ReferenceSqrt":
        """Reference from an (N, d) feature matrix."""
        return cls.from_stats(StreamingStats.from_features(features))

    @property
    def dim(self) -> int:
        """Feature dimension d."""
        return int(self.mu.shape[0])

    def distance(self, mu: np.ndarray, cov: np.ndarray, count: int | None = None) -> float:
        """FD between the reference and N(mu, cov) (a sample covariance of `count` samples, when known)."""
        mu, cov = _as_gaussian(mu, cov, "set")
        _check_dims(self.dim, mu.shape[0])
        if np.array_equal(mu, self.mu) and np.array_equal(cov, self.cov):
            return 0.0
        diff = mu - self.mu
        counts = [c for c in (self.count, count) if c is not None]
        max_rank = sample_rank(*counts) if counts else None
        cross = _trace_sqrt_factor(self.factor, cov, self.factor_is_cholesky, max_rank)
        return _combine(diff @ diff, self.trace, np.trace(cov), cross)

    def distance_to_stats(self, stats: StreamingStats) -> float:
        """FD between the reference and StreamingStats (raises if < 2 samples, warns if <= d)."""
        if stats.dim is None:
            raise MetricInputError("stats are empty")
        _check_dims(self.dim, stats.dim)
        check_sample_count(stats.count, stats.dim, "set")
        return self.distance(stats.mean, stats.cov, stats.count)

    def distance_to_features(self, features: FeatureArray, warn: bool = True) -> float:
        """FD between the reference and an (N, d) feature matrix; for N < rank, the cross term is ||A G||_*."""
        x = as_feature_matrix(features)
        _check_dims(self.dim, x.shape[1])
        if warn or x.shape[0] < 2:
            check_sample_count(x.shape[0], x.shape[1], "set")
        mu = x.mean(axis=0)
        a = (x - mu) / np.sqrt(x.shape[0] - 1)
        diff = mu - self.mu
        if x.shape[0] < self.factor.shape[1]:
            # G2 = Aᵀ: the cross term is the nuclear norm of A G1 (N × r).
            return _combine(diff @ diff, self.trace, float(np.sum(a * a)), _nuclear_norm(a @ self.factor))
        return self.distance(mu, a.T @ a, x.shape[0])


# ---------------------------------------------------------------------------------------------- FD from features
def _centered_scaled(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = x.mean(axis=0)
    return mu, (x - mu) / np.sqrt(x.shape[0] - 1)


def _fd_matrices(x1: np.ndarray, x2: np.ndarray, method: Method) -> float:
    mu1, a1 = _centered_scaled(x1)
    mu2, a2 = _centered_scaled(x2)
    diff = mu1 - mu2
    if method == "auto":
        method = "lowrank" if max(x1.shape[0], x2.shape[0]) < x1.shape[1] else "cov"
    if method == "lowrank":
        smaller, larger = (a1, a2) if a1.shape[0] <= a2.shape[0] else (a2, a1)
        cross = _nuclear_norm(smaller @ larger.T)
        return _combine(diff @ diff, float(np.sum(a1 * a1)), float(np.sum(a2 * a2)), cross)
    if method != "cov":
        raise MetricInputError(f"unknown FD method {method!r}; use 'auto', 'cov' or 'lowrank'")
    cov1, cov2 = a1.T @ a1, a2.T @ a2
    cross = trace_sqrt_product(cov1, cov2, sample_rank(len(x1), len(x2)))
    return _combine(diff @ diff, np.trace(cov1), np.trace(cov2), cross)


def _two_feature_sets(
    feats1: FeatureArray, feats2: FeatureArray, warn: bool = True, stacklevel: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    x1 = as_feature_matrix(feats1, "feats1")
    x2 = as_feature_matrix(feats2, "feats2")
    _check_dims(x1.shape[1], x2.shape[1])
    for x, name in ((x1, "feats1"), (x2, "feats2")):
        if warn or x.shape[0] < 2:
            check_sample_count(x.shape[0], x.shape[1], name, stacklevel=stacklevel)
    return x1, x2


def fd_from_features(feats1: FeatureArray, feats2: FeatureArray, method: Method = "auto") -> float:
    """FD between two (N_i, d) feature matrices.

    method: "cov" (covariances + factor + eigvalsh), "lowrank" (nuclear norm of A1 A2ᵀ, cheaper when N < d), or
    "auto" (lowrank when both N_i < d). Identical inputs give exactly 0.0.
    """
    x1, x2 = _two_feature_sets(feats1, feats2)
    if np.array_equal(x1, x2):
        return 0.0
    return _fd_matrices(x1, x2, method)


def fd_infinity(
    feats1: FeatureArray, feats2: FeatureArray, num_points: int = 15, seed: int | None = 0
) -> float:
    """FD∞ (dgm-eval `compute_FD_infinity`): FD_N against 1/N, extrapolated to N = ∞.

    feats1 is the reference (e.g. training) set, used whole; feats2 (generated) is subsampled without replacement
    at `num_points` sizes from min(5000, max(N2 // 10, 2)) to N2. Removes the 1/N bias of FD in N2 only.
    """
    if num_points < 2:
        raise MetricInputError(f"FD-infinity needs num_points >= 2 to fit a line, got {num_points}")
    x1, x2 = _two_feature_sets(feats1, feats2, warn=False)
    n2, dim = x2.shape
    sizes = np.linspace(min(5000, max(n2 // 10, 2)), n2, num_points).astype(np.int64)
    check_sample_count(x1.shape[0], dim, "feats1 (reference)")
    if sizes[0] <= dim:
        check_sample_count(int(sizes[0]), dim, f"feats2 (smallest FD-infinity subset of {n2})")
    reference = ReferenceSqrt.from_stats(StreamingStats.from_features(x1)) if x1.shape[0] > dim else None
    rng = np.random.default_rng(seed)
    values = []
    for size in sizes:
        subset = x2[rng.choice(n2, int(size), replace=False)]
        if reference is not None:
            values.append(reference.distance_to_features(subset, warn=False))
        else:
            values.append(_fd_matrices(x1, subset, "auto"))
    _slope, intercept = np.polyfit(1.0 / sizes, np.asarray(values), 1)
    return float(intercept)


# "centred-percentile" keeps its British spelling: it is persisted in every results file (extra.interval), and a new
# spelling would change their bytes and split the committed results in two.
Interval = Literal["centred-percentile", "percentile", "basic"]
_INTERVALS = ("centred-percentile", "percentile", "basic")


class BootstrapCI(NamedTuple):
    """A bootstrap interval of FD: bounds, the estimate they go with, how they were formed, and their
    Monte-Carlo error (the standard error of each bound from the finite number of replicates)."""

    low: float
    high: float
    estimate: float
    interval: str
    n_boot: int
    method: str
    mc_error: tuple[float, float]


class _GramResampler:
    """FD of bootstrap resamples of two feature sets from their pooled Gram matrix, for N1, N2 < d.

    A resample drawing row i c_i times has the same FD as the weighted set of its distinct rows: duplicating a
    row of A1 (centered features / sqrt(N1 - 1)) c times leaves the singular values of A1 A2ᵀ those of
    D1^½ A1u A2uᵀ D2^½ (D = diag(c)), since (R K)ᵀ(R K) = Kᵀ D K for a row-selection R. Every term of FD is an
    inner product of rows, so after one (N1+N2)² Gram matrix a replicate costs an SVD of about 0.63 N1 × 0.63 N2
    (the expected share of distinct rows is 1 - 1/e) instead of an N1×d by d×N2 product and an N1×N2 SVD.
    The rows are centered on their pooled mean first, so the inner products carry no large common offset.
    """

    def __init__(self, x1: np.ndarray, x2: np.ndarray) -> None:
        self.n1, self.n2 = x1.shape[0], x2.shape[0]
        pooled = np.concatenate([x1, x2])
        pooled -= pooled.mean(axis=0)
        self.gram = pooled @ pooled.T
        self.norms = np.diagonal(self.gram).copy()

    def fd(self, idx1: np.ndarray, idx2: np.ndarray) -> float:
        """FD of the sets x1[idx1] and x2[idx2] (indices into each set, with repeats)."""
        u1, c1 = np.unique(idx1, return_counts=True)
        u2, c2 = np.unique(idx2, return_counts=True)
        n1, n2 = len(idx1), len(idx2)
        j2 = u2 + self.n1
        w1, w2 = c1 / n1, c2 / n2
        g11, g22, g12 = self.gram[np.ix_(u1, u1)], self.gram[np.ix_(j2, j2)], self.gram[np.ix_(u1, j2)]
        m11, m22 = w1 @ g11 @ w1, w2 @ g22 @ w2  # |mu1|², |mu2|²
        h12, h21 = g12 @ w2, w1 @ g12  # y_i·mu2, mu1·y_j
        m12 = w1 @ h12  # mu1·mu2
        trace1 = (c1 @ self.norms[u1] - n1 * m11) / (n1 - 1)
        trace2 = (c2 @ self.norms[j2] - n2 * m22) / (n2 - 1)
        centered = g12 - h12[:, None] - h21[None, :] + m12  # (y_i - mu1)·(y_j - mu2)
        centered *= np.sqrt(c1)[:, None]
        centered *= np.sqrt(c2)[None, :] / np.sqrt((n1 - 1) * (n2 - 1))
        return _combine(m11 + m22 - 2 * m12, trace1, trace2, _nuclear_norm(centered))


def _quantile_mc_error(sorted_values: np.ndarray, p: float) -> float:
    """Standard error of the p-quantile of B replicates from the spread of the order statistics around it: the
    rank of a sample quantile is Binomial(B, p), sd s = sqrt(B p (1 - p)), so SE ≈ (v[Bp + s] - v[Bp - s]) / 2
    (Efron & Tibshirani 1993, ch. 19, on the Monte-Carlo error of bootstrap interval endpoints)."""
    b = len(sorted_values)
    s = np.sqrt(b * p * (1 - p))
    hi = sorted_values[min(int(np.ceil(b * p + s)), b - 1)]
    lo = sorted_values[max(int(np.floor(b * p - s)), 0)]
    return float(hi - lo) / 2


def fd_bootstrap(
    feats1: FeatureArray,
    feats2: FeatureArray,
    n_boot: int = 100,
    alpha: float = 0.05,
    seed: int | None = 0,
    method: Method | Literal["gram"] = "auto",
    interval: Interval = "centred-percentile",
    estimate: float | None = None,
) -> BootstrapCI:
    """Bootstrap (1 - alpha) interval of FD, resampling both sets with replacement; deterministic for a given seed.

    Resampling adds duplicate rows, which raises FD's small-sample bias, so when N is not >> d the replicates sit
    above the point estimate (at 500 vs 500 same-distribution patches, all of them). Intervals, from the
    alpha/2 and 1-alpha/2 quantiles (q_lo, q_hi) of the replicates:
    - "centred-percentile" (default): the percentile interval of the replicates shifted by the bootstrap estimate
      of the bias, median(FD*) - FD: (q_lo - b, q_hi - b), floored at 0. The median (not the mean) is the
      estimate of the center, so the interval contains FD by construction: q_lo <= median <= q_hi.
    - "percentile": (q_lo, q_hi), the spread of FD_N itself; near zero it can lie wholly above FD.
    - "basic": (2·FD - q_hi, 2·FD - q_lo) (Efron & Tibshirani 1993, ch. 13); near zero it can lie wholly
      below FD (FD 0.2795 with [0, 0.2018] at 500 vs 500 patches).
    Replicates use the pooled Gram matrix (`_GramResampler`) when both N < d ("auto"), else `method`'s route.
    `estimate` is the FD the interval goes with, when the caller has it already (else it is computed here).
    """
    if n_boot < 2:
        raise MetricInputError(f"n_boot must be >= 2, got {n_boot}")
    if not 0.0 < alpha < 1.0:
        raise MetricInputError(f"alpha must be in (0, 1), got {alpha}")
    if interval not in _INTERVALS:
        raise MetricInputError(f"unknown interval {interval!r}; use one of {', '.join(_INTERVALS)}")
    x1, x2 = _two_feature_sets(feats1, feats2)
    if method == "auto":
        method = "gram" if max(x1.shape[0], x2.shape[0]) < x1.shape[1] else "cov"
    if method not in ("gram", "cov", "lowrank"):
        raise MetricInputError(f"unknown FD method {method!r}; use 'auto', 'gram', 'cov' or 'lowrank'")
    resampler = _GramResampler(x1, x2) if method == "gram" else None
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for i in range(n_boot):
        idx1 = rng.integers(0, x1.shape[0], x1.shape[0])
        idx2 = rng.integers(0, x2.shape[0], x2.shape[0])
        values[i] = resampler.fd(idx1, idx2) if resampler else _fd_matrices(x1[idx1], x2[idx2], method)
    if estimate is not None:
        point = float(estimate)
    else:
        point = 0.0 if np.array_equal(x1, x2) else _fd_matrices(x1, x2, "lowrank" if method == "gram" else method)
    ordered = np.sort(values)
    q_lo, q_hi = (float(q) for q in np.quantile(ordered, [alpha / 2, 1 - alpha / 2]))
    mc_error = (_quantile_mc_error(ordered, alpha / 2), _quantile_mc_error(ordered, 1 - alpha / 2))
    if interval == "centred-percentile":
        bias = float(np.median(ordered)) - point
        low, high = max(q_lo - bias, 0.0), max(q_hi - bias, 0.0)
    elif interval == "basic":
        low, high = max(2 * point - q_hi, 0.0), max(2 * point - q_lo, 0.0)
        mc_error = mc_error[::-1]
    else:
        low, high = q_lo, q_hi
    return BootstrapCI(low, high, point, interval, n_boot, method, mc_error)


def fd_bootstrap_ci(
    feats1: FeatureArray,
    feats2: FeatureArray,
    n_boot: int = 100,
    alpha: float = 0.05,
    seed: int | None = 0,
    method: Method | Literal["gram"] = "auto",
    interval: Interval = "percentile",
) -> tuple[float, float]:
    """(low, high) of `fd_bootstrap` (default interval "percentile", as before the centered one existed)."""
    ci = fd_bootstrap(feats1, feats2, n_boot, alpha, seed, method, interval)
    return ci.low, ci.high
