"""Presets of the HARP-like inpainting baseline (histosynth.baselines.harp_inpaint): tiny, demo, paper.

Training reuses the diffusion generators' TrainConfig (the shared loop's fields); the fields that mean nothing here
are fixed: no heterogeneity rule (completion needs no mixed-tissue patches), no classifier-free dropout (there is
no condition to drop), no curriculum. The noise schedule is HARP's training schedule (config_restoration_model.json:
linear 1e-6 -> 0.01 over 1000 steps). HARP and Palette embed a continuous noise level and switch to another
schedule at test time (linear 1e-4 -> 0.09, 250 steps); a discrete-timestep diffusers UNet cannot, so sampling
runs on the training schedule with 250 of its timesteps (paper preset).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from histosynth.generators.diffusion.presets import TrainConfig, replace_fields


@dataclass
class HarpModelConfig:
    """The denoiser: a diffusers UNet2DModel on 6 channels (condition + composited noisy image) -> 3 (noise)."""

    resolution: int = 32
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: tuple[bool, ...] = (False, False)  # self-attention in each resolution level
    mid_attention: bool = False
    norm_num_groups: int = 8
    dropout: float = 0.0
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-6
    beta_end: float = 0.01

    def __post_init__(self) -> None:
        self.block_out_channels = tuple(self.block_out_channels)
        self.attention = tuple(self.attention)


@dataclass
class HarpSampleConfig:
    """Sampling defaults. "ddpm" / "ddim" repaste the known pixels after every step (Palette); "repaint" runs
    diffusers' RePaintScheduler with jumps back of `jump_length` steps, each stretch resampled `jump_n_sample` times."""

    sampler: str = "ddim"
    steps: int = 10
    eta: float = 0.0
    batch_size: int = 16
    jump_length: int = 10
    jump_n_sample: int = 10


@dataclass
class HarpPreset:
    name: str
    model: HarpModelConfig
    train: TrainConfig
    sample: HarpSampleConfig = field(default_factory=HarpSampleConfig)


def _train(**fields) -> TrainConfig:
    return replace_fields(TrainConfig(), {"heterogeneity": None, "cfg_dropout": 0.0, "curriculum": None, **fields})


def tiny() -> HarpPreset:
    """32 px, two levels, no attention: trains in seconds on a CPU (tests)."""
    return HarpPreset("tiny", HarpModelConfig(), _train(steps=200, batch_size=8, lr=2e-4, ema_decay=0.99,
                                                                  mixed_precision="no"),
                      HarpSampleConfig(sampler="ddim", steps=10, batch_size=16))


def demo() -> HarpPreset:
    """64 px, three levels, attention at the coarsest: the CPU demo scale of the completion comparison."""
    model = HarpModelConfig(resolution=64, block_out_channels=(32, 64, 128), layers_per_block=2,
                            attention=(False, False, True), mid_attention=True)
    return HarpPreset("demo", model, _train(steps=2000, batch_size=16, lr=2e-4, ema_decay=0.999),
                      HarpSampleConfig(sampler="ddim", steps=50, batch_size=16))


def paper() -> HarpPreset:
    """HARP's restoration UNet at 256 px (inner channels 64, multipliers 1-2-4-8, 2 res blocks, dropout 0.2;
    attention at 16 px is never reached with four levels from 256 px, so only the middle block attends), Adam 5e-5,
    EMA 0.9999, batch 8; sampling: 250 ancestral DDPM steps (HARP's test length), `--sampler repaint` for RePaint's
    jumps (jump 10, resample 10 as RePaint's paper; HARP itself resamples 3 times)."""
    model = HarpModelConfig(resolution=256, block_out_channels=(64, 128, 256, 512), layers_per_block=2,
                            attention=(False, False, False, False), mid_attention=True, norm_num_groups=32, dropout=0.2)
    return HarpPreset("paper", model, _train(steps=200_000, batch_size=8, lr=5e-5, ema_decay=0.9999, checkpoint_every=5000),
                      HarpSampleConfig(sampler="ddpm", steps=250, batch_size=8, jump_length=10, jump_n_sample=10))


PRESETS = {"tiny": tiny, "demo": demo, "paper": paper}


def model_from_dict(data: dict) -> HarpModelConfig:
    """Inverse of dataclasses.asdict for a saved HarpModelConfig (unknown keys refused by the constructor)."""
    return HarpModelConfig(**data)


def sample_from_dict(data: dict) -> HarpSampleConfig:
    return HarpSampleConfig(**data)
