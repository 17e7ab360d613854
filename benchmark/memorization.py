r"""Memorization (training-set copy) detection by the nearest-neighbor distance ratio.

Definition (Yoon et al. 2023, "Diffusion probabilistic models generalize when they fail to memorize", ICML
workshop on structured probabilistic inference; adopted by Gu et al. 2023, "On memorization in diffusion models",
arXiv 2310.02664):
a generated sample x is a copy of the training set T when

    ratio(x) = ||x - NN_1(x)||₂ / ||x - NN_2(x)||₂  <  1/3

with NN_1, NN_2 its nearest and second-nearest training samples. A copy sits much closer to one training sample
than to any other; a novel sample near a dense region has a ratio near 1. The papers use pixels; any feature space
works (encoder features make the test robust to small shifts). The fraction of flagged samples is the
memorization rate. Nearest neighbors are found blockwise (bounded memory), then the two distances are
recomputed directly as ||x - t||₂, which is exact for near-copies where |a|² + |b|² - 2a·b cancels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.prdc import DEFAULT_CHUNK, knn_sq_distances
from histosynth.benchmark.stats import FeatureArray, as_feature_matrix

DEFAULT_THRESHOLD = 1.0 / 3.0


@dataclass(frozen=True)
class MemorizationResult:
    """Per synthetic sample: d1/d2 ratio, nearest training index and both distances; plus the flagged samples."""

    ratios: np.ndarray  # (M,) d1 / d2, 0 where d1 == 0
    nearest_index: np.ndarray  # (M,) index of NN_1 in the training set
    nearest_distance: np.ndarray  # (M,) d1
    second_distance: np.ndarray  # (M,) d2
    flagged: np.ndarray  # indices of synthetic samples with ratio < threshold
    threshold: float

    @property
    def fraction(self) -> float:
        """Fraction of synthetic samples flagged as copies."""
        return float(len(self.flagged) / len(self.ratios)) if len(self.ratios) else 0.0

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """Clopper-Pearson (exact binomial) interval of the flagged fraction over the synthetic samples."""
        return binomial_interval(len(self.flagged), len(self.ratios), confidence)


def binomial_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of successes / trials (scipy's beta quantiles; (0, 1) for no trials)."""
    from scipy.stats import beta

    if trials <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


def memorization_ratios(
    synthetic: FeatureArray,
    train: FeatureArray,
    threshold: float = DEFAULT_THRESHOLD,
    chunk_size: int = DEFAULT_CHUNK,
    device: torch.device | str | None = None,
) -> MemorizationResult:
    """NN distance ratio d1/d2 of each synthetic sample against the training set; ratio < threshold flags a copy.

    synthetic: (M, d); train: (N, d) with N >= 2 (images: flatten them first). Computed in float64.
    """
    if not 0.0 < threshold <= 1.0:
        raise MetricInputError(f"threshold must be in (0, 1], got {threshold}")
    syn = as_feature_matrix(synthetic, "synthetic")
    ref = as_feature_matrix(train, "train")
    if syn.shape[1] != ref.shape[1]:
        raise MetricInputError(f"feature dimensions differ: synthetic {syn.shape[1]} vs train {ref.shape[1]}")
    if ref.shape[0] < 2:
        raise MetricInputError(f"the distance ratio needs at least 2 training samples, got {ref.shape[0]}")
    center = ref.mean(axis=0)
    dev = device or "cpu"
    _, idx = knn_sq_distances(
        torch.from_numpy(syn - center).to(dev), torch.from_numpy(ref - center).to(dev), 2, chunk_size
    )
    idx = idx.cpu().numpy()
    # Exact distances to the two candidates (the expansion used for the search loses digits for near-copies).
    dist = np.empty(idx.shape)
    for start in range(0, syn.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        for j in range(2):
            dist[rows, j] = np.linalg.norm(syn[rows] - ref[idx[rows, j]], axis=1)
    order = np.argsort(dist, axis=1, kind="stable")
    dist = np.take_along_axis(dist, order, axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    d1, d2 = dist[:, 0], dist[:, 1]
    ratios = np.divide(d1, d2, out=np.zeros_like(d1), where=d1 > 0)
    return MemorizationResult(
        ratios=ratios,
        nearest_index=idx[:, 0],
        nearest_distance=d1,
        second_distance=d2,
        flagged=np.flatnonzero(ratios < threshold),
        threshold=float(threshold),
    )
