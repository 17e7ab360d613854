"""A small tissue segmenter for label-consistency scores: DeepLabv3+ on an ImageNet EfficientNet-Lite0.

The SPADE/OASIS protocol scores a map-conditioned generator by segmenting its outputs with a network trained on
real images and comparing the result with the maps the generator was given. This module builds that network
(segmentation-models-pytorch `DeepLabV3Plus` with the timm `tf_efficientnet_lite0` encoder), loads the offline
ImageNet weights of the `effnet-lite0` encoder into it (the same file and loader as the FD encoder; its 1280-d
head, conv_head + bn2, has no place in a segmentation encoder and is dropped), trains it on (image, map) pairs of
any class schema (pixels 255 are ignored) in the one training loop (histosynth.training) and predicts maps.
Inputs are scaled to [-1, 1] (mean = std = 0.5), the preprocessing those weights work best with (timm's cfg for
tf_efficientnet_lite0; tests/unit/test_encoders.py checks them on two ImageNet photographs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError
from histosynth.speed import PRECISIONS
from histosynth.training import (
    Batch,
    LoopConfig,
    LoopSettings,
    OptimizerSpec,
    RNGState,
    StepContext,
    TrainStep,
    run_training,
)

ENCODER = "effnet-lite0"
HEAD_PREFIXES = ("conv_head.", "bn2.", "classifier.")  # the classification head: not part of the feature encoder


def build_segmenter(num_classes: int, pretrained: bool = True, weights: str | Path | None = None,
                    atrous_rates: tuple[int, int, int] = (12, 24, 36)) -> nn.Module:
    """DeepLabv3+ (output stride 16, ASPP `atrous_rates`; smp's default rates unless given) with `num_classes`
    outputs; its encoder carries the ImageNet EfficientNet-Lite0 weights unless `pretrained` is False (random init,
    for tests). Inputs: (B, 3, H, W) in [-1, 1], H and W multiples of 16."""
    import segmentation_models_pytorch as smp

    if num_classes < 2:
        raise ValueError(f"a segmenter needs at least 2 classes, got {num_classes}")
    model = smp.DeepLabV3Plus(encoder_name="tu-tf_efficientnet_lite0", encoder_weights=None, classes=num_classes,
                              encoder_output_stride=16, decoder_atrous_rates=tuple(atrous_rates))
    if pretrained:
        load_encoder_weights(model, weights)
    return model


def load_encoder_weights(model: nn.Module, weights: str | Path | None = None) -> int:
    """Load the `effnet-lite0` ImageNet weights into `model.encoder.model` strictly; returns the tensor count.

    The weights go through the FD encoder's own loader (`build_effnet_lite0`: the package's tensors in order into
    timm), then every tensor but the head's is loaded by name, so a missing or extra tensor raises.
    """
    from histosynth.benchmark.encoders import ENCODERS
    from histosynth.benchmark.encoders.loaders import build_effnet_lite0, load_strict
    from histosynth.benchmark.encoders.weights import resolve_weights

    meta = ENCODERS.get(ENCODER)
    path = resolve_weights(meta, weights)
    state = {k: v for k, v in build_effnet_lite0(meta, path).state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    load_strict(model.encoder.model, state, meta, path)
    return len(state)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@dataclass
class TrainedSegmenter:
    """A trained segmenter, its class count and how its training went (`precision`: what the loop trained in, "no"
    = fp32; `step_seconds`: the wall time of each step, empty for a segmenter read from the cache)."""

    model: nn.Module
    num_classes: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    precision: str = "no"
    step_seconds: list[float] = field(default_factory=list)

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(B, H, W) uint8 class maps of (B, H, W, 3) uint8 images."""
        self.model.eval()
        out = []
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                out.append(self.model(to_input(images[start : start + batch_size])).argmax(1).to(torch.uint8).numpy())
        return np.concatenate(out) if out else np.zeros((0, *images.shape[1:3]), np.uint8)


class SegmenterStep(TrainStep):
    """One step of the segmenter: cross-entropy (255 ignored) on a batch drawn with replacement from one seeded numpy
    stream (checkpointed with the run), AdamW (weight decay 1e-4) with a cosine schedule over the run."""

    def __init__(self, model: nn.Module, images: np.ndarray, maps: np.ndarray, steps: int, batch_size: int, lr: float,
                 seed: int, augment: bool) -> None:
        self.model, self.images, self.maps = model, images, maps
        self.steps, self.batch_size, self.lr, self.augment = steps, batch_size, lr, augment
        self.rng = RNGState(seed)
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_ID)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        steps = max(self.steps, 1)
        return {"model": OptimizerSpec(list(self.model.parameters()), self.lr, (0.9, 0.999), 1e-4,
                                       scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))}

    def ema_optimizer(self) -> str | None:
        return None

    def states(self) -> list[RNGState]:
        return [self.rng]

    def batch(self, step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
        """A batch with replacement, each with a random rotation by 90 degrees and flip when `augment`."""
        rng = self.rng.generator
        index = rng.integers(0, len(self.images), self.batch_size)
        x, y = self.images[index], self.maps[index]
        if self.augment:
            k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
            if flip:
                x, y = x[:, :, ::-1], y[:, :, ::-1]
        target = torch.from_numpy(np.ascontiguousarray(y)).long().to(device)
        return {"x": to_input(x).to(device), "y": target}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        loss = self.loss_fn(ctx.modules["model"](batch["x"]), batch["y"])
        ctx.apply(loss)
        return {"loss": loss}


def train_segmenter(images: np.ndarray, maps: np.ndarray, num_classes: int, steps: int = 300, batch_size: int = 16,
                    lr: float = 1e-3, seed: int = 0, pretrained: bool = True, weights: str | Path | None = None,
                    augment: bool = True, cache: Path | None = None, checkpoints: Path | None = None,
                    checkpoint_every: int = 100, stop: Callable[[int, float], bool] | None = None,
                    mixed_precision: str = "no") -> TrainedSegmenter:
    """Train a segmenter on (N, H, W, 3) uint8 images and (N, H, W) uint8 maps (ids < num_classes, 255 ignored).

    AdamW with a cosine schedule, cross-entropy ignoring 255; batches drawn with replacement from `seed`, each
    with a random rotation by 90 degrees and flip applied to image and map alike when `augment`. Training runs in
    the one training loop (histosynth.training) on the CPU, in `mixed_precision` ("no" = fp32, the default; "bf16":
    autocast). With `cache`, a segmenter trained before on the same arrays with the same settings, torch version and
    thread count is loaded from there (safetensors) instead of trained again. Training checkpoints (every
    `checkpoint_every` steps) go to `<checkpoints>/<key>`, or with `cache` and no `checkpoints` to
    `<cache>/<key>.training` until the model is cached; a run stopped or killed resumes from there. `stop(step, loss)` returning True raises TrainingStopped after that step.
    """
    if images.shape[:3] != maps.shape or images.ndim != 4:
        raise ValueError(f"images {images.shape} and maps {maps.shape} do not pair up as (N, H, W, 3) and (N, H, W)")
    labeled = maps[maps != IGNORE_ID]
    if labeled.size == 0:
        raise InputError("the maps have no labeled pixel to train on")
    if labeled.max() >= num_classes:
        raise ValueError(f"the maps hold class id {int(labeled.max())} but the segmenter has {num_classes} classes")
    if mixed_precision not in PRECISIONS:
        raise ValueError(f"unknown mixed_precision {mixed_precision!r}; choose from {', '.join(PRECISIONS)}")
    settings = {"num_classes": num_classes, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                "pretrained": pretrained, "weights": str(weights) if weights else None, "augment": augment}
    if mixed_precision != "no":  # fp32 keeps the key it had before the option existed
        settings["mixed_precision"] = mixed_precision
    key = _cache_key(images, maps, settings) if cache is not None or checkpoints is not None else ""
    folder = Path(cache) / key if cache is not None else None
    if folder is not None and (loaded := _load_cached(folder, num_classes)) is not None:
        return loaded
    training = Path(checkpoints) / key if checkpoints is not None else \
        Path(cache) / f"{key}.training" if cache is not None else None
    start = time.perf_counter()
    loop = LoopConfig(steps=steps, batch_size=batch_size, lr=lr, weight_decay=1e-4, checkpoint_every=checkpoint_every,
                      mixed_precision=mixed_precision, seed=seed, progress=False, device="cpu", desc="segmenter")
    with torch.random.fork_rng(devices=[]):  # the seed fixes the initial weights and every dropout mask
        torch.manual_seed(seed)
        model = build_segmenter(num_classes, pretrained, weights)
        step = SegmenterStep(model, images, maps, steps, batch_size, lr, seed, augment)
        result = run_training(step, step.batch, loop, training, resume=training is not None, stop=stop)
    model.eval()
    trained = TrainedSegmenter(model, num_classes, result.loss_history, time.perf_counter() - start,
                               result.precision, result.step_seconds)
    if folder is not None:
        _store_cached(folder, trained)
        if checkpoints is None:
            shutil.rmtree(training, ignore_errors=True)  # the cached model replaces the training state
    return trained


def _cache_key(images: np.ndarray, maps: np.ndarray, settings: dict) -> str:
    digest = hashlib.sha256()
    for array in (images, maps):
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    digest.update(json.dumps({**settings, "torch": torch.__version__, "threads": torch.get_num_threads()},
                             sort_keys=True).encode())
    return digest.hexdigest()[:24]


def _load_cached(folder: Path, num_classes: int) -> TrainedSegmenter | None:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        record = json.loads((folder / "training.json").read_text(encoding="utf-8"))
        model = build_segmenter(num_classes, pretrained=False)
        model.load_state_dict(load_file(folder / "model.safetensors"))
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError):
        return None  # missing or damaged: trained again (and rewritten)
    model.eval()
    return TrainedSegmenter(model, num_classes, [float(x) for x in record["losses"]], float(record["seconds"]))


def _store_cached(folder: Path, trained: TrainedSegmenter) -> None:
    from safetensors.torch import save_file

    from histosynth.atomic import atomic_directory

    with atomic_directory(folder) as partial:
        save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, partial / "model.safetensors")
        (partial / "training.json").write_text(json.dumps({"losses": trained.losses, "seconds": trained.seconds}))


__all__ = ["TrainedSegmenter", "build_segmenter", "load_encoder_weights", "to_input", "train_segmenter"]
