"""HTD's presets (shared by its ablations): `tiny`, `demo`, `paper`.

- `tiny`: random 32 px pixel-space networks that build in well under a second (tests).
- `demo`: attention-free 64 px pixel-space networks (x0-prediction) that learn something recognizable on 2 CPU
  cores in minutes (150 steps of 16 patches).
- `paper`: the published sizes (HTD's probable precursor code, github.com/saghiralfasly/stable-diffusion,
  models/ldm/semantic_synthesis256/config_train_prompt.yaml): 256 px images, frozen VQ-f4 latents
  (64x64x3), UNet model_channels 128 with channel_mult [1, 4, 8] and self-attention in the middle block (8 heads),
  1000 timesteps with CompVis' "linear" betas 0.0015 -> 0.0205, L1 loss, lr 1e-6 with 10k warm-up scaled by the
  batch (CompVis `scale_lr`), batch 12, EMA, 200 DDIM steps. The autoencoder weights are the user's (local path
  or the HF cache).
Each function returns a fresh copy.
"""

from __future__ import annotations

from histosynth.generators.diffusion.presets import (
    AutoencoderConfig,
    EmbeddingConfig,
    ModelConfig,
    Preset,
    SampleConfig,
    TrainConfig,
)


def _tiny() -> Preset:
    return Preset(
        "tiny",
        ModelConfig(resolution=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                    cross_attention_dim=4, conditioning_widths=(8, 16),
                    embedding=EmbeddingConfig(pretrained=False, dim=4)),
        TrainConfig(steps=2, batch_size=2, lr=1e-3, ema_decay=0.9, heterogeneity=None, progress=False,
                    mixed_precision="no"),
        SampleConfig(steps=2, batch_size=4),
    )


def _demo() -> Preset:
    return Preset(
        "demo",
        # x0-prediction: at a few thousand training images an epsilon model still leaves visible noise in its
        # samples (its low-noise predictions are poor); x0-prediction gives blurry but recognizable H&E in 120 steps.
        ModelConfig(resolution=64, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
                    conditioning_widths=(16, 32), prediction_type="sample"),
        # 2400 images; 120 steps already give recognizable (blurry) H&E. Training speed: perf/RESULTS.md.
        TrainConfig(steps=150, batch_size=16, lr=1e-3, lr_schedule="cosine", warmup_steps=15, ema_decay=0.99,
                    checkpoint_every=50),
        SampleConfig(steps=50, batch_size=16),
    )


def _paper() -> Preset:
    return Preset(
        "paper",
        ModelConfig(resolution=256, block_out_channels=(128, 512, 1024), layers_per_block=2, norm_num_groups=32,
                    mid_attention=True, attention_heads=8, cross_attention_dim=8,
                    autoencoder=AutoencoderConfig(kind="vq", weights="CompVis/ldm-super-resolution-4x-openimages",
                                                  subfolder="vqvae")),
        TrainConfig(steps=200_000, batch_size=12, lr=1e-6, scale_lr=True, warmup_steps=10_000, loss="l1",
                    ema_decay=0.9999, checkpoint_every=5_000),
        SampleConfig(steps=200, batch_size=8),
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
