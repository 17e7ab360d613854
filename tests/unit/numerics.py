"""Rounding-error bounds for test tolerances, computed from the data a test uses (Higham 2002, "Accuracy and
Stability of Numerical Algorithms", 2nd ed.; chapter and theorem cited at each function).

A tolerance taken from one run holds on the CPU and BLAS kernel it was measured on; these bounds hold for any
IEEE-754 machine and any summation order or blocking a BLAS may choose (thread count, kernel), which is what makes
the metric tests pass on every CPU. They are worst-case bounds, so usually loose by 1-3 orders of magnitude.
Deep float32 networks have no useful a-priori bound (products of |W| over many layers): for them the rounding is
measured on the test's own data against a float64 copy of the network (`float32_rounding`).
"""

from __future__ import annotations

import numpy as np

EPS64 = float(np.finfo(np.float64).eps)  # unit roundoff u = EPS / 2; bounds below use EPS, a factor 2 of slack
EPS32 = float(np.finfo(np.float32).eps)


def gamma(n: int, eps: float = EPS64) -> float:
    """Higham's γ_n = n·u / (1 - n·u) (Lemma 3.1): the relative error bound of n chained roundings, and of a sum or
    dot product of n terms in any order (§3.1, §4.2), relative to the sum of the terms' absolute values."""
    return n * eps / (1 - n * eps)


def sum_error(terms: np.ndarray, axis: int | None = None, eps: float = EPS64) -> np.ndarray:
    """Bound on the rounding error of summing `terms` along `axis` in any order: γ_{n-1} Σ|t| (Higham eq. 4.4)."""
    terms = np.asarray(terms, dtype=np.float64)
    n = terms.size if axis is None else terms.shape[axis]
    return gamma(max(n - 1, 1), eps) * np.abs(terms).sum(axis=axis)


def _trace_bound(x: np.ndarray, resampled: bool) -> float:
    """tr Σ of x, or an upper bound on it over every bootstrap resample of x's rows when `resampled`:
    tr Σ_boot = Σ_r |y_r - ȳ|² / (n-1) <= Σ_r |y_r - c|² / (n-1) <= n/(n-1) max_r |x_r - c|² for any fixed c."""
    n = len(x)
    centered = x - x.mean(axis=0)
    if resampled:
        return float(n / (n - 1) * np.max(np.sum(centered**2, axis=1)))
    return float(np.sum(centered**2) / (n - 1))


def _sqrt_gaps(delta: float, eigenvalues: np.ndarray) -> float:
    """Σ_i |√μ_i - √λ_i| for |μ_i - λ_i| <= δ: each term <= min(√δ, δ/√λ_i) (|√a - √b| <= √|a-b|, and
    <= |a-b|/√b), with λ_i >= computed - δ."""
    low = np.maximum(np.asarray(eigenvalues, dtype=np.float64) - delta, np.finfo(np.float64).tiny)
    return float(np.sum(np.minimum(np.sqrt(delta), delta / np.sqrt(low))))


def cross_term_gap(cov1: np.ndarray, cov2: np.ndarray, rank: int | None = None, n_samples: int = 0,
                   non_symmetric: bool = False) -> float:
    """Bound on the error of tr (Σ1^½ Σ2 Σ1^½)^½ computed by any eigenvalue route: ours (Cholesky or eigh factor,
    eigvalsh), torch-fidelity's eigvals(Σ1Σ2), or sqrtm(Σ1Σ2) (pytorch-fid).

    Every route is backward stable: Cholesky ||ΔΣ||_2 <= γ_{d+1}·d·||Σ||_2 (Higham Thm 10.3), products γ_d (§3.5),
    the QR algorithm ~p(d)·u·||A|| (Golub & Van Loan §7.5.6), all inside γ_{d²}; `n_samples` adds the γ_n of
    forming the covariances from features. By Weyl (symmetric) or Bauer-Fike (Σ1Σ2 = V Λ V⁻¹ with
    κ(V) <= √κ(Σ1), `non_symmetric`), each eigenvalue moves by δ <= κ_V γ_{d²+n} tr Σ1 tr Σ2; `_sqrt_gaps` turns
    that into the square roots' error over the `rank` largest eigenvalues (all d when None).
    """
    d = cov1.shape[0]
    kappa_v = 1.0
    if non_symmetric:
        w = np.linalg.eigvalsh(cov1)
        kappa_v = float(np.sqrt(w[-1] / w[0]))
    delta = kappa_v * gamma(d * d + n_samples) * abs(np.trace(cov1)) * abs(np.trace(cov2))
    chol = np.linalg.cholesky(cov2) if np.all(np.linalg.eigvalsh(cov2) > 0) else None
    if chol is not None:
        eigenvalues = np.linalg.eigvalsh(chol.T @ cov1 @ chol)
    else:
        w, v = np.linalg.eigh(cov1)
        root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        eigenvalues = np.linalg.eigvalsh(root @ cov2 @ root)
    kept = eigenvalues[::-1][: d if rank is None else rank]
    return _sqrt_gaps(delta, kept)


def fd_stats_gap(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, rank: int | None = None,
                 n_samples: int = 0, non_symmetric: bool = False) -> float:
    """Bound on the error of FD = |Δμ|² + tr Σ1 + tr Σ2 - 2·cross computed from these statistics: twice the cross
    term's (`cross_term_gap`), plus the sums' γ (§4.2) over the terms' absolute values (the cancellation)."""
    d = len(mu1)
    cross = cross_term_gap(cov1, cov2, rank, n_samples, non_symmetric)
    magnitude = float(np.sum((mu1 - mu2) ** 2) + abs(np.trace(cov1)) + abs(np.trace(cov2)))
    return 2 * cross + gamma(2 * d + n_samples + 4) * 2 * magnitude


def lowrank_fd_error(x1: np.ndarray, x2: np.ndarray, resampled: bool = False) -> float:
    """Bound on the low-rank route's FD error: A1A2ᵀ formed to γ_d √(tr Σ1 tr Σ2) (§3.5), its singular values
    backward stable to γ_min(n1,n2) of that (Golub & Van Loan §8.6, Weyl for singular values), at most
    min(n1, n2) of them, counted twice; the traces and |Δμ|² summed to γ_{n·d} (§4.2) of their magnitude."""
    (n1, d), n2 = x1.shape, len(x2)
    t1, t2 = _trace_bound(x1, resampled), _trace_bound(x2, resampled)
    mean_term = float(np.sum((x1.mean(axis=0) - x2.mean(axis=0)) ** 2))
    cross = min(n1, n2) * gamma(d + min(n1, n2)) * np.sqrt(t1 * t2)
    return float(2 * cross + 2 * gamma(max(n1, n2) * d + 4) * (t1 + t2 + mean_term))


def fd_route_gap(x1: np.ndarray, x2: np.ndarray, resampled: bool = False) -> float:
    """Bound on |FD_cov - FD_lowrank| for feature sets x1 (n1, d), x2 (n2, d) in float64; with `resampled`, for any
    bootstrap resample of their rows (duplicate rows lower the rank, so the covariance route's min(n1,n2)-1 kept
    eigenvalues may include rounding noise: no eigenvalue can be trusted to be large, each costs up to √δ).

    Covariance route: `cross_term_gap` with the γ_n of forming A_iᵀA_i; its eigenvalues are the squared singular
    values of A1A2ᵀ (zero beyond its rank). Low-rank route: `lowrank_fd_error`.
    """
    (n1, d), n2 = x1.shape, len(x2)
    t1, t2 = _trace_bound(x1, resampled), _trace_bound(x2, resampled)
    rank = min(n1, n2) - 1
    delta = gamma(d * d + n1 + n2) * t1 * t2
    if resampled:
        cov_cross = rank * np.sqrt(delta)
    else:
        a1 = (x1 - x1.mean(axis=0)) / np.sqrt(n1 - 1)
        a2 = (x2 - x2.mean(axis=0)) / np.sqrt(n2 - 1)
        squares = np.zeros(rank)
        s = np.linalg.svd(a1 @ a2.T, compute_uv=False)[:rank] ** 2
        squares[: len(s)] = s
        cov_cross = _sqrt_gaps(delta, squares)
    return float(2 * cov_cross + lowrank_fd_error(x1, x2, resampled))


def moment_errors(x: np.ndarray) -> tuple[float, float]:
    """Bounds on the normwise relative errors (max |error| / max |value|) of the mean and the covariance of x (n, d)
    computed in float64 by any summation order, batching, merging or shift s inside the data's column ranges R
    (the streaming stats' first-batch mean, np.cov's mean): sums of n terms |x - s| <= R to γ_n of n·R (Higham
    §4.2), outer-product sums to γ_n of n·R², the mean correction Σ·Σᵀ/n and a merge's cross terms to a few γ of
    the same; plus one rounding of |x| for the mean's shift."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    r = float(np.ptp(x, axis=0).max())
    mean_err = gamma(n + 2) * r + EPS64 * float(np.abs(x).max())
    cov_err = 4 * gamma(n + 8) * n / (n - 1) * r**2
    mean_scale = float(np.abs(x.mean(axis=0)).max())
    cov_scale = float(np.abs(np.cov(x, rowvar=False)).max())
    return mean_err / mean_scale, cov_err / cov_scale


def sq_distance_error(*sets: np.ndarray) -> float:
    """Bound on the error of a squared Euclidean distance between rows of these sets computed in float64 by any
    route (direct differences, or |a|² + |b|² - 2a·b after centring on the first set's mean as our PRDC does):
    three dot products of d terms, each within γ_{d+3} of Σ|a||b| <= (2M)² (Higham §3.1), M the largest centered
    row norm."""
    center = sets[0].mean(axis=0)
    m = max(float(np.sqrt(np.sum((s - center) ** 2, axis=1)).max()) for s in sets)
    return 3 * gamma(sets[0].shape[1] + 3) * (2 * m) ** 2


def knn_ball_margin(real: np.ndarray, fake: np.ndarray, k: int) -> float:
    """Smallest |d² - r²| over every comparison PRDC makes (fakes against real k-NN radii, reals against fake
    radii), in units of `sq_distance_error`. Above 4, every implementation's comparisons (two computed squared
    distances, each within one unit of the exact value and of each other's) come out the same: counts agree
    exactly, not by luck."""
    import scipy.spatial.distance

    def sq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return scipy.spatial.distance.cdist(a, b, "sqeuclidean")

    real_r2 = np.sort(sq(real, real), axis=1)[:, k]
    fake_r2 = np.sort(sq(fake, fake), axis=1)[:, k]
    cross = sq(real, fake)
    gap = min(float(np.abs(cross - real_r2[:, None]).min()), float(np.abs(cross - fake_r2[None, :]).min()))
    return gap / sq_distance_error(real, fake)


def kid_error(x1: np.ndarray, x2: np.ndarray, degree: int = 3) -> float:
    """Bound on the error of one unbiased MMD² with the polynomial kernel (x·y/d + 1)^degree, computed in float64 on
    any subsets of x1 and x2: each kernel entry within (degree·γ_{d+2} + γ_degree) of its absolute value
    K = (Σ|x||y|/d + 1)^degree (a dot product, Higham §3.1, then degree-1 products), the sums of up to m² entries
    within γ_{m²} of Σ K (§4.2), and the estimator adds up three means: 4 K_max each. It also bounds the mean
    and the (population) std over subsets, both 1-Lipschitz in the largest per-subset error."""
    both = np.abs(np.concatenate([x1, x2]))
    d, m = x1.shape[1], min(len(x1), len(x2))
    k_max = (float((both @ both.T).max()) / d + 1) ** degree
    return 4 * (degree * gamma(d + 2) + gamma(degree) + gamma(m * m)) * k_max


def float32_rounding(network, *inputs) -> float:
    """max |f32(x) - f64(x)| of a torch network on its inputs: this network's float32 rounding error on this data,
    measured against a float64 copy of it (the network itself is left in float32; a float32 output cast adds one
    rounding, EPS32/2 of the value, to the float64 side).

    Float32 routes that differ only in summation order (batch size, thread count, kernel blocking, process count)
    each sit this far from the float64 value, give or take the spread of a maximum over many roundings (whose
    size depends on the number and magnitude of terms, not on their order: Higham & Mary 2019, "A new approach to
    probabilistic rounding error analysis"), so two of them agree to within 2x this, 3x with that spread."""
    import copy

    import torch

    double_net = copy.deepcopy(network).double()
    for module in double_net.modules():  # torch-fidelity's Inception casts its uint8 input to this dtype itself
        if hasattr(module, "feature_extractor_internal_dtype"):
            module.feature_extractor_internal_dtype = torch.float64
    def cast(dtype):
        return [x.to(dtype) if x.is_floating_point() else x for x in inputs]

    with torch.inference_mode():
        single = network(*cast(torch.float32)).double()
        double = double_net(*cast(torch.float64)).double()
    return float((single - double).abs().max())
