"""`Compose`: several conditioners as one (e.g. centroid maps + masked image for centroid-guided completion)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch


class Compose(Conditioner):
    """Concatenates the members' "condition" channels in order; their other named tensors are merged."""

    name = "compose"

    def __init__(self, conditioners: Sequence[Conditioner]) -> None:
        if not conditioners:
            raise ValueError("Compose needs at least one conditioner")
        self.conditioners = list(conditioners)
        self.parts = tuple(dict.fromkeys(p for c in self.conditioners for p in c.parts))  # the union, in order

    @property
    def channels(self) -> int:
        return sum(c.channels for c in self.conditioners)

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        conditions, merged = [], {}
        for member in self.conditioners:
            out = dict(member(batch, rngs, device))
            conditions.append(out.pop("condition"))
            for key, value in out.items():
                if key in merged:
                    raise ValueError(f"Compose: two conditioners both return {key!r}")
                merged[key] = value
        return {"condition": torch.cat(conditions, dim=1), **merged}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "conditioners": [c.config() for c in self.conditioners]}
