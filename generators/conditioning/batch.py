"""`ConditionBatch`: the parts of a batch of condition Samples a conditioner reads, at the model resolution.

Training arrays (histosynth.generators.arrays) and condition Samples at sampling time both become this, so a
conditioner is written once for both. Arrays are numpy (no torch): conditioners turn them into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONDITION_PARTS = ("tissue", "crops", "nuclei", "mask")
"""What a generator can read from a condition Sample: its tissue map, crops of its image (taken inside the map's
class regions), its classed nuclei centroids, its completion mask (with the image around it)."""


@dataclass
class NucleiLayout:
    """One patch's classed nuclei at the model resolution: centroids (n, 2) float32 (x, y), class ids (n,) uint8."""

    centroids: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.class_ids)


@dataclass
class ConditionBatch:
    """B conditions resized to R x R. A part a batch does not carry is None."""

    images: np.ndarray  # (B, R, R, 3) uint8: the condition patches (crops and completion context come from them)
    tissue: np.ndarray | None = None  # (B, R, R) uint8 class ids (255 = ignore)
    tissue_schema: str | None = None
    nuclei: list[NucleiLayout] | None = None
    nuclei_schema: str | None = None
    masks: np.ndarray | None = None  # (B, R, R) bool, True where a completion generator must paint
    mpp: np.ndarray | None = None  # (B,) float64 microns per pixel at the model resolution R (None: unknown)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])
