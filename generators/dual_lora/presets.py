"""Dual-LoRA's presets: `tiny`, `demo`, `paper`; each function returns a fresh copy. LoRA ranks are in LORA_RANKS.

- `tiny`: random 32 px pixel-space networks that build in well under a second (tests), LoRA rank 4.
- `demo`: HTD's attention-free 64 px pixel-space networks (x0-prediction), trainable on 2 CPU cores in minutes,
  LoRA rank 16.
- `paper`: an SD 1.5-class backbone at 512 px: UNet widths (320, 640, 1280, 1280), 2 layers per block, mid-block
  attention, ControlNet condition encoder (16, 32, 96, 256) down to the f8 latents of SD's AutoencoderKL (4 latent
  channels, scaling 0.18215; from a local folder or the HF cache, never downloaded), LoRA rank 128 as CtrLoRA.
  The UNet is frozen (train_unet False: ControlNet-style, as CtrLoRA); point `unet_weights` at a local SD 1.5
  `unet` folder for a pretrained one. lr 1e-5, batch 8 (CtrLoRA's/ControlNet's fine-tuning settings).
Nuclei classes: K = the PanNuke schema's 6 classes (id 0, background, stays empty), as the simulator's nuclei.
No EMA: the adapters train on alternate steps, and LoRA fine-tuning (CtrLoRA) keeps the last weights.
"""

from __future__ import annotations

from histosynth.classes import get_schema
from histosynth.generators.diffusion.presets import AutoencoderConfig, ModelConfig, Preset, SampleConfig, TrainConfig

NUCLEI_SCHEMA = "pannuke"
LORA_RANKS = {"tiny": 4, "demo": 16, "paper": 128}
"""LoRA rank of both adapters per preset (lora_alpha = rank, i.e. scale 1); a custom preset takes DEFAULT_RANK."""
DEFAULT_RANK = 4
SD_VAE = "stable-diffusion-v1-5/stable-diffusion-v1-5"


def _classes() -> int:
    return get_schema(NUCLEI_SCHEMA).num_classes


def _tiny() -> Preset:
    return Preset(
        "tiny",
        ModelConfig(resolution=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                    cross_attention_dim=4, conditioning_widths=(8, 16), num_classes=_classes()),
        TrainConfig(steps=2, batch_size=2, lr=1e-3, ema_decay=None, heterogeneity=None, progress=False,
                    mixed_precision="no"),
        SampleConfig(steps=2, batch_size=4),
    )


def _demo() -> Preset:
    return Preset(
        "demo",
        ModelConfig(resolution=64, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
                    conditioning_widths=(16, 32), prediction_type="sample", num_classes=_classes()),
        TrainConfig(steps=150, batch_size=16, lr=1e-3, lr_schedule="cosine", warmup_steps=15, ema_decay=None,
                    heterogeneity=None, checkpoint_every=50),
        SampleConfig(steps=50, batch_size=16),
    )


def _paper() -> Preset:
    return Preset(
        "paper",
        ModelConfig(resolution=512, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, norm_num_groups=32,
                    mid_attention=True, attention_heads=8, cross_attention_dim=768, train_unet=False,
                    num_classes=_classes(), beta_start=0.00085, beta_end=0.012,
                    autoencoder=AutoencoderConfig(kind="kl", weights=SD_VAE, subfolder="vae",
                                                  block_out_channels=(128, 256, 512, 512), latent_channels=4,
                                                  scaling_factor=0.18215)),
        TrainConfig(steps=100_000, batch_size=8, lr=1e-5, ema_decay=None, heterogeneity=None, checkpoint_every=5_000),
        SampleConfig(steps=50, batch_size=4),
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
