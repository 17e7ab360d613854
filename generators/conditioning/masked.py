"""`MaskedImage`: the completion condition, the known pixels and where to paint (Palette / HARP style)."""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.parts import require


class MaskedImage(Conditioner):
    """4 channels: the image in [-1, 1] with the masked (to-paint) region zeroed, then the mask (1 = paint)."""

    parts: ClassVar[tuple[str, ...]] = ("mask",)
    name: ClassVar[str] = "masked-image"

    @property
    def channels(self) -> int:
        return 4

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        require(batch, "mask", type(self).__name__)
        assert batch.masks is not None
        if batch.masks.shape != batch.images.shape[:3]:
            raise ValueError(f"completion masks {batch.masks.shape} do not match images {batch.images.shape[:3]}")
        images = torch.from_numpy(np.ascontiguousarray(batch.images)).to(device)
        mask = torch.from_numpy(np.ascontiguousarray(batch.masks, dtype=bool)).to(device)
        scaled = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
        known = scaled * (~mask)[:, None]
        return {"condition": torch.cat([known, mask[:, None].float()], dim=1)}

    def config(self) -> dict[str, Any]:
        return {"name": self.name}
