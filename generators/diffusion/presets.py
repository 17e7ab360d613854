"""Dataclass configs of the diffusion generators: model, training, sampling (their presets live beside each
generator, e.g. histosynth.generators.htd.presets).

Configs are plain dataclasses: `override` changes fields by name and refuses
unknown ones, so CLI flags map onto them without framework magic.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from histosynth.errors import InputError
from histosynth.labels.curriculum import DEFAULT_SCHEDULE, HTD_LEVELS
from histosynth.labels.heterogeneity import CropSizing

C = TypeVar("C")
_SIZING = CropSizing()  # HTD's crop sizes in px at 256 px patches, defined once in histosynth.labels.heterogeneity


@dataclass
class AutoencoderConfig:
    """A frozen first-stage autoencoder: diffusers `VQModel` ("vq", HTD's VQ-f4) or `AutoencoderKL` ("kl", SD).

    `weights` is a local folder or a Hugging Face repo id (read from the HF cache; never downloaded while
    HF_HUB_OFFLINE is set); `random_init` builds the architecture below with random weights (tests only).
    """

    kind: str = "vq"
    weights: str | None = None
    subfolder: str | None = None
    random_init: bool = False
    scaling_factor: float | None = None  # latents are multiplied by it; None = 1.0 for "vq" (LDM), the model's own for "kl"
    # Architecture used with random_init (CompVis VQ-f4: ch 128, ch_mult [1, 2, 4], 2 res blocks, z 3, 8192 codes).
    block_out_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    latent_channels: int = 3
    num_vq_embeddings: int = 8192
    norm_num_groups: int = 32

    @property
    def downsample(self) -> int:
        """Spatial reduction factor (f4 for three blocks)."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class CropConfig:
    """HTD's per-class visual crops: side d_i = d_base * (1 + alpha * complexity_i), clipped to [d_min, d_max].

    Sizes are fractions of the image side; the defaults are labels' CropSizing (d_base 100, d in [50, 200] px
    at 256 px) divided by 256, so the two cannot drift apart; complexity_i is
    1 - 4 pi A / P^2 of class i's region (0 for a disc, towards 1 for thin or fragmented regions). A crop is a
    window at least `min_purity` inside its class (1.0: all its pixels, as the precursor's all-ones search).
    The rule is histosynth.labels.heterogeneity.class_crops.
    """

    d_base: float = _SIZING.d_base / _SIZING.reference
    alpha: float = _SIZING.alpha
    d_min: float = _SIZING.d_min / _SIZING.reference
    d_max: float = _SIZING.d_max / _SIZING.reference
    min_purity: float = _SIZING.min_purity
    # "source": the crop stays where it was cut (the precursor code; the output then contains those real pixels);
    # "corner": it goes to the top-left corner of its sparse tensor, so the model must transfer, not copy, appearance.
    placement: str = "source"


@dataclass
class EmbeddingConfig:
    """The embedding ablation: a frozen encoder's feature of each crop, projected to `dim` channels."""

    encoder: str = "effnet-lite0"
    pretrained: bool = True
    weights: str | None = None
    dim: int = 16


@dataclass
class ModelConfig:
    """Networks and noise schedule. `num_classes` (K) fixes the condition width (4K for HTD); None = from data."""

    resolution: int = 64
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 2
    norm_num_groups: int = 8
    mid_attention: bool = False
    attention_heads: int = 8
    cross_attention_dim: int = 8  # diffusers' conditional UNet always has a text slot; we feed it one zero token
    conditioning_widths: tuple[int, ...] = (16, 32, 96, 256)  # ControlNet condition encoder; cut to the latent stride
    autoencoder: AutoencoderConfig | None = None
    unet_weights: str | None = None  # optional pretrained UNet folder (diffusers layout)
    train_unet: bool = True  # False: freeze the base UNet, train the ControlNet only (classic ControlNet)
    num_classes: int | None = None
    tissue_schema: str | None = None
    crops: CropConfig = field(default_factory=CropConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    num_train_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0205
    beta_schedule: str = "scaled_linear"  # CompVis calls this "linear": linspace of sqrt(beta), squared
    prediction_type: str = "epsilon"  # "epsilon" (LDM, HTD), "sample" (x0) or "v_prediction"

    @property
    def latent_stride(self) -> int:
        """Image pixels per latent pixel (1 in pixel space)."""
        return 1 if self.autoencoder is None else self.autoencoder.downsample


@dataclass
class CurriculumConfig:
    """Coarse-to-fine granularity for pseudo-labeled maps over the first `warmup_steps` steps.

    schedule "linear" (the default, histosynth.labels.curriculum.DEFAULT_SCHEDULE) is HTD's
    k'(t) = k_min + (k_max - k_min) min(1, t / warmup), snapped down to an available k; "stages" gives each k an
    equal share of the warm-up (histosynth.labels.curriculum has both).
    `luts[k]` maps each finest-level cluster id to its id at granularity k (hierarchical k-means makes these);
    the training maps are at the finest level (max of `ks`).
    """

    ks: tuple[int, ...] = HTD_LEVELS
    warmup_steps: int = 10_000
    luts: dict[int, list[int]] = field(default_factory=dict)
    schedule: str = DEFAULT_SCHEDULE


@dataclass
class TrainConfig:
    """The training loop. `steps` counts optimizer steps; each uses grad_accum micro-batches of batch_size per process."""

    steps: int = 1000
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-4
    scale_lr: bool = False  # CompVis: lr *= batch_size * grad_accum * processes
    lr_schedule: str = "constant_with_warmup"  # any diffusers.optimization.get_scheduler name
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    loss: str = "l2"  # "l1" (HTD precursor) or "l2"
    mixed_precision: str = "auto"  # "auto": bf16 where this machine runs it faster (histosynth.speed); "no", "fp16", "bf16"
    compile: bool = False  # torch.compile the networks' forwards for the run (minutes up front, faster steps after)
    ema_decay: float | None = 0.999
    cfg_dropout: float = 0.1  # probability of training a sample with its condition zeroed (classifier-free guidance)
    checkpoint_every: int = 0  # optimizer steps between resumable checkpoints; 0 = only at the end
    keep_checkpoints: int = 2
    snapshot_steps: tuple[int, ...] = ()  # optimizer steps after which the model is saved to out/snapshots/ (learning curves)
    seed: int = 0
    heterogeneity: tuple[float, float] | None = (0.2, 0.8)  # (lo, hi) of labels.heterogeneity.is_heterogeneous: 2+ classes, main <= hi, 2nd >= lo of tissue
    augment: bool = True  # random flips and 90-degree rotations of image and map together
    curriculum: CurriculumConfig | None = None
    progress: bool = True


@dataclass
class SampleConfig:
    """Defaults of `sample`: sampler (see sampling.SAMPLERS), steps, guidance scale, DDIM eta, batch size."""

    sampler: str = "ddim"
    steps: int = 50
    guidance: float = 1.0
    eta: float = 0.0
    batch_size: int = 8


@dataclass
class Preset:
    """A named bundle of model, training and sampling configs."""

    name: str
    model: ModelConfig
    train: TrainConfig
    sample: SampleConfig


def override(config: C, **changes: Any) -> C:
    """A copy of a config dataclass with the fields given a value changed (None = "not given", as for CLI flags).

    Unknown names raise: a typo is an error, not a silently ignored option.
    """
    return replace_fields(config, {k: v for k, v in changes.items() if v is not None})


def replace_fields(config: C, changes: dict[str, Any]) -> C:
    """A copy of a config dataclass with exactly these fields changed (None included); unknown names raise."""
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    unknown = sorted(set(changes) - names)
    if unknown:
        raise InputError(f"{type(config).__name__} has no field(s) {', '.join(unknown)} (fields: {', '.join(sorted(names))})")
    return dataclasses.replace(copy.deepcopy(config), **changes)  # type: ignore[type-var]


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(config)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """Inverse of `to_dict` for a saved ModelConfig (lists back to tuples, nested configs rebuilt)."""
    data = dict(data)
    ae = data.pop("autoencoder", None)
    crops = data.pop("crops", None) or {}
    emb = data.pop("embedding", None) or {}
    tuples = {"block_out_channels", "conditioning_widths"}
    data = {k: tuple(v) if k in tuples and v is not None else v for k, v in data.items()}
    autoencoder = None
    if ae is not None:
        ae = {k: tuple(v) if k == "block_out_channels" else v for k, v in ae.items()}
        autoencoder = AutoencoderConfig(**ae)
    return ModelConfig(**data, autoencoder=autoencoder, crops=CropConfig(**crops), embedding=EmbeddingConfig(**emb))


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of `to_dict` for a saved TrainConfig (lists back to tuples, the curriculum rebuilt, not dropped)."""
    data = dict(data)
    curriculum = data.pop("curriculum", None)
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    if curriculum is not None:
        curriculum = dict(curriculum, ks=tuple(curriculum.get("ks", ())),
                          luts={int(k): list(v) for k, v in (curriculum.get("luts") or {}).items()})
        values["curriculum"] = CurriculumConfig(**curriculum)
    return TrainConfig(**values)


def sample_config_from_dict(data: dict[str, Any]) -> SampleConfig:
    """Inverse of `to_dict` for a SampleConfig."""
    return SampleConfig(**data)
