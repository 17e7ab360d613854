"""CoSyn's configs and presets: `tiny`, `demo` (pixel space, CPU) and `paper` (CoSyn's PanNuke run).

- `tiny`: a random 32 px joint UNet that builds in well under a second (tests).
- `demo`: an attention-free 64 px joint UNet, x0-prediction (as HTD's demo: at a few thousand patches an epsilon
  model still leaves noise in its samples, which the label decoding turns into spurious nuclei). Give it patches
  at <= 0.5 um/px at 64 px (e.g. `histosynth data build --source simulator --size 64 --mpp 0.5`): the decoding
  watershed's fixed 5x5 marker opening erases most nuclei at 1 um/px and coarser.
- `paper`: hvcl/CoSyn-ContextCondNucAug, scripts/pannuke/train_base_*.sh and test.py (REFERENCE.md section 1c):
  256 px, 6 classes including background, batch 7, 300k iterations, 1000 training timesteps, epsilon
  ("pred_objectives=noise"), cosine schedule for the image and a shifted cosine for the labels, context dropout
  0.1 and guidance 2.0, sampling with 1000 steps (CoSyn's PanNuke script; its default is 100). The Imagen-style
  UNet is approximated by a diffusers UNet2DModel of widths 128-256-512-512 with self-attention at 32 and 16 px.
Each function returns a fresh copy; training and sampling use the diffusion generators' TrainConfig / SampleConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histosynth.generators.diffusion.presets import SampleConfig, TrainConfig


@dataclass
class CoSynModelConfig:
    """The joint denoiser and its two noise schedules.

    The UNet's input and output hold RGB (3) + the nuclei class map as continuous one-hot (K channels, id 0 =
    background) + the HoVer x/y distance maps (2), all in [-1, 1]; its input also holds the K-channel centroid map
    (`centroid_mode` "point" as CoSyn, or "gaussian" of `centroid_sigma_px`). `num_classes` K and `nuclei_schema`
    come from the training data when None. `label_shift` is the shifted cosine's factor: the labels' SNR at step t
    is the image's times label_shift^2 (1 = one schedule for both). `contexts` names the tissue types of the
    optional context embedding (empty = no context).
    """

    resolution: int = 64
    block_out_channels: tuple[int, ...] = (32, 64)
    attention_levels: tuple[bool, ...] = (False, False)  # per level: AttnDown/UpBlock2D instead of Down/UpBlock2D
    layers_per_block: int = 2
    norm_num_groups: int = 8
    attention_head_dim: int = 8
    num_classes: int | None = None
    nuclei_schema: str | None = None
    centroid_mode: str = "point"
    centroid_sigma_px: float = 1.0
    contexts: tuple[str, ...] = ()
    num_train_timesteps: int = 1000
    label_shift: float = 0.5
    prediction_type: str = "epsilon"
    mpp: float | None = None  # microns per pixel of the training patches at this resolution (set by training)
    consistency_tolerance_px: float = 1.0  # a generated nucleus honors its centroid within this distance


@dataclass
class CoSynPreset:
    """A named bundle of model, training and sampling configs."""

    name: str
    model: CoSynModelConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)


def _tiny() -> CoSynPreset:
    return CoSynPreset(
        "tiny",
        CoSynModelConfig(resolution=32, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
                         centroid_mode="gaussian", prediction_type="sample"),
        TrainConfig(steps=2, batch_size=2, lr=1e-3, ema_decay=0.9, heterogeneity=None, progress=False, cfg_dropout=0.1,
                    mixed_precision="no"),
        SampleConfig(steps=2, batch_size=4, guidance=2.0),
    )


def _demo() -> CoSynPreset:
    return CoSynPreset(
        "demo",
        # Gaussian centroid blobs (sigma 1.5 px) rather than CoSyn's single-pixel points: a small UNet trained for
        # minutes follows a blob reliably, a lone pixel hardly at all.
        CoSynModelConfig(resolution=64, block_out_channels=(32, 64, 64), layers_per_block=1, norm_num_groups=8,
                         attention_levels=(False, False, False), centroid_mode="gaussian", centroid_sigma_px=1.5,
                         prediction_type="sample"),
        TrainConfig(steps=400, batch_size=16, lr=1e-3, lr_schedule="cosine", warmup_steps=20, ema_decay=0.99,
                    heterogeneity=None, checkpoint_every=100),
        SampleConfig(steps=50, batch_size=16, guidance=2.0),
    )


def _paper() -> CoSynPreset:
    return CoSynPreset(
        "paper",
        CoSynModelConfig(resolution=256, block_out_channels=(128, 256, 512, 512),
                         attention_levels=(False, False, True, True), layers_per_block=2, norm_num_groups=32,
                         num_classes=6, nuclei_schema="pannuke", centroid_mode="point", prediction_type="epsilon"),
        TrainConfig(steps=300_000, batch_size=7, lr=1e-4, ema_decay=0.9999, heterogeneity=None, mixed_precision="fp16",
                    checkpoint_every=5_000),
        SampleConfig(sampler="ddpm", steps=1000, batch_size=8, guidance=2.0),
    )


PRESETS = {"tiny": _tiny, "demo": _demo, "paper": _paper}
