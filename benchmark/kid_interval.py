"""A bootstrap confidence interval for KID (the unbiased MMD² with KID's cubic polynomial kernel).

`kid` reports a mean over subsets and their spread, which says how much the subsets differ, not how much KID
would change with other samples of the two distributions. This interval resamples both sets with replacement and
recomputes the unbiased MMD² of the whole resampled sets, leaving out the pairs that a resample made from one
original sample twice (a point paired with its own copy would count k(x, x) as a between-sample similarity and
bias every replicate upward). Replicates use the kernel matrices of the original sets, so B replicates cost B
index gathers, not B kernel evaluations. Interval: percentile, at the given confidence.

With equal set sizes and no resampling the statistic is exactly `kid(x, y, subset_size=N)` (tested); with unequal
sizes it is the two-sample U-statistic whose expectation KID's subset average also estimates.
"""

from __future__ import annotations

import numpy as np

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.kid import poly_kernel
from histosynth.benchmark.stats import FeatureArray, as_feature_matrix


def _mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of the resampled sets x[a], y[b], without the pairs of copies of one original sample."""
    xx = kxx[np.ix_(a, a)]
    yy = kyy[np.ix_(b, b)]
    keep_x = a[:, None] != a[None, :]
    keep_y = b[:, None] != b[None, :]
    return float(xx[keep_x].mean() + yy[keep_y].mean() - 2.0 * kxy[np.ix_(a, b)].mean())


def kid_bootstrap_ci(feats1: FeatureArray, feats2: FeatureArray, n_boot: int = 200, confidence: float = 0.95,
                     seed: int = 0, degree: int = 3, gamma: float | None = None, coef0: float = 1.0
                     ) -> tuple[float, float, float]:
    """(unbiased MMD² of the whole sets, interval low, interval high) for two (N_i, d) feature sets."""
    x = as_feature_matrix(feats1, "feats1")
    y = as_feature_matrix(feats2, "feats2")
    if x.shape[1] != y.shape[1]:
        raise MetricInputError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 3 or len(y) < 3:
        raise MetricInputError(f"a KID interval needs at least 3 samples per set (got {len(x)} and {len(y)})")
    gamma = 1.0 / x.shape[1] if gamma is None else float(gamma)
    kxx, kyy, kxy = (poly_kernel(p, q, gamma, coef0, degree) for p, q in ((x, None), (y, None), (x, y)))
    point = _mmd2(kxx, kyy, kxy, np.arange(len(x)), np.arange(len(y)))
    rng = np.random.default_rng(seed)
    draws = np.array([_mmd2(kxx, kyy, kxy, rng.integers(0, len(x), len(x)), rng.integers(0, len(y), len(y)))
                      for _ in range(n_boot)])
    alpha = 1.0 - confidence
    low, high = np.nanquantile(draws, [alpha / 2, 1 - alpha / 2])  # NaN only if a resample repeats one sample
    return point, float(low), float(high)


__all__ = ["kid_bootstrap_ci"]
