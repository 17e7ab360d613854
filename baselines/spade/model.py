"""`spade`: SPADE/GauGAN semantic image synthesis (Park et al., CVPR 2019), tissue map -> H&E patch.

Rebuilt from the reference implementation (NVlabs/SPADE, read for its structure; no code copied) on the shared GAN
base (histosynth.baselines.gan.base). The networks and losses, and every difference from the reference, are in
histosynth.baselines.spade.nets; the presets in histosynth.baselines.spade.presets.

- Condition: the tissue map one-hot (TissueOneHot, K channels); the discriminator sees it concatenated with the image.
- Noise: a z_dim vector per sample, N(0, 1) from the step's generator in training and from the sample's own seed at
  sampling, so runs resume exactly and sample j can be redone alone.
- One step (the base's GANStep): D on [fake.detach(); real] in one batched pass (as the reference's
  `discriminate`), hinge loss d_fake + d_real; then G through the frozen D: hinge -mean D(fake), plus feature
  matching (L1 between D's hidden features on fake and real, lambda_feat / num_d per scale), plus the VGG loss
  when its weights are given.
- Optimization: TTUR (G 1e-4, D 4e-4, Adam betas (0, 0.9)), no gradient clipping, constant then linear LR decay.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from histosynth.baselines.gan.base import GANGenerator
from histosynth.baselines.gan.layers import Noise
from histosynth.baselines.spade.nets import (
    SpadeDiscriminatorNet,
    SpadeGeneratorNet,
    VGGPerceptual,
    feature_matching,
    hinge_d,
    hinge_g,
)
from histosynth.baselines.spade.presets import PRESETS, SpadeModelConfig
from histosynth.generators.base import TrainReport
from histosynth.generators.registry import generator_meta
from histosynth.generators.training import Batch


def gaussian(rows: int, width: int, noise: Noise, device: torch.device) -> torch.Tensor:
    """(rows, width) N(0, 1) drawn on the CPU from `noise`: one generator for the batch, or one per row."""
    if noise is None:
        raise ValueError("spade draws its noise vector from a generator; none was given")
    if isinstance(noise, torch.Generator):
        return torch.randn((rows, width), generator=noise).to(device)
    if len(noise) != rows:
        raise ValueError(f"{len(noise)} generators for a batch of {rows}")
    return torch.stack([torch.randn(width, generator=g) for g in noise]).to(device)


class Spade(GANGenerator):
    """SPADE/GauGAN on the generator platform (see the module docstring)."""

    meta = generator_meta("spade")
    preset_table = PRESETS
    model_config = SpadeModelConfig
    network_classes: ClassVar[tuple[type[nn.Module], type[nn.Module]]] = (SpadeGeneratorNet, SpadeDiscriminatorNet)
    _vgg: VGGPerceptual | None = None

    @property
    def model(self) -> SpadeModelConfig:
        return self.preset.model  # type: ignore[return-value]

    def build_networks(self, condition_channels: int) -> tuple[nn.Module, nn.Module]:
        m = self.model
        g = SpadeGeneratorNet(condition_channels, m.resolution, m.ngf, m.upsampling_count, m.spade_hidden, m.z_dim,
                              m.spectral)
        return g, SpadeDiscriminatorNet(condition_channels + 3, m.ndf, m.num_d, m.d_layers, m.spectral)

    def forward_generator(self, g: nn.Module, batch: Batch, noise: Noise) -> torch.Tensor:
        condition = batch["condition"]
        z_dim = self.model.z_dim
        z = gaussian(condition.shape[0], z_dim, noise, condition.device) if z_dim else None
        return g(condition, z)

    def _discriminate(self, d: nn.Module, condition: torch.Tensor, fake: torch.Tensor,
                      real: torch.Tensor) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
        """D's outputs on fake and real pairs from one pass over both (the reference's `discriminate`)."""
        both = torch.cat([torch.cat([condition, fake], 1), torch.cat([condition, real], 1)], 0)
        n = fake.shape[0]
        outputs = d(both)
        return [[t[:n].float() for t in scale] for scale in outputs], [[t[n:].float() for t in scale] for scale in outputs]

    def discriminator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        pred_fake, pred_real = self._discriminate(d, batch["condition"], fake, batch["image"])
        d_fake, d_real = hinge_d(pred_fake, real=False), hinge_d(pred_real, real=True)
        return {"d": d_fake + d_real, "d_fake": d_fake, "d_real": d_real}

    def generator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        pred_fake, pred_real = self._discriminate(d, batch["condition"], fake, batch["image"])
        m = self.model
        losses = {"g_gan": hinge_g(pred_fake), "g_feat": feature_matching(pred_real, pred_fake, m.lambda_feat)}
        vgg = self._perceptual(fake.device)
        if vgg is not None:
            losses["g_vgg"] = m.lambda_vgg * vgg(fake.float(), batch["image"].float())
        return {"g": sum(losses.values()), **losses}  # type: ignore[dict-item]

    def train(self, data: Any, config: Any = None, out: Any = None, resume: bool = False, on_step: Any = None) -> TrainReport:
        """The base's training, after loading the VGG weights (when asked for), so a bad path fails before any
        file is written."""
        self._perceptual(self.device)
        return super().train(data, config, out, resume=resume, on_step=on_step)

    def _perceptual(self, device: torch.device) -> VGGPerceptual | None:
        """The VGG loss network when `vgg_weights` is set (loaded once, frozen, never saved with the model)."""
        if self.model.vgg_weights is None:
            return None
        if self._vgg is None:
            self._vgg = VGGPerceptual(self.model.vgg_weights)
        return self._vgg.to(device)

    def card_details(self) -> list[str]:
        m = self.model
        n = m.upsampling_count
        start, top = m.resolution // 2**n, m.ngf * 2 ** (n - 1)
        vgg = (f"on (lambda {m.lambda_vgg:g}, ImageNet VGG19 from {m.vgg_weights.rsplit('/', 1)[-1]})" if m.vgg_weights
               else "off (it needs ImageNet VGG19 weights, which are not available offline; set vgg_weights to a "
                    "local torchvision vgg19 file to turn it on)")
        return [
            f"- SPADE/GauGAN (Park et al. 2019), generator from the downsampled tissue map (no VAE encoder): "
            f"{start} x {start} start grid, {top} channels, {n} upsamplings to {m.ngf}, SPADE residual blocks "
            f"({m.spade_hidden} hidden channels, instance norm), spectral norm {'on' if m.spectral else 'off'}, "
            f"tanh out; a {m.z_dim}-d noise vector per sample joins the map at the start grid.",
            f"- Discriminator: {m.num_d}-scale PatchGAN (MONAI PatchDiscriminator per scale, {m.d_layers} layers, "
            f"{m.ndf} channels, instance + spectral norm) on map ⊕ image. Losses: hinge (D and G) + feature matching "
            f"(lambda {m.lambda_feat:g} / {m.num_d}); VGG perceptual loss {vgg}.",
            "- Differences from NVlabs/SPADE: instance instead of synchronized batch norm in G, a per-sample noise "
            "vector, no don't-care channel, D's last conv padded 1 (see histosynth.baselines.spade.nets).",
            *super().card_details(),
        ]


__all__ = ["Spade", "gaussian"]
