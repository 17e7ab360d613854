"""Coarse-to-fine granularity curriculum k'(t) for training on multi-scale pseudo tissue maps (HTD).

Two schedules over the first `warmup` fraction of training (after it, always the finest k):
- "linear" (the default, `DEFAULT_SCHEDULE`, also the presets' CurriculumConfig default): HTD's published
  k'(t) = k_min + (k_max - k_min) * min(1, t / T_warmup), snapped down to the largest available k <= k'(t).
  The fine levels then get most of the time: with the five HTD levels k = 5 holds for the first 5% of the
  warm-up, 50 for its last 47%, and k = 100 starts when the warm-up ends (so use warmup < 1).
- "stages": the sorted granularities get equal shares of the warm-up, coarsest first. With
  ks = (5, 10, 20, 50, 100), warmup = 1 and 1000 steps: k = 5 for steps 0-199, 10 for 200-399, 20, 50, then 100
  for steps 800-999.

The trainer calls it with `ks=hierarchy.levels`, converts the finest stored map to k'(t) with
`Hierarchy.coarsen(map, k)` (histosynth.labels.tissue), and pads its one-hot condition to the finest k so the
input width never changes.
"""

from __future__ import annotations

import math
from typing import Sequence

from histosynth.errors import InputError

SCHEDULES = ("linear", "stages")
DEFAULT_SCHEDULE = "linear"  # the one default; generators.diffusion.presets.CurriculumConfig imports it
HTD_LEVELS = (5, 10, 20, 50, 100)  # HTD's pseudo-map granularities, the default ks here and in the presets


def curriculum_k(
    step: int, total_steps: int, ks: Sequence[int] = HTD_LEVELS, warmup: float = 1.0,
    schedule: str = DEFAULT_SCHEDULE,
) -> int:
    """The granularity to train with at `step` (0-based) of `total_steps`; see the module docstring."""
    levels = sorted({int(k) for k in ks})
    if not levels or levels[0] < 1:
        raise InputError(f"curriculum_k: ks must be positive integers, got {list(ks)}")
    if total_steps < 1 or step < 0:
        raise ValueError(f"curriculum_k: need total_steps >= 1 and step >= 0, got step={step}, total_steps={total_steps}")
    if not 0.0 < warmup <= 1.0:
        raise InputError(f"curriculum_k: warmup is a fraction of training in (0, 1], got {warmup}")
    if schedule not in SCHEDULES:
        raise ValueError(f"curriculum_k: schedule must be one of {SCHEDULES}, got {schedule!r}")
    warm_steps = warmup * total_steps
    if step >= warm_steps:
        return levels[-1]
    progress = step / warm_steps
    if schedule == "stages":
        return levels[min(int(math.floor(progress * len(levels))), len(levels) - 1)]
    target = levels[0] + (levels[-1] - levels[0]) * progress
    return max(k for k in levels if k <= target + 1e-9)


def curriculum_stages(
    total_steps: int, ks: Sequence[int] = HTD_LEVELS, warmup: float = 1.0, schedule: str = DEFAULT_SCHEDULE,
) -> list[tuple[int, int]]:
    """(first step, k) for each granularity actually used, in training order (for logs and configs)."""
    out: list[tuple[int, int]] = []
    for level in sorted({int(k) for k in ks}):
        lo, hi = 0, total_steps  # k(step) never decreases: binary search for the first step reaching `level`
        while lo < hi:
            mid = (lo + hi) // 2
            if curriculum_k(mid, total_steps, ks, warmup, schedule) >= level:
                hi = mid
            else:
                lo = mid + 1
        if lo < total_steps and curriculum_k(lo, total_steps, ks, warmup, schedule) == level:
            out.append((lo, level))
    return out
