"""What differs between the downstream tasks (a `Kind` strategy): the labels read, the model, its batches and loss,
its predictions and scores. `TISSUE` is DeepLabv3+ on tissue maps (tissue.py); `NUCLEI` is HoVer-Net on nuclei
instances (nuclei_task.py)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from histosynth.benchmark.downstream.data import LabeledSet, augment, crop_plan, to_input
from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.classes import IGNORE_ID, get_schema
from histosynth.errors import InputError
from histosynth.speed import PRECISIONS
from histosynth.training import TrainingStopped

__all__ = ["STRIDE", "TISSUE", "Kind", "TrainConfig", "TrainingStopped", "kind_of", "predict_maps", "train_config"]

STRIDE = 16  # DeepLabv3+ output stride: inputs are padded to a multiple of it


@dataclass(frozen=True)
class TrainConfig:
    """How one segmenter is trained: steps of `batch_size` random `crop` px crops, AdamW + cosine schedule;
    `mixed_precision` as the training loop reads it ("no" = fp32, the default; "bf16" autocast; "fp16"; "auto")."""

    steps: int
    batch_size: int
    crop: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_every: int = 50
    mixed_precision: str = "no"

    def check(self) -> None:
        for name in ("steps", "batch_size", "crop", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.mixed_precision not in PRECISIONS:
            raise InputError(f"--mixed-precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")

    def record(self) -> dict[str, object]:
        """The settings as keys and results files record them: `mixed_precision` only when it is not the default
        fp32, so every key and results file of an fp32 run stays what it was before the option existed."""
        record = asdict(self)
        if self.mixed_precision == "no":
            del record["mixed_precision"]
        return record


def train_config(preset: str, model: str = "deeplabv3plus", **overrides) -> TrainConfig:
    """The training budget of `model`'s `preset` (crop, batch, steps, lr), with the non-None `overrides`."""
    return kind_of(model).config(preset, **overrides)


class Kind:
    """What differs between downstream tasks: labels read, model, batches and loss, predictions and scores."""

    label: str  # the Sample label the task reads: "tissue" or "nuclei"
    model: str  # CLI --model name
    headline: str  # the metric of the ratio to the real-trained row
    averaging: str  # how the metrics average, for the results file

    def config(self, preset: str, **overrides) -> TrainConfig:
        raise NotImplementedError

    def build(self, preset: str, num_classes: int, weights: str | None, pretrained: bool) -> nn.Module:
        raise NotImplementedError

    def encoder(self, model: nn.Module) -> nn.Module | None:
        """The submodule that carries ImageNet weights (None: no pretrained part)."""
        raise NotImplementedError

    def check(self, data: LabeledSet, num_classes: int, config: TrainConfig) -> None:
        raise NotImplementedError

    def batch(self, rng: np.random.Generator, data: LabeledSet, config: TrainConfig, group: Group = ONE_PROCESS
              ) -> tuple[np.ndarray, object]:
        """This process's share of one global batch (inputs, targets): `crop_plan` drawn for the whole group."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor, targets: object, device: str) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, model: nn.Module, test: LabeledSet, preset: str, device: str) -> dict[str, float]:
        raise NotImplementedError


class _Tissue(Kind):
    label, model, headline = "tissue", "deeplabv3plus", "miou"
    averaging = ("miou, mean_dice: pooled, one confusion matrix summed over the test images, IoU/Dice per class, mean "
                 "over the foreground classes (id >= 1) present in the reference; image_miou: each image's foreground "
                 "mIoU, then the mean over images; iou/<class>: pooled; 255 excluded (benchmark/downstream/tissue.py)")

    def config(self, preset: str, **overrides) -> TrainConfig:
        from histosynth.benchmark.downstream.tissue import get_seg_preset

        seg = get_seg_preset(preset)
        base = {"steps": seg.steps, "batch_size": seg.batch_size, "crop": seg.resolution, "lr": seg.lr,
                "checkpoint_every": max(1, min(500, seg.steps // 10))}
        return TrainConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))

    def build(self, preset: str, num_classes: int, weights: str | None, pretrained: bool) -> nn.Module:
        from histosynth.benchmark.downstream.tissue import build_deeplab

        return build_deeplab(preset, num_classes, weights=weights, pretrained=pretrained)

    def encoder(self, model: nn.Module) -> nn.Module | None:
        return model.encoder

    def check(self, data: LabeledSet, num_classes: int, config: TrainConfig) -> None:
        if config.crop % STRIDE:
            raise InputError(f"--crop must be a multiple of {STRIDE} (the DeepLabv3+ output stride), got {config.crop}")
        labeled = data.maps[data.maps != IGNORE_ID]
        if labeled.size == 0:
            raise InputError(f"{data.ref.path}: the tissue maps have no labeled pixel to train on")
        if labeled.max() >= num_classes:
            raise InputError(f"{data.ref.path}: the maps hold class id {int(labeled.max())}, the schema has {num_classes}")

    def batch(self, rng: np.random.Generator, data: LabeledSet, config: TrainConfig, group: Group = ONE_PROCESS
              ) -> tuple[np.ndarray, np.ndarray]:
        h, w = data.maps.shape[1:]
        crop = min(config.crop, h - h % STRIDE, w - w % STRIDE)
        plan, k, flip = crop_plan(rng, data, config.batch_size, crop, group)
        x = np.stack([augment(data.images[i, t : t + crop, l : l + crop], k, flip) for i, t, l in plan])
        y = np.stack([augment(data.maps[i, t : t + crop, l : l + crop], k, flip) for i, t, l in plan])
        return x, y

    def loss(self, model: nn.Module, x: torch.Tensor, targets: np.ndarray, device: str) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), torch.from_numpy(targets).long().to(device), ignore_index=IGNORE_ID)

    def scores(self, model: nn.Module, test: LabeledSet, preset: str, device: str) -> dict[str, float]:
        from histosynth.benchmark.downstream.tissue import seg_scores

        schema = get_schema(test.schema)
        scores = seg_scores(predict_maps(model, test.images, device), test.maps, schema.num_classes, first_foreground=1)
        out = {"miou": scores.miou, "mean_dice": scores.mean_dice, "image_miou": scores.image_miou}
        for c in range(1, schema.num_classes):
            if np.isfinite(scores.per_class_iou[c]):
                out[f"iou/{schema.names[c]}"] = float(scores.per_class_iou[c])
        return out


TISSUE = _Tissue()


def kind_of(model: str) -> Kind:
    """The task kind of a --model name."""
    if model == TISSUE.model:
        return TISSUE
    if model == "hovernet":
        from histosynth.benchmark.downstream.nuclei_task import NUCLEI

        return NUCLEI
    raise InputError(f"unknown --model {model!r} (deeplabv3plus, hovernet)")


def predict_maps(model: nn.Module, images: np.ndarray, device: str = "cpu", batch_size: int = 16) -> np.ndarray:
    """(N, H, W) uint8 argmax maps; images are reflect-padded to a multiple of the output stride and cropped back."""
    n, h, w = images.shape[:3]
    pad_h, pad_w = -h % STRIDE, -w % STRIDE
    out = np.empty((n, h, w), np.uint8)
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = to_input(images[start : start + batch_size]).to(device)
            if pad_h or pad_w:
                x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
            out[start : start + batch_size] = model(x)[:, :, :h, :w].argmax(1).to(torch.uint8).cpu().numpy()
    return out
