"""Presets of the SPADE/GauGAN baseline (histosynth.baselines.spade): tiny, demo, paper.

paper is GauGAN as published (Park et al., CVPR 2019; NVlabs/SPADE defaults) at 256 px in its "G from the
segmentation map" mode: ngf 64, 5 upsamplings ("normal": an 8 x 8 start grid, 1024 channels there), SPADE hidden
width 128, spectral norm in G and D, a 2-scale discriminator of 4 layers (ndf 64) each, hinge loss + feature
matching (lambda 10 / 2 scales), TTUR Adam G 1e-4 / D 4e-4 with betas (0, 0.9), LR constant for half the run then
linear to 0 (the reference's niter + niter_decay), batch 1 (the reference trains with 32 over 8 GPUs; one patch a
step keeps the run on one device), 200k steps. The VGG perceptual loss (lambda 10) is off unless `vgg_weights`
names torchvision's ImageNet VGG19 file (no such weights offline); noise: z_dim 256 as the reference's z.
tiny and demo keep every rule and shrink the widths and the run; the upsampling count follows the resolution
(start grid 4 x 4 below 256 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from histosynth.baselines.gan.presets import GANModelConfig, GANPreset, GANSampleConfig, GANTrainConfig
from histosynth.errors import InputError

MAX_UPSAMPLINGS = 5  # GauGAN "normal"


@dataclass
class SpadeModelConfig(GANModelConfig):
    """The SPADE generator, the multiscale discriminator and the loss weights."""

    ngf: int = 64  # the last generator block's width; the start grid has ngf * 2^(n-1) channels
    upsamplings: int | None = None  # None: min(5, log2(resolution) - 2)
    spade_hidden: int = 128
    z_dim: int = 256  # per-sample noise concatenated to the downsampled map (0: deterministic, as the reference)
    spectral: bool = True
    ndf: int = 64
    num_d: int = 2
    d_layers: int = 4  # n_layers_D of each scale
    lambda_feat: float = 10.0  # divided by num_d
    lambda_vgg: float = 10.0
    vgg_weights: str | None = None  # torchvision vgg19-dcbb9e9d.pth (or its folder); None: no VGG loss

    def __post_init__(self) -> None:
        r = self.resolution
        if not (isinstance(r, int) and r >= 16 and r & (r - 1) == 0):
            raise InputError(f"spade resolution must be a power of two of at least 16 px, not {r!r}")
        if not 2 <= self.upsampling_count <= int(math.log2(r)):
            raise InputError(f"spade upsamplings must be in [2, log2({r})], not {self.upsamplings}")
        if r // 2 ** (self.num_d - 1 + self.d_layers - 1) < 2:
            raise InputError(f"spade: a {self.num_d}-scale, {self.d_layers}-layer discriminator needs patches larger "
                             f"than {r} px")

    @property
    def upsampling_count(self) -> int:
        return self.upsamplings if self.upsamplings is not None else min(MAX_UPSAMPLINGS, int(math.log2(self.resolution)) - 2)


def _train(**fields) -> GANTrainConfig:
    """TTUR (G 1e-4, D 4e-4, betas (0, 0.9)) and constant-then-linear LR, no clipping."""
    base = dict(lr=1e-4, lr_d=4e-4, adam_betas=(0.0, 0.9), lr_schedule="linear_decay", decay_start=0.5)
    return GANTrainConfig(**{**base, **fields})


def tiny() -> GANPreset:
    """32 px, 3 upsamplings (64 -> 16 channels), SPADE hidden 32, D 16 channels, z 16: seconds on a CPU (tests)."""
    return GANPreset("tiny", SpadeModelConfig(resolution=32, ngf=16, spade_hidden=32, z_dim=16, ndf=16),
                     _train(steps=200, batch_size=4, mixed_precision="no"), GANSampleConfig(batch_size=16))


def demo() -> GANPreset:
    """64 px, 4 upsamplings (256 -> 32 channels), SPADE hidden 128, D 32 channels, batch 8: CPU-minutes scale."""
    return GANPreset("demo", SpadeModelConfig(resolution=64, ngf=32, z_dim=64, ndf=32),
                     _train(steps=3000, batch_size=8, checkpoint_every=500), GANSampleConfig(batch_size=16))


def paper() -> GANPreset:
    """GauGAN at 256 px (see the module docstring)."""
    return GANPreset("paper", SpadeModelConfig(resolution=256),
                     _train(steps=200_000, batch_size=1, checkpoint_every=5000), GANSampleConfig(batch_size=8))


PRESETS = {"tiny": tiny, "demo": demo, "paper": paper}
