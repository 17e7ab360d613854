r"""Precision, recall, density and coverage (PRDC) of generated features against real ones, with k-NN balls.

Definitions from Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models" (ICML), as
in clovaai's `prdc` package and dgm-eval's `metrics/prdc.py` (precision/recall after Kynkäänniemi et al. 2019).
With B(x, r) the Euclidean ball and NND_k(x) the distance from x to its k-th nearest neighbor in its own set
(excluding itself), for reals X_1..X_N and fakes Y_1..Y_M:

    precision = 1/M Σ_j 1[∃ i: Y_j ∈ B(X_i, NND_k(X_i))]
    recall    = 1/N Σ_i 1[∃ j: X_i ∈ B(Y_j, NND_k(Y_j))]
    density   = 1/(kM) Σ_j Σ_i 1[Y_j ∈ B(X_i, NND_k(X_i))]
    coverage  = 1/N Σ_i 1[∃ j: Y_j ∈ B(X_i, NND_k(X_i))]

"∈ B" is the strict `d < r` of the `prdc` package; torch-fidelity's PRC uses `d <= r`, which differs only on exact
ties (e.g. fakes that duplicate reals). Distances are computed in blocks of `chunk_size`² (float64 by default), so
memory stays O(chunk_size² + (N + M) k) and 50k × 50k sets need no N² matrix.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np
import torch

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.stats import FeatureArray, as_feature_matrix
from histosynth.deprecated import renamed_names

DEFAULT_CHUNK = 2048


class DegenerateNeighborhoods(MetricInputError):
    """Every k-NN radius of a set is 0 (each sample has >= k exact duplicates, e.g. all samples identical): its
    balls B(x, 0) are empty under the strict `d < r`, so PRDC would read 0 whatever the other set is."""


class PRDCResult(NamedTuple):
    """Precision, recall, density, coverage (density may exceed 1)."""

    precision: float
    recall: float
    density: float
    coverage: float


def _to_torch(x: np.ndarray, device: torch.device | str | None, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(x).to(device=device or "cpu", dtype=dtype)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _sq_dist_block(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances |a|² + |b|² - 2 a·b, clamped at 0."""
    block = a_sq[:, None] + b_sq[None, :]
    block.addmm_(a, b.T, alpha=-2.0)
    return block.clamp_(min=0.0)


def knn_sq_distances(
    queries: torch.Tensor,
    keys: torch.Tensor | None,
    k: int,
    chunk_size: int = DEFAULT_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """k smallest squared distances (ascending) from each query row to the key rows, and their key indices.

    keys=None searches the queries themselves: each point is then its own first neighbor at distance exactly 0,
    and only blocks on or above the diagonal are computed (the distance matrix is symmetric). Blockwise with a
    running top-k, so memory is O(chunk_size² + n·k).
    """
    same = keys is None
    keys = queries if keys is None else keys
    if keys.shape[0] < k:
        raise MetricInputError(f"need at least {k} reference samples for a {k}-NN search, got {keys.shape[0]}")
    n = queries.shape[0]
    best_d = torch.full((n, k), float("inf"), dtype=queries.dtype, device=queries.device)
    best_i = torch.full((n, k), -1, dtype=torch.int64, device=queries.device)

    def fold(rows: slice, block: torch.Tensor, col_start: int) -> None:
        d, i = torch.topk(block, min(k, block.shape[1]), dim=1, largest=False, sorted=True)
        d = torch.cat([best_d[rows], d], dim=1)
        i = torch.cat([best_i[rows], i + col_start], dim=1)
        d, pos = torch.topk(d, k, dim=1, largest=False, sorted=True)
        best_d[rows] = d
        best_i[rows] = torch.gather(i, 1, pos)

    q_sq = (queries * queries).sum(dim=1)
    k_sq = q_sq if same else (keys * keys).sum(dim=1)
    for rows in _chunks(n, chunk_size):
        for cols in _chunks(keys.shape[0], chunk_size):
            if same and cols.start < rows.start:
                continue  # already folded in as the transpose of block (cols, rows)
            block = _sq_dist_block(queries[rows], keys[cols], q_sq[rows], k_sq[cols])
            if same and cols.start == rows.start:
                block.fill_diagonal_(0.0)
            fold(rows, block, cols.start)
            if same and cols.start != rows.start:
                fold(cols, block.T, rows.start)
    return best_d, best_i


def knn_radii(
    features: FeatureArray,
    nearest_k: int = 5,
    chunk_size: int = DEFAULT_CHUNK,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Distance from each sample to its k-th nearest neighbor in the same set, excluding itself."""
    x_np = as_feature_matrix(features)
    x = _to_torch(x_np - x_np.mean(axis=0), device, torch.float64)
    sq, _ = knn_sq_distances(x, None, nearest_k + 1, chunk_size)
    return sq[:, nearest_k].sqrt().cpu().numpy()


def compute_prdc(
    real_features: FeatureArray,
    fake_features: FeatureArray,
    nearest_k: int = 5,
    chunk_size: int = DEFAULT_CHUNK,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
) -> PRDCResult:
    """PRDC of fake (generated) features against real ones, k = `nearest_k` (5 as in dgm-eval and clovaai).

    Same values as `prdc.compute_prdc(real, fake, nearest_k)`; `chunk_size` only bounds memory. Features are
    centered on the real mean before the |a|² + |b|² - 2a·b expansion to limit cancellation.
    """
    if nearest_k < 1:
        raise MetricInputError(f"nearest_k must be >= 1, got {nearest_k}")
    if chunk_size < 1:
        raise MetricInputError(f"chunk_size must be >= 1, got {chunk_size}")
    real_np = as_feature_matrix(real_features, "real_features")
    fake_np = as_feature_matrix(fake_features, "fake_features")
    if real_np.shape[1] != fake_np.shape[1]:
        raise MetricInputError(f"feature dimensions differ: real {real_np.shape[1]} vs fake {fake_np.shape[1]}")
    for x, name in ((real_np, "real"), (fake_np, "fake")):
        if x.shape[0] < nearest_k + 1:
            raise MetricInputError(f"PRDC with k={nearest_k} needs at least {nearest_k + 1} {name} samples, "
                                   f"got {x.shape[0]}")
    center = real_np.mean(axis=0)
    real = _to_torch(real_np - center, device, dtype)
    fake = _to_torch(fake_np - center, device, dtype)

    # Squared k-NN radii (index k: index 0 is the point itself).
    real_r2 = knn_sq_distances(real, None, nearest_k + 1, chunk_size)[0][:, nearest_k]
    fake_r2 = knn_sq_distances(fake, None, nearest_k + 1, chunk_size)[0][:, nearest_k]
    for r2, x, name in ((real_r2, real, "real"), (fake_r2, fake, "fake")):
        # |a|² + |b|² - 2a·b of equal rows is 0 up to the dot products' rounding, <= d·eps·|a|² each (Higham, γ_d)
        noise = 4 * x.shape[1] * torch.finfo(dtype).eps * float((x * x).sum(dim=1).max())
        if not bool((r2 > noise).any()):
            raise DegenerateNeighborhoods(f"every {name} sample has at least {nearest_k} exact duplicates among the "
                                           f"{name} features (all k-NN radii are 0, e.g. identical features), so "
                                           "every k-NN ball is empty")

    real_sq = (real * real).sum(dim=1)
    fake_sq = (fake * fake).sum(dim=1)
    n_real, n_fake = real.shape[0], fake.shape[0]
    fake_in_any = torch.zeros(n_fake, dtype=torch.bool, device=real.device)
    fake_ball_count = torch.zeros(n_fake, dtype=torch.int64, device=real.device)
    real_in_any = torch.zeros(n_real, dtype=torch.bool, device=real.device)
    real_nn_fake = torch.full((n_real,), float("inf"), dtype=dtype, device=real.device)
    for rows in _chunks(n_real, chunk_size):
        for cols in _chunks(n_fake, chunk_size):
            d2 = _sq_dist_block(real[rows], fake[cols], real_sq[rows], fake_sq[cols])
            inside_real = d2 < real_r2[rows, None]  # fake j inside real i's ball
            fake_in_any[cols] |= inside_real.any(dim=0)
            fake_ball_count[cols] += inside_real.sum(dim=0)
            real_in_any[rows] |= (d2 < fake_r2[None, cols]).any(dim=1)
            real_nn_fake[rows] = torch.minimum(real_nn_fake[rows], d2.min(dim=1).values)
    return PRDCResult(
        precision=float(fake_in_any.double().mean()),
        recall=float(real_in_any.double().mean()),
        density=(1.0 / nearest_k) * (float(fake_ball_count.sum()) / n_fake),
        coverage=float((real_nn_fake < real_r2).double().mean()),
    )


__getattr__ = renamed_names(__name__, {"DegenerateNeighbourhoods": "DegenerateNeighborhoods"}, globals())
