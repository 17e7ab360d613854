"""HTD (HeteroTissue-Diffuse): a DiffusionGenerator conditioned on c = concat(M, C_1..C_K), the tissue map one-hot
and one visual crop per class in a sparse image-sized tensor (histosynth.generators.conditioning.crops.HTDCrops).
Its ablations (histosynth.baselines.htd_ablations) change only the conditioner and their metadata.
"""

from __future__ import annotations

from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.crops import HTDCrops
from histosynth.generators.diffusion.generator import DiffusionGenerator
from histosynth.generators.htd.presets import PRESETS
from histosynth.generators.registry import generator_meta


class HTDGenerator(DiffusionGenerator):
    """HTD: tissue map + per-class visual crops -> a new patch whose label is that map."""

    meta = generator_meta("htd")
    preset_table = PRESETS

    def make_conditioner(self, num_classes: int) -> Conditioner | None:
        return HTDCrops(num_classes, self.preset.model.crops)


__all__ = ["HTDGenerator"]
