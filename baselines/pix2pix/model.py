"""`pix2pix`: the conditional GAN of Isola et al. (CVPR 2017), tissue map (+ nuclei centroid maps) -> H&E patch.

Rebuilt from the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, `--model pix2pix`, read for its
structure; no code copied) on the shared GAN base (histosynth.baselines.gan.base). Presets and the conditioning
choice: histosynth.baselines.pix2pix.presets.

- Generator: the reference UnetGenerator ("unet_256"), written here because no maintained library provides it
  (MONAI, timm, segmentation-models-pytorch and diffusers have other U-Nets). Encoder level i: [LeakyReLU 0.2] ->
  Conv 4x4 stride 2 (no bias) -> [BatchNorm], widths base * min(2^i, 8); the outermost level has neither
  activation nor norm, the innermost (the 1 x 1 bottleneck) no norm. Decoder level i: ReLU -> ConvTranspose 4x4
  stride 2 -> BatchNorm (outermost: with bias, then tanh), [dropout 0.5 in the 3 blocks next to the bottleneck],
  then concatenated with the encoder input of that level. Depth = log2(resolution) (8 at 256 px). Differences, both
  so that a sample depends only on its condition and its own seed: dropout masks come from explicit generators
  (layers.SeededDropout, on at sampling as in pix2pix), and at sampling batch norm normalizes each sample by its
  own statistics (layers.SampleBatchNorm2d), which is what the reference's test script does at batch size 1.
  Where there are fewer than 6 levels, the dropout blocks are the levels between the outermost and the bottleneck.
- Discriminator: MONAI's PatchDiscriminator (num_layers_d 3, channels 64, kernel 4, padding 1, batch norm, LeakyReLU
  0.2, no bias under norm, last conv 4x4 stride 1 to one channel, N(0, 0.02) init by monai normal_init). Checked
  against the reference NLayerDiscriminator: the same layers (first conv with bias and no norm, stride 2, 2, 2, 1,
  1), channels 64-128-256-512-1, norm before activation and a 70 x 70 receptive field. Its input is condition ⊕
  image (channels concatenated), fake and real in two separate passes as in the reference.
- Losses: MONAI's PatchAdversarialLoss "bce" (sigmoid + BCELoss: the reference's "vanilla" BCEWithLogitsLoss,
  equal except that BCELoss clamps log at -100) or "least_squares" with no_activation_leastsq (the reference's
  "lsgan" MSE); G: GAN + lambda_l1 (100) * L1(fake, real); D: (fake + real) / 2.
- Optimization, init and LR decay: the shared GANTrainConfig (Adam 2e-4, betas (0.5, 0.999), linear decay after half
  of the steps); weights N(0, 0.02), batch-norm scales N(1, 0.02).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from monai.losses import PatchAdversarialLoss
from monai.networks.nets import PatchDiscriminator
from monai.networks.utils import normal_init
from torch import nn

from histosynth.baselines.gan.base import GANGenerator
from histosynth.baselines.gan.layers import Noise, SampleBatchNorm2d, SeededDropout
from histosynth.baselines.pix2pix.presets import PRESETS, Pix2PixModelConfig
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.centroids import CentroidMaps
from histosynth.generators.conditioning.compose import Compose
from histosynth.generators.conditioning.tissue import TissueOneHot
from histosynth.generators.registry import generator_meta
from histosynth.generators.training import Batch


class UNetGenerator(ModelMixin, ConfigMixin):
    """pix2pix's U-Net generator (see the module docstring): condition (C channels) -> image in [-1, 1]."""

    @register_to_config
    def __init__(self, in_channels: int, out_channels: int = 3, num_downs: int = 8, base_channels: int = 64,
                 max_multiplier: int = 8, dropout: float = 0.5, dropout_blocks: int = 3) -> None:
        super().__init__()
        widths = [base_channels * min(2**i, max_multiplier) for i in range(num_downs)]
        self.down, self.up, self.drop = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, width in enumerate(widths):
            outermost, innermost = i == 0, i == num_downs - 1
            below = in_channels if outermost else widths[i - 1]  # what level i takes in and gives back
            self.down.append(nn.Sequential(
                *([] if outermost else [nn.LeakyReLU(0.2)]), nn.Conv2d(below, width, 4, 2, 1, bias=False),
                *([] if outermost or innermost else [SampleBatchNorm2d(width)])))
            self.up.append(nn.Sequential(
                nn.ReLU(), nn.ConvTranspose2d(width if innermost else 2 * width, out_channels if outermost else below,
                                              4, 2, 1, bias=outermost),
                nn.Tanh() if outermost else SampleBatchNorm2d(below)))
            dropped = not outermost and not innermost and i >= num_downs - 1 - dropout_blocks
            self.drop.append(SeededDropout(dropout if dropped else 0.0))
        self.apply(normal_init)

    def forward(self, condition: torch.Tensor, noise: Noise = None) -> torch.Tensor:
        """`noise` draws the dropout masks (one generator, or one per sample); None turns dropout off."""
        skips, x = [], condition
        for down in self.down:
            skips.append(x)
            x = down(x)
        for i in reversed(range(len(self.up))):
            x = self.drop[i](self.up[i](x), noise)
            if i > 0:
                x = torch.cat([skips[i], x], dim=1)
        return x


class PatchGAN(ModelMixin, ConfigMixin):
    """The 70 x 70 PatchGAN: MONAI's PatchDiscriminator with the reference's settings; returns the logit map."""

    @register_to_config
    def __init__(self, in_channels: int, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        self.patchgan = PatchDiscriminator(spatial_dims=2, channels=channels, in_channels=in_channels, out_channels=1,
                                           num_layers_d=num_layers, kernel_size=4, norm="BATCH", bias=False,
                                           padding=1, last_conv_kernel_size=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patchgan(x)[-1]


class Pix2Pix(GANGenerator):
    """pix2pix on the generator platform (see the module docstring)."""

    meta = generator_meta("pix2pix")
    preset_table = PRESETS
    model_config = Pix2PixModelConfig
    network_classes: ClassVar[tuple[type[nn.Module], type[nn.Module]]] = (UNetGenerator, PatchGAN)

    @property
    def model(self) -> Pix2PixModelConfig:
        return self.preset.model  # type: ignore[return-value]

    def condition_parts(self) -> tuple[str, ...]:
        return self.model.parts

    def make_conditioner(self) -> Conditioner:
        tissue = TissueOneHot(self._require(self.model.num_classes, "num_classes"))
        if "nuclei" not in self.model.parts:
            return tissue
        return Compose([tissue, CentroidMaps(self._require(self.model.nuclei_classes, "nuclei_classes"))])

    def build_networks(self, condition_channels: int) -> tuple[nn.Module, nn.Module]:
        m = self.model
        g = UNetGenerator(condition_channels, 3, m.downsamplings, m.base_channels, m.max_multiplier, m.dropout,
                          m.dropout_blocks)
        return g, PatchGAN(condition_channels + 3, m.d_channels, m.d_layers)

    def _adversarial(self) -> PatchAdversarialLoss:
        return PatchAdversarialLoss(criterion=self.model.gan_criterion, no_activation_leastsq=True)

    def discriminator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        condition, adversarial = batch["condition"], self._adversarial()
        d_fake = adversarial(d(torch.cat([condition, fake], 1)).float(), target_is_real=False, for_discriminator=True)
        d_real = adversarial(d(torch.cat([condition, batch["image"]], 1)).float(), target_is_real=True,
                             for_discriminator=True)
        return {"d": 0.5 * (d_fake + d_real), "d_fake": d_fake, "d_real": d_real}

    def generator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        prediction = d(torch.cat([batch["condition"], fake], 1)).float()
        g_gan = self._adversarial()(prediction, target_is_real=True, for_discriminator=False)
        g_l1 = F.l1_loss(fake.float(), batch["image"].float())
        return {"g": g_gan + self.model.lambda_l1 * g_l1, "g_gan": g_gan, "g_l1": g_l1}

    def card_details(self) -> list[str]:
        m = self.model
        widths = [m.base_channels * min(2**i, m.max_multiplier) for i in range(m.downsamplings)]
        return [
            f"- pix2pix (Isola et al. 2017). Generator: U-Net, {m.downsamplings} downsamplings, widths {widths[0]} -> "
            f"{widths[-1]}, dropout {m.dropout} in {m.dropout_blocks} decoder blocks (on at sampling, seeded per "
            f"sample), batch norm (per-sample statistics at sampling), tanh out; written by hand (no maintained "
            f"library provides it). Conditioning: {m.conditioning}.",
            f"- Discriminator: MONAI PatchDiscriminator, {m.d_layers} layers, {m.d_channels} channels (70 x 70 PatchGAN "
            f"at 3 layers) on condition ⊕ image. Loss: {m.gan_criterion} GAN + {m.lambda_l1:g} L1; D loss halved.",
            *super().card_details(),
        ]


__all__ = ["PatchGAN", "Pix2Pix", "UNetGenerator"]
