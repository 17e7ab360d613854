"""SPADE/GauGAN (Park et al., CVPR 2019): tissue map -> H&E patch, on the shared GAN base. The generator is in
model.py, its networks and losses in nets.py, the presets in presets.py. `Spade` is importable from the package
too, so `histosynth.baselines.spade:Spade` targets resolve."""

from histosynth.baselines.spade.model import Spade

__all__ = ["Spade"]
