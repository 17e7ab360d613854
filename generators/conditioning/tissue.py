"""`TissueOneHot`: the tissue map as K one-hot channels (the map part of HTD's condition, and of any map-conditioned
generator)."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from histosynth.classes import IGNORE_ID
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.parts import check_class_ids, require


def one_hot(tissue: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, H, W) float32 one-hot of a uint8 map; ignore pixels are all-zero; ids >= K raise InputError."""
    ids = tissue.astype(np.int64)
    check_class_ids(ids, num_classes, "tissue map")
    out = np.zeros((num_classes, *tissue.shape), np.float32)
    rows, cols = np.nonzero(ids != IGNORE_ID)
    out[ids[rows, cols], rows, cols] = 1.0
    return out


class TissueOneHot(Conditioner):
    """Tissue map -> K channels, 1 where the pixel has that class (all zero on ignore pixels)."""

    parts: ClassVar[tuple[str, ...]] = ("tissue",)
    name: ClassVar[str] = "tissue-one-hot"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = int(num_classes)

    @property
    def channels(self) -> int:
        return self.num_classes

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        require(batch, "tissue", type(self).__name__)
        assert batch.tissue is not None
        maps = np.stack([one_hot(m, self.num_classes) for m in batch.tissue])
        return {"condition": torch.from_numpy(maps).to(device)}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes}
