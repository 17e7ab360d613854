"""The `Conditioner` strategy: how a generator turns a ConditionBatch into the tensors its networks take.

A generator holds one conditioner (or a `Compose` of several); the conditioner says which parts of a condition
Sample it reads (`parts`, a subset of CONDITION_PARTS), so the generator's metadata, the data loading and the
checks on condition Samples all follow from it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from histosynth.generators.conditioning.batch import ConditionBatch


class Conditioner(ABC):
    """Condition Samples (as a ConditionBatch) -> {"condition": (B, C, R, R) float32, ...extra named tensors}."""

    parts: ClassVar[tuple[str, ...]]
    name: ClassVar[str]

    @property
    @abstractmethod
    def channels(self) -> int:
        """C, the width of the "condition" tensor."""

    @abstractmethod
    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        """The condition tensors of `batch`; `rngs[j]` draws whatever is random for item j (e.g. crop places)."""

    def config(self) -> dict[str, Any]:
        """JSON-ready settings that rebuild this conditioner (saved in the model folder's config.json)."""
        return {"name": self.name}
