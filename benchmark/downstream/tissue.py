"""Tissue segmentation for downstream utility: DeepLabv3+ presets, IoU/Dice scores, explicit class remaps.

Models (segmentation-models-pytorch `DeepLabV3Plus`, always `encoder_weights=None`: smp's default downloads):
- `paper`: ResNet-50 encoder, output stride 16, ASPP rates (6, 12, 18), the DeepLabv3+ paper's setting (Chen et al.
  2018, arXiv:1802.02611, sec. 4: rates (6, 12, 18) at output stride 16; smp's default is (12, 24, 36)). Its
  ImageNet weights come from a local torchvision `resnet50` state dict (`weights=`) or torch.hub's cache.
- `tiny` / `demo`: the label-consistency segmenter (histosynth.benchmark.segmenter) on the offline ImageNet
  EfficientNet-Lite0 (288 of 288 tensors, strictly), same stride and rates, for CPU runs.

Scores (the HTD paper does not say how it averages, so both averages are given and named):
- Pixels whose reference id is 255 (ignore) are left out everywhere.
- Per class, from a confusion matrix: IoU_c = TP / (TP + FP + FN), Dice_c = 2 TP / (2 TP + FP + FN). A class absent
  from both reference and prediction has no score (NaN).
- Class mean: over the foreground classes (id >= `first_foreground`, 1 by default: 0 is background / glass) present
  in the reference. A class only predicted scores IoU 0 in the per-class list but is left out of the mean (as in
  label consistency and MONAI's `ignore_empty=True`); its false positives still count as misses of the true classes.
- Pooled (`miou`, `mean_dice`; the headline numbers): one confusion matrix summed over every test pixel, then the
  class mean. Large images and common classes weigh in proportion to their pixels.
- Over images (`image_miou`, `image_mean_dice`): the class mean of each image's own matrix, then the mean over the
  images that have a foreground class in their reference. Every image weighs the same, so a rare class misses
  whole images' worth of score at once; this average is lower than the pooled one when errors sit in small regions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from histosynth.benchmark.label_consistency import confusion_matrices, foreground_mean, per_class_iou
from histosynth.classes import BACKGROUND_ID, IGNORE_ID, REMAPS, ClassSchema, get_schema, remap_table
from histosynth.errors import InputError

TORCHVISION_RESNET50 = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")  # IMAGENET1K_V1, _V2 file names


DEEPLAB_PAPER = "Chen et al. 2018, Encoder-Decoder with Atrous Separable Convolution (DeepLabv3+), arXiv:1802.02611"


@dataclass(frozen=True)
class SegPreset:
    """A DeepLabv3+ configuration and its training schedule (square crops of `resolution` px)."""

    name: str
    encoder: str  # smp encoder name
    resolution: int
    batch_size: int
    steps: int
    lr: float
    output_stride: int = 16
    atrous_rates: tuple[int, int, int] = (6, 12, 18)
    description: str = ""


SEG_PRESETS: dict[str, SegPreset] = {
    "tiny": SegPreset("tiny", "tu-tf_efficientnet_lite0", 64, 4, 20, 1e-3,
                      description="Lite0 on 64 px crops, a few steps: end-to-end checks in seconds on CPU"),
    "demo": SegPreset("demo", "tu-tf_efficientnet_lite0", 128, 16, 400, 1e-3,
                      description="Lite0 on 128 px crops: the simulator experiment at CPU scale"),
    # Schedule of DeepLabv3 (arXiv:1706.05587, sec. 4): crop 513, batch 16, lr 0.007 (poly), 30k iterations.
    "paper": SegPreset("paper", "resnet50", 512, 16, 30_000, 7e-3,
                       description=f"ResNet-50, output stride 16, ASPP (6, 12, 18) as in {DEEPLAB_PAPER}"),
}


def get_seg_preset(name: str | SegPreset) -> SegPreset:
    """The preset called `name` (a SegPreset passes through)."""
    if isinstance(name, SegPreset):
        return name
    if name not in SEG_PRESETS:
        raise InputError(f"unknown segmentation preset {name!r} (known: {', '.join(SEG_PRESETS)})")
    return SEG_PRESETS[name]


def build_deeplab(preset: str | SegPreset, num_classes: int, weights: str | Path | None = None,
                  pretrained: bool = True) -> nn.Module:
    """DeepLabv3+ of `preset` with `num_classes` outputs; inputs (B, 3, H, W) in [-1, 1] (`segmenter.to_input`), H
    and W multiples of 16. The encoder gets ImageNet weights (from `weights`, else the default offline place) unless
    `pretrained` is False (random init, for tests)."""
    preset = get_seg_preset(preset)
    if preset.encoder == "tu-tf_efficientnet_lite0":
        from histosynth.benchmark.segmenter import build_segmenter

        if preset.output_stride != 16:
            raise ValueError(f"preset {preset.name!r}: the Lite0 segmenter is built at output stride 16")
        return build_segmenter(num_classes, pretrained, weights, atrous_rates=preset.atrous_rates)
    import segmentation_models_pytorch as smp

    if num_classes < 2:
        raise ValueError(f"a segmenter needs at least 2 classes, got {num_classes}")
    path = resnet50_weights_path(weights) if pretrained else None  # refuse before building
    model = smp.DeepLabV3Plus(encoder_name=preset.encoder, encoder_weights=None, classes=num_classes,
                              encoder_output_stride=preset.output_stride,
                              decoder_atrous_rates=tuple(preset.atrous_rates))
    if path is not None:
        load_resnet50_weights(model.encoder, path)
    return model


def resnet50_weights_path(weights: str | Path | None = None) -> Path:
    """The ResNet-50 ImageNet weight file: `weights`, else torchvision's file in torch.hub's cache; nothing is
    downloaded."""
    from histosynth.benchmark.encoders.weights import EncoderWeightsError, torch_hub_checkpoints

    if weights is None:
        cached = [torch_hub_checkpoints() / name for name in TORCHVISION_RESNET50]
        found = next((path for path in cached if path.is_file()), None)
        if found is None:
            raise EncoderWeightsError(
                f"the paper preset's ResNet-50 needs ImageNet weights: pass weights=PATH (a torchvision resnet50 state "
                f"dict) or put {TORCHVISION_RESNET50[0]} in {cached[0].parent}; nothing is downloaded")
        return found
    if not Path(weights).is_file():
        raise EncoderWeightsError(f"ResNet-50 weight file {weights} does not exist")
    return Path(weights)


def load_resnet50_weights(encoder: nn.Module, weights: str | Path | None = None) -> int:
    """Load a torchvision ResNet-50 state dict (its `fc` dropped) strictly into smp's ResNet-50 encoder; returns
    the tensor count. `weights` as in `resnet50_weights_path`."""
    from histosynth.benchmark.encoders.weights import EncoderWeightsError, read_state_dict

    path = resnet50_weights_path(weights)
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = encoder.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise EncoderWeightsError(f"{path} is not a torchvision ResNet-50 state dict: {len(missing)} missing "
                                  f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of the "
                                  f"wrong shape {wrong[:3]}")
    encoder.load_state_dict(state, strict=True)
    return len(state)


# ---- scores ------------------------------------------------------------------------------------------------------


def per_class_dice(confusion: np.ndarray) -> np.ndarray:
    """(..., K) Dice per class of (..., K, K) confusion matrices; NaN for a class absent from both sides."""
    tp = np.diagonal(confusion, axis1=-2, axis2=-1).astype(np.float64)
    sizes = confusion.sum(axis=-2) + confusion.sum(axis=-1)  # |pred_c| + |ref_c| = 2 TP + FP + FN
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sizes > 0, 2 * tp / np.maximum(sizes, 1), np.nan)


@dataclass
class SegScores:
    """Tissue-segmentation scores of a test set; the averaging is the module docstring's."""

    miou: float  # pooled: class mean of the summed confusion matrix
    mean_dice: float
    per_class_iou: np.ndarray  # (K,) pooled, NaN for a class in neither reference nor prediction
    per_class_dice: np.ndarray
    image_miou: float  # the mean over images of each image's class mean
    image_mean_dice: float
    n_images: int
    n_images_scored: int  # images with a foreground class in their reference (the image means' denominator)
    pixels: int  # labeled (non-ignore) pixels
    first_foreground: int
    confusion: np.ndarray  # (K, K) summed, rows = reference, columns = prediction
    image_confusion: np.ndarray = field(repr=False)  # (N, K, K), e.g. for bootstrap intervals over images

    def to_dict(self) -> dict:
        """JSON-ready numbers (NaN becomes None) with the averaging spelled out."""

        def num(value: float) -> float | None:
            return float(value) if np.isfinite(value) else None

        return {
            "miou": num(self.miou), "mean_dice": num(self.mean_dice),
            "image_miou": num(self.image_miou), "image_mean_dice": num(self.image_mean_dice),
            "per_class_iou": [num(v) for v in self.per_class_iou],
            "per_class_dice": [num(v) for v in self.per_class_dice],
            "n_images": self.n_images, "n_images_scored": self.n_images_scored, "pixels": self.pixels,
            "confusion": self.confusion.tolist(), "higher_is_better": True,
            "averaging": f"IoU/Dice per class; class mean over classes >= {self.first_foreground} present in the "
                         "reference; miou/mean_dice pooled over all test pixels (one confusion matrix), image_* the "
                         "mean over images of each image's class mean; ignore (255) excluded",
        }


def seg_scores_from_confusion(image_confusion: np.ndarray, first_foreground: int = 1) -> SegScores:
    """Scores of per-image (N, K, K) confusion matrices (e.g. accumulated batch by batch over a test set)."""
    if image_confusion.ndim != 3 or image_confusion.shape[1] != image_confusion.shape[2]:
        raise ValueError(f"expected (N, K, K) confusion matrices, got {image_confusion.shape}")
    total = image_confusion.sum(axis=0)
    iou, dice = per_class_iou(total), per_class_dice(total)
    image_iou = foreground_mean(per_class_iou(image_confusion), image_confusion, first_foreground)
    image_dice = foreground_mean(per_class_dice(image_confusion), image_confusion, first_foreground)
    scored = np.isfinite(image_iou)
    return SegScores(
        miou=float(foreground_mean(iou, total, first_foreground)),
        mean_dice=float(foreground_mean(dice, total, first_foreground)),
        per_class_iou=iou, per_class_dice=dice,
        image_miou=float(image_iou[scored].mean()) if scored.any() else float("nan"),
        image_mean_dice=float(image_dice[scored].mean()) if scored.any() else float("nan"),
        n_images=len(image_confusion), n_images_scored=int(scored.sum()), pixels=int(total.sum()),
        first_foreground=first_foreground, confusion=total, image_confusion=image_confusion,
    )


def seg_scores(pred: np.ndarray, true: np.ndarray, num_classes: int, first_foreground: int = 1) -> SegScores:
    """Score predicted class maps against reference maps, (N, H, W) or one (H, W) each (255 in `true` ignored)."""
    pred, true = np.asarray(pred), np.asarray(true)
    if pred.ndim == 2 and true.ndim == 2:
        pred, true = pred[None], true[None]
    return seg_scores_from_confusion(confusion_matrices(pred, true, num_classes), first_foreground)


# ---- class remaps ------------------------------------------------------------------------------------------------


def _schema(schema: ClassSchema | str) -> ClassSchema:
    return schema if isinstance(schema, ClassSchema) else get_schema(schema)


def class_remap(source_schema: ClassSchema | str, target_schema: ClassSchema | str,
                mapping: dict[str, str] | None = None) -> np.ndarray:
    """(256,) uint8 lookup table taking `source_schema` ids to `target_schema` ids: `lut[map]` remaps a map.

    `mapping` names source class -> target class (case-insensitive; the target may be "ignore" to drop a class
    explicitly); classes it leaves out pair up with the target class of the same name (background with background).
    Without `mapping`, a registered remap (histosynth.classes.REMAPS) applies if there is one. Ignore maps to
    itself; a source class left without a target raises InputError naming it. Ids outside the source schema map
    to 255 (maps are validated against their schema when read).
    """
    source, target = _schema(source_schema), _schema(target_schema)
    if source.kind != target.kind:
        raise InputError(f"cannot remap {source.kind} schema {source.name!r} onto {target.kind} schema {target.name!r}")
    if mapping is None and (source.name, target.name) in REMAPS:
        return remap_table({BACKGROUND_ID: BACKGROUND_ID, **REMAPS[(source.name, target.name)]}, "ignore")
    targets = {name.lower(): i for i, name in enumerate(target.names)} | {"ignore": IGNORE_ID}
    given = {k.lower(): v for k, v in (mapping or {}).items()}
    unknown = sorted(set(given) - {name.lower() for name in source.names})
    if unknown:
        raise InputError(f"class remap {source.name!r} -> {target.name!r}: {unknown} not in {source.name!r} "
                         f"(classes: {', '.join(source.names)})")
    ids, unmapped = {}, []
    for cls in source.classes:
        explicit = cls.name.lower() in given
        name = given[cls.name.lower()] if explicit else cls.name
        if name.lower() in targets:
            ids[cls.id] = targets[name.lower()]
        elif explicit:
            raise InputError(f"class remap {source.name!r} -> {target.name!r}: target {name!r} of {cls.name!r} is "
                             f"not in {target.name!r} (classes: {', '.join(target.names)}, ignore)")
        else:
            unmapped.append(cls.name)
    if unmapped:
        raise InputError(f"class remap {source.name!r} -> {target.name!r}: no target for {unmapped} (map each "
                         f"to a class of {target.name!r} or to 'ignore')")
    return remap_table(ids, "ignore")


__all__ = ["SEG_PRESETS", "SegPreset", "SegScores", "build_deeplab", "class_remap", "get_seg_preset",
           "load_resnet50_weights", "per_class_dice", "resnet50_weights_path", "seg_scores", "seg_scores_from_confusion"]
