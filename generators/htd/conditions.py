"""HTD's condition: c = concat(M, C_1..C_K) from a tissue map and an image (numpy only, no torch).

- M: the tissue map as K one-hot channels (ignore pixels, id 255, are all-zero);
- C_i: a sparse image-sized tensor holding one square d_i x d_i crop of the image taken inside class i's region,
  left at the place it was cut from (as the precursor code does; `CropConfig.placement="corner"` moves it to the
  top-left corner instead, so outputs cannot simply contain the crop's real pixels); 3 channels per class, values
  in [-1, 1], zero elsewhere and for absent classes. Width 4K; a model trained on several granularities pads to the largest K.
- crop side: d_i = d_base * (1 + alpha * complexity_i), clipped to [d_min, d_max] and to the largest square that
  fits inside the region; complexity_i is the share of the region's pixels on its boundary.
- heterogeneous patches: the most frequent class covers at most `hi` and the second at least `lo` (HTD: 20-80 %).
- curriculum: k'(t) = k_min + (k_max - k_min) * min(1, t / T_warmup), snapped down to an available k.

The per-class crop boxes and `curriculum_k` are written here because histosynth.labels (where the pseudo-label
pipeline's versions live) had not landed when this was written; the two should be folded together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from histosynth.classes import IGNORE_ID
from histosynth.generators.diffusion.presets import CropConfig, CurriculumConfig


def one_hot(tissue: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, H, W) float32 one-hot of a uint8 map; ignore pixels are all-zero; ids >= K raise."""
    ids = tissue.astype(np.int64)
    labelled = ids != IGNORE_ID
    if labelled.any() and ids[labelled].max() >= num_classes:
        raise ValueError(f"tissue map has class id {int(ids[labelled].max())} but the model has {num_classes} classes")
    out = np.zeros((num_classes, *tissue.shape), np.float32)
    rows, cols = np.nonzero(labelled)
    out[ids[rows, cols], rows, cols] = 1.0
    return out


def region_complexity(mask: np.ndarray) -> float:
    """Share of the region's pixels that touch (4-neighbourhood) a pixel outside it or the patch edge; 0 if empty."""
    area = int(mask.sum())
    if area == 0:
        return 0.0
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & mask
    return float((area - int(interior.sum())) / area)


def _window_full(mask: np.ndarray, d: int) -> np.ndarray:
    """Boolean (H-d+1, W-d+1): whether the d x d window at each top-left corner lies fully inside `mask`."""
    integral = np.pad(mask.astype(np.int32), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = integral[d:, d:] - integral[:-d, d:] - integral[d:, :-d] + integral[:-d, :-d]
    return sums == d * d


def largest_square(mask: np.ndarray) -> int:
    """Side of the largest axis-aligned square inside `mask` (binary search on window sums)."""
    lo, hi = 0, min(mask.shape)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _window_full(mask, mid).any():
            lo = mid
        else:
            hi = mid - 1
    return lo


def crop_side(mask: np.ndarray, config: CropConfig) -> int:
    """The adaptive crop side for a class region (pixels), before fitting it into the region."""
    size = min(mask.shape)
    d = config.d_base * size * (1.0 + config.alpha * region_complexity(mask))
    return int(round(np.clip(d, config.d_min * size, config.d_max * size)))


def crop_boxes(tissue: np.ndarray, rng: np.random.Generator, config: CropConfig,
               classes: Sequence[int] | None = None) -> dict[int, tuple[int, int, int]]:
    """{class id: (row, col, side)} of one crop per present class, uniformly placed among the fitting positions."""
    present = [int(c) for c in np.unique(tissue) if c != IGNORE_ID] if classes is None else list(classes)
    boxes: dict[int, tuple[int, int, int]] = {}
    for class_id in present:
        mask = tissue == class_id
        if not mask.any():
            continue
        side = min(crop_side(mask, config), largest_square(mask))
        rows, cols = np.nonzero(_window_full(mask, side))
        pick = int(rng.integers(len(rows)))
        boxes[class_id] = (int(rows[pick]), int(cols[pick]), side)
    return boxes


def pack_crops(tissue: np.ndarray, image: np.ndarray, num_classes: int, rng: np.random.Generator,
               config: CropConfig) -> np.ndarray:
    """HTD's (4K, H, W) float32 condition: K one-hot channels, then 3 crop channels per class (in [-1, 1])."""
    h, w = tissue.shape
    out = np.zeros((4 * num_classes, h, w), np.float32)
    out[:num_classes] = one_hot(tissue, num_classes)
    scaled = image.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    if config.placement not in ("source", "corner"):
        raise ValueError(f"crop placement must be 'source' or 'corner', not {config.placement!r}")
    for class_id, (r, c, d) in crop_boxes(tissue, rng, config).items():
        base = num_classes + 3 * class_id
        at_r, at_c = (r, c) if config.placement == "source" else (0, 0)
        out[base : base + 3, at_r : at_r + d, at_c : at_c + d] = scaled[:, r : r + d, c : c + d]
    return out


def crop_pixels(tissue: np.ndarray, image: np.ndarray, rng: np.random.Generator,
                config: CropConfig) -> dict[int, np.ndarray]:
    """{class id: uint8 (d, d, 3) crop} with the same boxes `pack_crops` would draw (the embedding ablation)."""
    return {k: image[r : r + d, c : c + d] for k, (r, c, d) in crop_boxes(tissue, rng, config).items()}


def class_fractions(tissue: np.ndarray) -> np.ndarray:
    """Sorted (descending) fractions of the labelled pixels per class."""
    ids = tissue[tissue != IGNORE_ID]
    if ids.size == 0:
        return np.zeros(1)
    counts = np.bincount(ids.ravel())
    return np.sort(counts[counts > 0])[::-1] / ids.size


def is_heterogeneous(tissue: np.ndarray, lo: float, hi: float) -> bool:
    """HTD's patch rule: the main class covers at most `hi` and the second at least `lo` of the labelled pixels."""
    fractions = class_fractions(tissue)
    return len(fractions) >= 2 and fractions[0] <= hi and fractions[1] >= lo


def curriculum_k(step: int, total: int, ks: Sequence[int]) -> int:
    """HTD's granularity at `step` of a `total`-step warm-up, snapped down to the nearest available k."""
    ks = sorted(ks)
    target = ks[0] + (ks[-1] - ks[0]) * min(1.0, step / total if total > 0 else 1.0)
    return max(k for k in ks if k <= target + 1e-9)


@dataclass
class Curriculum:
    """Coarsens finest-level pseudo maps to the granularity of the current step."""

    config: CurriculumConfig

    def __post_init__(self) -> None:
        finest = max(self.config.ks)
        self._luts = {}
        for k in self.config.ks:
            if k == finest:
                continue
            lut = self.config.luts.get(k, self.config.luts.get(str(k)))  # type: ignore[call-overload]
            if lut is None:
                raise ValueError(f"curriculum: no lookup table from k={finest} to k={k}")
            full = np.full(256, IGNORE_ID, np.uint8)
            full[: len(lut)] = np.asarray(lut, np.uint8)
            self._luts[k] = full

    @property
    def max_classes(self) -> int:
        """Condition width needed: the finest k plus background."""
        return max(self.config.ks) + 1

    def apply(self, tissue: np.ndarray, step: int) -> np.ndarray:
        """The map at this step's granularity (unchanged at the finest level)."""
        k = curriculum_k(step, self.config.warmup_steps, self.config.ks)
        return tissue if k not in self._luts else self._luts[k][tissue]
