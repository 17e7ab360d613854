"""Encoder metadata as validated data (torch-free, so `histosynth ls encoders` stays cheap).

An `EncoderMeta` says what an encoder is (architecture, feature size), how its input must be prepared
(`PreprocessSpec`), where its weights come from and under which license, and which loader builds it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from histosynth.deprecated import renamed_field

RGB = tuple[float, float, float]

IMAGENET_MEAN: RGB = (0.485, 0.456, 0.406)
IMAGENET_STD: RGB = (0.229, 0.224, 0.225)

ResizeMode = Literal["bicubic", "bilinear", "internal"]
InputKind = Literal["float", "uint8"]
WeightsKind = Literal["hf", "url", "package"]

_RESIZE_MODES = ("bicubic", "bilinear", "internal")
_INPUT_KINDS = ("float", "uint8")
_WEIGHTS_KINDS = ("hf", "url", "package")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a uint8 RGB batch becomes an encoder's input; encoders with equal specs share one preprocessed batch.

    kind "float": resize to floor(size / crop_pct) with `resize`/`antialias` and take the center size x size (timm's
    eval transform; crop_pct 1 is a plain resize), scale to [0, 1], then (x - mean) / std.
    kind "uint8": the batch is passed on unchanged (uint8 NCHW at native size); the model resizes/normalizes itself.
    """

    kind: InputKind
    size: int | None = None
    resize: str | None = None
    antialias: bool = False
    mean: RGB | None = None
    std: RGB | None = None
    crop_pct: float = 1.0

    @property
    def key(self) -> str:
        """A short stable string for this spec (cache keys, logs)."""
        if self.kind == "uint8":
            return "uint8-native"
        aa = "-aa" if self.antialias else ""
        crop = f"-crop{self.crop_pct:g}" if self.crop_pct != 1.0 else ""
        return f"{self.size}px-{self.resize}{aa}{crop}-mean{list(self.mean or ())}-std{list(self.std or ())}"

    @property
    def resize_to(self) -> int:
        """The side images are resized to before the center crop: floor(size / crop_pct), as timm computes it."""
        if self.size is None:
            raise ValueError(f"{self.kind} preprocessing has no input size")
        return math.floor(self.size / self.crop_pct)


@dataclass(frozen=True)
class EncoderMeta:
    """One encoder: identity, input contract, weights source, license/gating, citation and loader target."""

    name: str
    arch: str  # human description, e.g. "ViT-L/16 (timm vit_large_patch16_224)"
    arch_id: str  # the concrete builder id the loader uses (a timm/torchvision model name)
    feature_dim: int
    input_size: int  # side length the network sees (for kind "uint8", the size it resizes to internally)
    resize: ResizeMode
    antialias: bool
    mean: RGB | None
    std: RGB | None
    pooling: str  # how the (N, feature_dim) vector is formed, e.g. "CLS token"
    license: str
    weights_kind: WeightsKind
    weights_source: str  # HF repo id, URL, or "module:attr" of a callable returning a file path
    gated: bool
    citation: str
    loader: str  # "module:attr" of `build(meta, weights_file) -> torch.nn.Module`
    weights_files: tuple[str, ...] = ()  # candidate file names inside an HF repo / local folder, first match wins
    weights_aliases: tuple[str, ...] = ()  # other spellings of the HF repo id (the HF cache folder is case-sensitive)
    weights_label: str = ""  # what the catalog's weights are, in words (results describe a user's file instead)
    input_kind: InputKind = "float"
    crop_pct: float = 1.0  # resize to input_size / crop_pct, then center-crop input_size (timm's eval transform)
    pretrained_cfg: str = ""  # the timm pretrained config the resize filter, crop, mean and std are taken from
    preprocess_source: str = ""  # where the resize filter and crop come from when not a timm config, and how sure
    heavy: bool = False  # >= ~300 M parameters: tens of seconds to build on CPU (tests mark these slow)
    notes: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not self.name or self.name != self.name.strip():
            problems.append("empty or padded name")
        if self.feature_dim <= 0 or self.input_size <= 0:
            problems.append("feature_dim and input_size must be positive")
        if self.resize not in _RESIZE_MODES:
            problems.append(f"resize {self.resize!r} not in {_RESIZE_MODES}")
        if self.input_kind not in _INPUT_KINDS:
            problems.append(f"input_kind {self.input_kind!r} not in {_INPUT_KINDS}")
        if self.weights_kind not in _WEIGHTS_KINDS:
            problems.append(f"weights_kind {self.weights_kind!r} not in {_WEIGHTS_KINDS}")
        if self.input_kind == "float":
            if self.resize == "internal":
                problems.append("resize 'internal' needs input_kind 'uint8'")
            if self.mean is None or self.std is None or len(self.mean) != 3 or len(self.std) != 3:
                problems.append("float inputs need 3-channel mean and std")
            elif min(self.std) <= 0:
                problems.append("std must be positive")
        if not 0.0 < self.crop_pct <= 1.0:
            problems.append(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if ":" not in self.loader:
            problems.append(f"loader {self.loader!r} must look like 'package.module:attr'")
        if self.weights_kind == "hf" and not self.weights_files:
            problems.append("HF-sourced weights need at least one candidate file name")
        if problems:
            raise ValueError(f"invalid EncoderMeta {self.name!r}: " + "; ".join(problems))

    @property
    def preprocess(self) -> PreprocessSpec:
        """The input preparation this encoder needs (hashable: group encoders by it)."""
        if self.input_kind == "uint8":
            return PreprocessSpec(kind="uint8")
        return PreprocessSpec(
            kind="float",
            size=self.input_size,
            resize=self.resize,
            antialias=self.antialias,
            mean=tuple(self.mean),  # type: ignore[arg-type]
            std=tuple(self.std),  # type: ignore[arg-type]
            crop_pct=self.crop_pct,
        )

    @property
    def summary(self) -> str:
        """One line for listings: architecture, feature size, license, gating."""
        gate = ", gated" if self.gated else ""
        return f"{self.arch}; {self.feature_dim}-d; {self.input_size}px; {self.license}{gate}"

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (for `histosynth ls` and result provenance)."""
        return asdict(self)


renamed_field(EncoderMeta, "licence", "license")  # the British spelling, for one release
