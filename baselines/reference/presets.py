"""Presets of the reference rows (histosynth.baselines.reference): tiny, demo, paper. They set only the output
resolution and how `train` reads its data; nothing is optimized."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass
class ReferencePreset:
    """Output resolution and how `train` reads its data (nothing is optimized)."""

    name: str = "tiny"
    resolution: int = 32
    steps: int = 1  # batches checked for an exact pass-through / copy (the reported "losses")
    batch_size: int = 16
    seed: int = 0
    heterogeneity: tuple[float, float] | None = None  # None: every patch given (no 20-80 % rule)


PRESETS = {"tiny": functools.partial(ReferencePreset, "tiny", 32, batch_size=4),
           "demo": functools.partial(ReferencePreset, "demo", 64),
           "paper": functools.partial(ReferencePreset, "paper", 256)}
