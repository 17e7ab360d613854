"""The coarse-to-fine granularity curriculum of pseudo-labeled training maps (HTD): finest-level cluster ids are
mapped to the granularity of the current step with the lookup tables the hierarchical clustering made. The rule
k'(t) itself lives in histosynth.labels.curriculum."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from histosynth.classes import remap_table
from histosynth.errors import InputError
from histosynth.generators.diffusion.presets import CurriculumConfig
from histosynth.labels.curriculum import curriculum_k


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
                raise InputError(f"curriculum: no lookup table from k={finest} to k={k}")
            self._luts[k] = remap_table(dict(enumerate(lut)), "ignore")  # fine ids past the table: no class

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
