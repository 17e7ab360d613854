"""Presets of the pix2pix baseline (histosynth.baselines.pix2pix): tiny, demo, paper, and each with "-nuclei".

paper is the reference pix2pix (Isola et al., CVPR 2017; junyanz/pytorch-CycleGAN-and-pix2pix, `--model pix2pix`):
U-Net 256 (8 downsamplings, 64 -> 512 channels, dropout 0.5 in the 3 decoder blocks nearest the bottleneck, tanh
out), 70x70 PatchGAN (3 layers, 64 channels) on condition ⊕ image, vanilla GAN loss + 100 L1, D loss halved,
Adam 2e-4 betas (0.5, 0.999), batch 1, LR constant for half the run then linear to 0, N(0, 0.02) init. Its 200
epochs become 200k steps (1000 patches x 200 epochs at batch 1). tiny and demo keep every rule and shrink the widths
and the run; the number of downsamplings follows the resolution (log2 R: 5 at 32 px, 6 at 64 px), so the
bottleneck is always 1 x 1 as in U-Net 256.

The conditioning: "tissue" (the registered pix2pix: the tissue map one-hot, K channels) or "tissue+nuclei" (the
map one-hot followed by Gaussian centroid maps of the classed nuclei, histosynth.generators.conditioning.centroids).
Choose the nuclei variant with the presets `tiny-nuclei`, `demo-nuclei`, `paper-nuclei` (`histosynth train pix2pix
--preset demo-nuclei ...`) or `build(preset, conditioning="tissue+nuclei")`; it trains on and samples from
conditions that carry nuclei, and its outputs copy those nuclei as labels too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from histosynth.baselines.gan.presets import GANModelConfig, GANPreset, GANSampleConfig, GANTrainConfig
from histosynth.errors import InputError

CONDITIONINGS = {"tissue": ("tissue",), "tissue+nuclei": ("tissue", "nuclei")}
GAN_CRITERIA = ("bce", "least_squares")  # MONAI PatchAdversarialLoss names of pix2pix's "vanilla" and "lsgan"


@dataclass
class Pix2PixModelConfig(GANModelConfig):
    """The U-Net generator, the PatchGAN discriminator and the loss weights."""

    conditioning: str = "tissue"
    base_channels: int = 64  # ngf: the first level's width, doubled per level up to base * max_multiplier
    max_multiplier: int = 8
    num_downs: int | None = None  # None: log2(resolution), a 1 x 1 bottleneck
    dropout: float = 0.5
    dropout_blocks: int = 3  # decoder blocks with dropout, counted outwards from the bottleneck (not itself)
    d_channels: int = 64  # ndf
    d_layers: int = 3  # n_layers_D: 3 = the 70 x 70 PatchGAN
    gan_criterion: str = "bce"
    lambda_l1: float = 100.0

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise InputError(f"pix2pix conditioning must be one of {', '.join(CONDITIONINGS)}, not {self.conditioning!r}")
        if self.gan_criterion not in GAN_CRITERIA:
            raise InputError(f"pix2pix gan_criterion must be one of {', '.join(GAN_CRITERIA)}, not {self.gan_criterion!r}")
        r = self.resolution
        if not (isinstance(r, int) and r >= 16 and r & (r - 1) == 0):
            raise InputError(f"pix2pix resolution must be a power of two of at least 16 px, not {r!r}")
        if not 2 <= self.downsamplings <= int(math.log2(r)):
            raise InputError(f"pix2pix num_downs must be in [2, log2({r}) = {int(math.log2(r))}], not {self.num_downs}")
        if r // 2 ** (self.d_layers + 1) < 2:
            raise InputError(f"a {self.d_layers}-layer PatchGAN needs patches of at least {2 ** (self.d_layers + 2)} px")

    @property
    def downsamplings(self) -> int:
        """The U-Net's depth: num_downs, or log2(resolution)."""
        return self.num_downs if self.num_downs is not None else int(math.log2(self.resolution))

    @property
    def parts(self) -> tuple[str, ...]:
        return CONDITIONINGS[self.conditioning]


def tiny() -> GANPreset:
    """32 px, 5 levels 16 -> 128 channels, D 16 channels: trains in seconds on a CPU (tests)."""
    return GANPreset("tiny", Pix2PixModelConfig(resolution=32, base_channels=16, d_channels=16),
                     GANTrainConfig(steps=200, batch_size=4, mixed_precision="no"), GANSampleConfig(batch_size=16))


def demo() -> GANPreset:
    """64 px, 6 levels 32 -> 256 channels, D 32 channels, batch 8: the CPU demo scale (13 img/s on one loaded core
    of this machine, so its 2000 steps take about 20 minutes)."""
    return GANPreset("demo", Pix2PixModelConfig(resolution=64, base_channels=32, d_channels=32),
                     GANTrainConfig(steps=2000, batch_size=8, checkpoint_every=500), GANSampleConfig(batch_size=16))


def paper() -> GANPreset:
    """The published pix2pix at 256 px (see the module docstring)."""
    return GANPreset("paper", Pix2PixModelConfig(resolution=256),
                     GANTrainConfig(steps=200_000, batch_size=1, checkpoint_every=5000), GANSampleConfig(batch_size=8))


def _with_nuclei(make):
    def preset() -> GANPreset:
        chosen = make()
        return replace(chosen, name=f"{chosen.name}-nuclei", model=replace(chosen.model, conditioning="tissue+nuclei"))

    preset.__doc__ = f"{make.__name__} conditioned on the tissue map and the nuclei centroid maps."
    return preset


PRESETS = {"tiny": tiny, "demo": demo, "paper": paper,
           "tiny-nuclei": _with_nuclei(tiny), "demo-nuclei": _with_nuclei(demo), "paper-nuclei": _with_nuclei(paper)}

