"""HTD's condition: c = concat(M, C_1..C_K) from a tissue map and an image (numpy only, no torch).

- M: the tissue map as K one-hot channels (ignore pixels, id 255, are all-zero);
- C_i: a sparse image-sized tensor holding one square d_i x d_i crop of the image taken inside class i's region,
  left at the place it was cut from (as the precursor code does; `CropConfig.placement="corner"` moves it to the
  top-left corner instead, so outputs cannot simply contain the crop's real pixels; "none" leaves every crop
  channel zero: the map alone, for scoring a model with no real pixels to paste); 3 channels per class, values
  in [-1, 1], zero elsewhere and for absent classes. Background (id 0, glass) gets a one-hot channel but no crop,
  as in the precursor's PANDA packing. Width 4K; a model trained on several granularities pads to the largest K.

The rules themselves live in histosynth.labels, shared with the pseudo-label pipeline and `histosynth data
sample`: crop sizes and places in `labels.heterogeneity.class_crops` (d_i = d_base (1 + alpha complexity_i),
complexity = 1 - 4 pi A / P^2), the 20-80% patch rule in `labels.heterogeneity.is_heterogeneous`, and the
coarse-to-fine granularity k'(t) in `labels.curriculum.curriculum_k`. This module only maps the preset's
CropConfig / CurriculumConfig onto them and packs the tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histosynth.classes import IGNORE_ID
from histosynth.generators.diffusion.presets import CropConfig, CurriculumConfig
from histosynth.labels.curriculum import curriculum_k
from histosynth.labels.heterogeneity import PAPER_PATCH, CropSizing, class_crops

PLACEMENTS = ("source", "corner", "none")


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


def crop_sizing(config: CropConfig) -> CropSizing:
    """The preset's crop sizes (fractions of the patch side) as labels' CropSizing (pixels at 256 px)."""
    return CropSizing(d_base=config.d_base * PAPER_PATCH, alpha=config.alpha, d_min=config.d_min * PAPER_PATCH,
                      d_max=config.d_max * PAPER_PATCH, reference=PAPER_PATCH)


def crop_boxes(tissue: np.ndarray, rng: np.random.Generator, config: CropConfig) -> dict[int, tuple[int, int, int]]:
    """{class id: (row, col, side)} of one crop per present tissue class, placed uniformly among fitting windows."""
    crops = class_crops(tissue, crop_sizing(config), min_purity=config.min_purity, rng=rng)
    return {c.class_id: (c.top, c.left, c.size) for c in crops}


def pack_crops(tissue: np.ndarray, image: np.ndarray, num_classes: int, rng: np.random.Generator,
               config: CropConfig) -> np.ndarray:
    """HTD's (4K, H, W) float32 condition: K one-hot channels, then 3 crop channels per class (in [-1, 1])."""
    if config.placement not in PLACEMENTS:
        raise ValueError(f"crop placement must be one of {', '.join(PLACEMENTS)}, not {config.placement!r}")
    h, w = tissue.shape
    out = np.zeros((4 * num_classes, h, w), np.float32)
    out[:num_classes] = one_hot(tissue, num_classes)
    if config.placement == "none":
        return out
    scaled = image.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    for class_id, (r, c, d) in crop_boxes(tissue, rng, config).items():
        base = num_classes + 3 * class_id
        at_r, at_c = (r, c) if config.placement == "source" else (0, 0)
        out[base : base + 3, at_r : at_r + d, at_c : at_c + d] = scaled[:, r : r + d, c : c + d]
    return out


def crop_pixels(tissue: np.ndarray, image: np.ndarray, rng: np.random.Generator,
                config: CropConfig) -> dict[int, np.ndarray]:
    """{class id: uint8 (d, d, 3) crop} with the same boxes `pack_crops` would draw (the embedding ablation)."""
    return {k: image[r : r + d, c : c + d] for k, (r, c, d) in crop_boxes(tissue, rng, config).items()}


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

    def k_at(self, step: int) -> int:
        """The granularity trained at `step`: the finest once the warm-up is over (or when there is none)."""
        if self.config.warmup_steps < 1:
            return max(self.config.ks)
        return curriculum_k(step, self.config.warmup_steps, self.config.ks, schedule=self.config.schedule)

    def apply(self, tissue: np.ndarray, step: int) -> np.ndarray:
        """The map at this step's granularity (unchanged at the finest level)."""
        k = self.k_at(step)
        return tissue if k not in self._luts else self._luts[k][tissue]
