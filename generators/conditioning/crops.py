"""`HTDCrops`: HTD's condition c = concat(M, C_1..C_K) from a tissue map and the image it labels.

- M: the tissue map as K one-hot channels (`tissue.one_hot`);
- C_i: a sparse image-sized tensor holding one square d_i x d_i crop of the image taken inside class i's region,
  left where it was cut (`CropConfig.placement="source"`, as the precursor code does), moved to the top-left
  corner ("corner": outputs cannot simply contain the crop's real pixels), or left out ("none": every crop channel
  zero, the map alone); 3 channels per class in [-1, 1], zero elsewhere and for absent classes. Background
  (id 0) gets a one-hot channel but no crop, as in the precursor's PANDA packing. Width 4K.

The rules live in histosynth.labels (shared with the pseudo-label pipeline and `histosynth data sample`): crop sizes
and places in `labels.heterogeneity.class_crops` (d_i = d_base (1 + alpha complexity_i)). This module maps the
preset's CropConfig onto them and packs the tensors.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from histosynth.errors import InputError
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.parts import require
from histosynth.generators.conditioning.tissue import one_hot
from histosynth.generators.diffusion.presets import CropConfig
from histosynth.labels.heterogeneity import PAPER_PATCH, CropSizing, class_crops

PLACEMENTS = ("source", "corner", "none")


def crop_sizing(config: CropConfig) -> CropSizing:
    """The preset's crop sizes (fractions of the patch side) as labels' CropSizing (pixels at 256 px)."""
    return CropSizing(d_base=config.d_base * PAPER_PATCH, alpha=config.alpha, d_min=config.d_min * PAPER_PATCH,
                      d_max=config.d_max * PAPER_PATCH, reference=PAPER_PATCH, min_purity=config.min_purity)


def crop_boxes(tissue: np.ndarray, rng: np.random.Generator, config: CropConfig) -> dict[int, tuple[int, int, int]]:
    """{class id: (row, col, side)} of one crop per present tissue class, placed uniformly among fitting windows."""
    crops = class_crops(tissue, crop_sizing(config), rng=rng)
    return {c.class_id: (c.top, c.left, c.size) for c in crops}


def crop_pixels(tissue: np.ndarray, image: np.ndarray, rng: np.random.Generator,
                config: CropConfig) -> dict[int, np.ndarray]:
    """{class id: uint8 (d, d, 3) crop} with the same boxes `pack_crops` would draw (the embedding ablation)."""
    return {k: image[r : r + d, c : c + d] for k, (r, c, d) in crop_boxes(tissue, rng, config).items()}


def check_placement(config: CropConfig) -> None:
    """Raise InputError for a placement other than PLACEMENTS."""
    if config.placement not in PLACEMENTS:
        raise InputError(f"crop placement must be one of {', '.join(PLACEMENTS)}, not {config.placement!r}")


def pack_crops(tissue: np.ndarray, image: np.ndarray, num_classes: int, rng: np.random.Generator,
               config: CropConfig) -> np.ndarray:
    """HTD's (4K, H, W) float32 condition of one patch: K one-hot channels, then 3 crop channels per class."""
    check_placement(config)
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


class HTDCrops(Conditioner):
    """HTD's 4K-channel condition; `rngs[j]` places item j's crops."""

    parts: ClassVar[tuple[str, ...]] = ("tissue", "crops")
    name: ClassVar[str] = "htd-crops"

    def __init__(self, num_classes: int, crops: CropConfig | dict[str, Any] | None = None) -> None:
        self.num_classes = int(num_classes)
        self.crops = CropConfig(**crops) if isinstance(crops, dict) else (crops or CropConfig())
        check_placement(self.crops)

    @property
    def channels(self) -> int:
        return 4 * self.num_classes

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        require(batch, "crops", type(self).__name__)
        assert batch.tissue is not None
        if len(rngs) != len(batch):
            raise ValueError(f"HTDCrops needs one rng per condition: {len(rngs)} rngs for {len(batch)} conditions")
        packed = np.stack([pack_crops(m, im, self.num_classes, rng, self.crops)
                           for m, im, rng in zip(batch.tissue, batch.images, rngs, strict=True)])
        return {"condition": torch.from_numpy(packed).to(device)}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "crops": dataclasses.asdict(self.crops)}
