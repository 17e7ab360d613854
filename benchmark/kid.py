r"""Kernel Inception Distance (KID): unbiased MMD² with a cubic polynomial kernel, averaged over random subsets.

Bińkowski et al. 2018, "Demystifying MMD GANs" (ICLR); the estimator follows MMD-GAN's `compute_scores.py` as
adapted in torch-fidelity's `metric_kid.py` (`mmd2(..., mmd_est="unbiased")`). With k(x, y) = (xᵀy / d + 1)³ and
subsets X, Y of m samples each:

    MMD²_u = [Σ_{i≠j} k(x_i, x_j) + Σ_{i≠j} k(y_i, y_j)] / (m (m - 1))  -  2 Σ_{i,j} k(x_i, y_j) / m²

KID is the mean of MMD²_u over `n_subsets` subsets (and its std, ddof=0). Subsets are drawn as torch-fidelity
draws them (`numpy.random.RandomState(seed)`, per subset `choice(n1, m, replace=False)` then
`choice(n2, m, replace=False)`), so with the same seed (torch-fidelity's default is 2020) the subsets, and hence
the values, agree with torch-fidelity; with m = N1 = N2 every subset is the whole of both sets, so the value is
computed once (`n_subsets` 1 in the result, std 0): torch-fidelity computes the same number `n_subsets` times.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.stats import FeatureArray, as_feature_matrix


class KIDResult(NamedTuple):
    """KID over subsets: mean and (population) standard deviation of MMD²_u, the subset size m and the number
    of distinct subsets computed (1 when m equals both set sizes)."""

    mean: float
    std: float
    subset_size: int
    n_subsets: int


def poly_kernel(a: np.ndarray, b: np.ndarray | None, gamma: float, coef0: float = 1.0, degree: float = 3) -> np.ndarray:
    """KID's kernel (a bᵀ γ + c)^degree; b=None means b = a (BLAS syrk, half the flops, exactly symmetric)."""
    k = a @ (a.T if b is None else b.T)
    k *= gamma
    k += coef0
    if float(degree).is_integer() and 1 <= degree <= 8:  # repeated products: ~30x faster than np.power
        base = k.copy()
        for _ in range(int(degree) - 1):
            k *= base
        return k
    return np.power(k, degree, out=k)


def _mmd2_unbiased_poly(x: np.ndarray, y: np.ndarray, gamma: float, coef0: float, degree: float) -> float:
    """Unbiased MMD² between two subsets of m samples each."""
    m = x.shape[0]
    k_xx = poly_kernel(x, None, gamma, coef0, degree)
    off_xx = k_xx.sum() - np.trace(k_xx)
    k_yy = poly_kernel(y, None, gamma, coef0, degree)
    off_yy = k_yy.sum() - np.trace(k_yy)
    sum_xy = poly_kernel(x, y, gamma, coef0, degree).sum()
    return float((off_xx + off_yy) / (m * (m - 1)) - 2.0 * sum_xy / (m * m))


def kid(
    feats1: FeatureArray,
    feats2: FeatureArray,
    n_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 2020,
    degree: float = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
) -> KIDResult:
    """KID between two (N_i, d) feature sets; subset size is min(subset_size, N1, N2); computed in float64.

    gamma defaults to 1/d. Each subset costs three m×m kernel matrices (timing: perf/RESULTS.md).
    """
    x1 = as_feature_matrix(feats1, "feats1")
    x2 = as_feature_matrix(feats2, "feats2")
    if x1.shape[1] != x2.shape[1]:
        raise MetricInputError(f"feature dimensions differ: {x1.shape[1]} vs {x2.shape[1]}")
    if n_subsets < 1:
        raise MetricInputError(f"n_subsets must be >= 1, got {n_subsets}")
    n1, n2, dim = x1.shape[0], x2.shape[0], x1.shape[1]
    m = min(subset_size, n1, n2)
    if m < 2:
        raise MetricInputError(f"KID needs at least 2 samples per set and subset_size >= 2 (got N1={n1}, N2={n2}, "
                               f"subset_size={subset_size})")
    gamma = 1.0 / dim if gamma is None else float(gamma)
    if m == n1 == n2:  # every subset is both whole sets (in some order, which MMD² ignores)
        return KIDResult(_mmd2_unbiased_poly(x1, x2, gamma, coef0, degree), 0.0, m, 1)

    rng = np.random.RandomState(seed)
    mmds = np.empty(n_subsets)
    for i in range(n_subsets):  # same draw order as torch-fidelity
        sub1 = x1[rng.choice(n1, m, replace=False)]
        sub2 = x2[rng.choice(n2, m, replace=False)]
        mmds[i] = _mmd2_unbiased_poly(sub1, sub2, gamma, coef0, degree)
    return KIDResult(float(np.mean(mmds)), float(np.std(mmds)), m, n_subsets)
