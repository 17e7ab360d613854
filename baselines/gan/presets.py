"""Configs shared by the conditional GANs (histosynth.baselines.gan.base): training, sampling, the preset bundle.

A GAN's own network settings are a dataclass subclassing `GANModelConfig` (its presets live beside it, e.g.
histosynth.baselines.pix2pix.presets). Training is the shared loop's settings (histosynth.generators.training
.LoopSettings) plus a second optimizer: `lr` / `adam_betas` are the generator's, `lr_d` / `adam_betas_d` the
discriminator's (None: the generator's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from histosynth.errors import InputError
from histosynth.generators.diffusion.presets import replace_fields

__all__ = ["GANModelConfig", "GANPreset", "GANSampleConfig", "GANTrainConfig", "config_from_dict", "replace_fields"]

C = TypeVar("C")
LR_SCHEDULES = ("constant", "linear_decay")


@dataclass
class GANModelConfig:
    """What every GAN's network config has; a subclass adds its architecture fields (all with defaults).

    `num_classes` (tissue classes, K of the one-hot map) and `nuclei_classes` (for centroid maps) are None until
    the training data's schemas fix them (or a build override gives them); `tissue_schema` / `nuclei_schema`
    record those schemas, and conditions in another schema are refused.
    """

    resolution: int = 32
    num_classes: int | None = None
    nuclei_classes: int | None = None
    tissue_schema: str | None = None
    nuclei_schema: str | None = None


@dataclass
class GANTrainConfig:
    """The training loop of a GAN: two Adam optimizers ("g", "d"), each with `lr_schedule`.

    "linear_decay" is pix2pix's rule in steps: the LR is constant for the first `decay_start` fraction of the steps,
    then falls linearly, factor 1 - (s + 1 - D) / (N - D + 1) at step s (D constant steps of N), the reference's
    per-epoch lambda_rule with epochs read as steps; "constant" never changes it. weight_decay 0 makes AdamW Adam.
    """

    steps: int = 1000
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 2e-4  # the generator's
    lr_d: float | None = None  # the discriminator's (None: lr)
    adam_betas: tuple[float, float] = (0.5, 0.999)  # the generator's
    adam_betas_d: tuple[float, float] | None = None  # the discriminator's (None: adam_betas)
    lr_schedule: str = "linear_decay"
    decay_start: float = 0.5  # fraction of the steps run at the constant LR before "linear_decay" starts
    scale_lr: bool = False  # unused by GANs (the loop's field)
    warmup_steps: int = 0  # unused by GANs (the loop's field)
    weight_decay: float = 0.0
    max_grad_norm: float | None = None  # pix2pix and SPADE do not clip
    mixed_precision: str = "auto"
    compile: bool = False  # torch.compile the networks' forwards for the run (minutes up front, faster steps after)
    ema_decay: float | None = None  # an EMA of the generator's weights when set
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    snapshot_steps: tuple[int, ...] = ()  # optimizer steps after which the model is saved to out/snapshots/ (learning curves)
    seed: int = 0
    heterogeneity: tuple[float, float] | None = (0.2, 0.8)  # HTD's patch rule, so baselines train on HTD's patches
    augment: bool = True  # random flips and quarter turns of image and labels together
    progress: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"GAN lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {self.lr_schedule!r}")
        if not 0.0 <= self.decay_start <= 1.0:
            raise InputError(f"GAN decay_start is a fraction of the steps in [0, 1], not {self.decay_start!r}")

    def lr_factor(self) -> Callable[[int], float]:
        """The LR factor by optimizer step (a plain function, as torch's LambdaLR saves it with its state)."""
        steps, constant = max(1, int(self.steps)), round(self.decay_start * max(1, int(self.steps)))
        if self.lr_schedule == "constant":
            def factor(step: int) -> float:
                return 1.0
        else:
            def factor(step: int) -> float:
                return 1.0 - max(0, step + 1 - constant) / float(steps - constant + 1)
        return factor


@dataclass
class GANSampleConfig:
    """Sampling defaults: a GAN samples in one forward pass, so only the batch size matters."""

    batch_size: int = 16


@dataclass
class GANPreset:
    """A named bundle of a GAN's network, training and sampling configs."""

    name: str
    model: GANModelConfig
    train: GANTrainConfig = field(default_factory=GANTrainConfig)
    sample: GANSampleConfig = field(default_factory=GANSampleConfig)


def config_from_dict(kind: type[C], data: dict[str, Any]) -> C:
    """Inverse of dataclasses.asdict for a flat config saved as JSON (lists back to tuples)."""
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
