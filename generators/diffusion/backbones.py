"""Networks from diffusers configs: the denoising UNet, its ControlNet, the frozen autoencoder, the noise schedule.

The UNet is diffusers' `UNet2DConditionModel` because `ControlNetModel.from_unet` needs it. Its blocks are the
attention-free `DownBlock2D` / `UpBlock2D`; the middle block is `UNetMidBlock2D` (no attention) or, for the paper
preset, `UNetMidBlock2DCrossAttn`, whose self-attention is CompVis' middle-block attention (its cross-attention
sees one zero token, which reduces to a learned bias: there is no text). `Denoiser` wires ControlNet residuals
into the UNet (`down_block_additional_residuals`, `mid_block_additional_residual`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel, VQModel
from torch import nn

from histosynth.errors import InputError, UserFacingError
from histosynth.generators.diffusion.presets import AutoencoderConfig, ModelConfig


class BaseWeightsMissing(UserFacingError):
    """Pretrained base weights (autoencoder, UNet) were asked for but are not on this machine."""


def build_unet(model: ModelConfig, in_channels: int) -> UNet2DConditionModel:
    """The denoiser UNet for `in_channels` (3 in pixel space, the latent channels otherwise), random or pretrained."""
    if model.unet_weights:
        return UNet2DConditionModel.from_pretrained(_local(model.unet_weights, None, "UNet"), **_local_kwargs())
    n = len(model.block_out_channels)
    return UNet2DConditionModel(
        sample_size=model.resolution // model.latent_stride,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        mid_block_type="UNetMidBlock2DCrossAttn" if model.mid_attention else "UNetMidBlock2D",
        block_out_channels=tuple(model.block_out_channels),
        layers_per_block=model.layers_per_block,
        norm_num_groups=model.norm_num_groups,
        cross_attention_dim=model.cross_attention_dim,
        attention_head_dim=model.attention_heads,  # diffusers' legacy name: this is the number of heads
    )


def build_controlnet(unet: UNet2DConditionModel, model: ModelConfig, conditioning_channels: int) -> ControlNetModel:
    """A ControlNet copied from `unet` whose condition encoder takes `conditioning_channels` image-sized channels.

    The condition encoder downsamples by the latent stride (2 ** (len(widths) - 1)), so image-resolution
    conditions meet latent-resolution features.
    """
    levels = int(math.log2(model.latent_stride)) + 1
    if len(model.conditioning_widths) < levels:
        raise InputError(f"conditioning_widths {model.conditioning_widths} too short for latent stride {model.latent_stride}")
    return ControlNetModel.from_unet(unet, conditioning_channels=conditioning_channels,
                                     conditioning_embedding_out_channels=tuple(model.conditioning_widths[:levels]))


def noise_scheduler(model: ModelConfig) -> DDPMScheduler:
    """The training noise schedule (samplers are built from its config)."""
    return DDPMScheduler(num_train_timesteps=model.num_train_timesteps, beta_start=model.beta_start,
                         beta_end=model.beta_end, beta_schedule=model.beta_schedule,
                         prediction_type=model.prediction_type, clip_sample=model.autoencoder is None)


def _local_kwargs() -> dict:
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    return {"local_files_only": True} if offline else {}


def _local(weights: str, subfolder: str | None, what: str) -> str:
    """A local folder for `weights` (a path, or a repo id found in the HF cache); a clear error if neither."""
    path = Path(weights).expanduser()
    if path.exists():
        return str(path / subfolder if subfolder else path)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(weights, local_files_only=True,
                                   allow_patterns=[f"{subfolder}/*"] if subfolder else None)
    except Exception as err:  # huggingface_hub raises several types for "not cached"
        raise BaseWeightsMissing(
            f"{what} weights {weights!r}{f' (subfolder {subfolder!r})' if subfolder else ''} are neither a local folder "
            f"nor in the Hugging Face cache ({type(err).__name__}). Download them once with "
            f"`huggingface-cli download {weights}` (or pass a local diffusers folder, e.g. --autoencoder PATH); "
            f"histosynth never downloads base weights itself."
        ) from None
    return str(Path(folder) / subfolder if subfolder else folder)


def build_autoencoder(config: AutoencoderConfig) -> VQModel | AutoencoderKL:
    """The frozen first stage: user-supplied weights, or the configured architecture at random (tests)."""
    cls = {"vq": VQModel, "kl": AutoencoderKL}.get(config.kind)
    if cls is None:
        raise InputError(f"autoencoder kind must be 'vq' or 'kl', not {config.kind!r}")
    if config.random_init:
        n = len(config.block_out_channels)
        common = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                      up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(config.block_out_channels),
                      layers_per_block=config.layers_per_block, latent_channels=config.latent_channels,
                      norm_num_groups=config.norm_num_groups)
        if config.kind == "vq":
            net = VQModel(**common, num_vq_embeddings=config.num_vq_embeddings, vq_embed_dim=config.latent_channels,
                          scaling_factor=1.0)
        else:
            net = AutoencoderKL(**common)
    else:
        if not config.weights:
            raise BaseWeightsMissing("the latent-space preset needs autoencoder weights: pass a local diffusers folder "
                                     "or a Hugging Face repo id in the HF cache (--autoencoder)")
        net = cls.from_pretrained(_local(config.weights, config.subfolder, "autoencoder"), **_local_kwargs())
    return net.eval().requires_grad_(False)


class LatentCodec(nn.Module):
    """Images in [-1, 1] <-> the diffusion space: the identity in pixel space, a frozen autoencoder otherwise."""

    def __init__(self, autoencoder: VQModel | AutoencoderKL | None, scaling_factor: float | None = None) -> None:
        """`scaling_factor` None: 1.0 for a VQ model (LDM's VQ-f4 latents are used unscaled), the config's for KL."""
        super().__init__()
        self.autoencoder = autoencoder
        if scaling_factor is None:
            kl = isinstance(autoencoder, AutoencoderKL)
            scaling_factor = float(autoencoder.config.scaling_factor) if kl else 1.0  # type: ignore[union-attr]
        self.scale = float(scaling_factor)

    @property
    def channels(self) -> int:
        return 3 if self.autoencoder is None else int(self.autoencoder.config.latent_channels)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Latents of images in [-1, 1] (the VQ pre-quantization latents, or the KL posterior mode)."""
        if self.autoencoder is None:
            return images
        dtype = next(self.autoencoder.parameters()).dtype
        out = self.autoencoder.encode(images.to(dtype))
        latents = out.latents if isinstance(self.autoencoder, VQModel) else out.latent_dist.mode()
        return latents.float() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] (unclamped) from latents (VQ decoding quantizes first, as in LDM)."""
        if self.autoencoder is None:
            return latents
        dtype = next(self.autoencoder.parameters()).dtype
        return self.autoencoder.decode(latents.to(dtype) / self.scale).sample.float()


class Denoiser(nn.Module):
    """The trainable part: UNet, optional ControlNet and optional condition head, called as one module.

    `forward(x_t, t, condition, embeddings)` predicts the noise; `condition` is the image-sized condition tensor
    (None for unconditional models); a `head` (the embedding ablation's projector) turns (condition, embeddings)
    into the ControlNet input. One module so that accelerate's autocast and DDP wrap the whole computation.
    """

    def __init__(self, unet: UNet2DConditionModel, controlnet: ControlNetModel | None = None,
                 head: nn.Module | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet
        self.head = head

    def components(self) -> dict[str, nn.Module]:
        """Named sub-networks as they are saved (one diffusers folder each)."""
        parts = {"unet": self.unet, "controlnet": self.controlnet, "head": self.head}
        return {k: v for k, v in parts.items() if v is not None}

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor | None = None,
                embeddings: torch.Tensor | None = None) -> torch.Tensor:
        context = sample.new_zeros(sample.shape[0], 1, self.unet.config.cross_attention_dim)
        down, mid = None, None
        if self.controlnet is not None:
            if condition is None:
                raise ValueError("this model is conditional: pass a condition tensor")
            if self.head is not None:
                condition = self.head(condition, embeddings)
            down, mid = self.controlnet(sample, timestep, encoder_hidden_states=context,
                                        controlnet_cond=condition.to(sample.dtype), return_dict=False)
        return self.unet(sample, timestep, encoder_hidden_states=context, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False)[0]
