"""The downstream task: train a segmenter on dataset A (synthetic, real or a mix), test it on held-out real dataset B.

One run trains one model per seed on A's split, predicts B's split and scores each seed's predictions; every metric
is reported as the mean over seeds with a Student-t interval over seeds (mean +- t_{n-1} s / sqrt(n)): with the few
seeds a training budget allows (3 by default) a bootstrap over seeds has too few distinct resamples to mean
anything, and the t-interval states its assumption (seed-to-seed variation roughly normal). With one seed there is
no interval. What a seed varies: the model's initialisation (decoder; the encoder starts from the same ImageNet
weights), the batches, crops and augmentations.

Tissue metrics are pooled over the test set from one summed confusion matrix (IoU_c = TP / (TP + FP + FN),
Dice_c = 2 TP / (2 TP + FP + FN), means over the foreground classes present in the reference), pixels labelled 255
left out; the mean over images of each image's foreground mIoU is reported beside it, since the HTD paper does not
say which it uses.

Training is resumable: every `checkpoint_every` steps the model, optimiser, schedule, step, losses and both random
states (numpy batches, torch dropout) are written atomically to a folder keyed by the training data's content hash,
the settings and the seed, so a killed run replays from its last checkpoint to the same weights, and a finished
one is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from histosynth.atomic import atomic_file
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.classes import IGNORE_ID, get_schema
from histosynth.errors import InputError

CONFIDENCE = 0.95
STRIDE = 16  # DeepLabv3+ output stride: inputs are padded to a multiple of it


@dataclass(frozen=True)
class TrainConfig:
    """How one segmenter is trained: steps of `batch_size` random `crop` px crops, AdamW + cosine schedule."""

    steps: int
    batch_size: int
    crop: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    checkpoint_every: int = 50

    def check(self) -> None:
        for name in ("steps", "batch_size", "crop", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.crop % STRIDE:
            raise InputError(f"--crop must be a multiple of {STRIDE} (the DeepLabv3+ output stride), got {self.crop}")


def train_config(preset: str, **overrides) -> TrainConfig:
    """The training budget of a tissue.SEG_PRESETS preset (crop, batch, steps, lr), with non-None `overrides`."""
    from histosynth.benchmark.downstream.tissue import get_seg_preset

    seg = get_seg_preset(preset)
    base = {"steps": seg.steps, "batch_size": seg.batch_size, "crop": seg.resolution, "lr": seg.lr,
            "checkpoint_every": max(1, min(500, seg.steps // 10))}
    return TrainConfig(**(base | {k: v for k, v in overrides.items() if v is not None}))


class TrainingStopped(Exception):
    """A `stop` callback ended training early; the last checkpoint stays for a resumed run."""


@dataclass
class TissueSet:
    """Images (N, H, W, 3) uint8 and tissue maps (N, H, W) uint8 of one dataset split, in `schema`."""

    images: np.ndarray
    maps: np.ndarray
    schema: str
    ref: DataRef
    slides: set[str] = field(default_factory=set)


def load_tissue_set(path: Path | str, split: str, name: str | None = None) -> TissueSet:
    """Read a split with tissue maps into memory; every sample needs a map and all share one size."""
    from histosynth.benchmark.features import scan_rows
    from histosynth.disk import iter_samples, read_metadata

    path = Path(path)
    read_metadata(path)
    images, maps, slides, schema = [], [], set(), None
    for i, sample in enumerate(iter_samples(path, split)):
        if sample.tissue is None:
            raise InputError(f"{path}: split {split!r} sample {i} ({sample.where}) has no tissue map; the tissue task needs one")
        if images and sample.image.shape != images[0].shape:
            raise InputError(f"{path}: split {split!r} sample {i} is {sample.image.shape[:2]}, sample 0 is "
                             f"{images[0].shape[:2]}; one size per dataset")
        images.append(sample.image)
        maps.append(sample.tissue)
        schema = sample.tissue_schema
        if sample.provenance.slide_id is not None:
            slides.add(f"{sample.provenance.source}:{sample.provenance.slide_id}")
    if not images:
        raise InputError(f"{path}: split {split!r} holds no samples")
    ref = DataRef(name or path.name, str(path.resolve()), scan_rows(path, split).content_hash, len(images))
    return TissueSet(np.stack(images), np.stack(maps), schema, ref, slides)


def remap_set(data: TissueSet, target_schema: str, mapping: dict[str, str] | None) -> TissueSet:
    """`data` with its maps in `target_schema` (tissue.class_remap's LUT); unchanged when the schemas agree."""
    from histosynth.benchmark.downstream.tissue import class_remap

    if data.schema == target_schema and not mapping:
        return data
    lut = class_remap(data.schema, target_schema, mapping)
    return TissueSet(images=data.images, maps=lut[data.maps], schema=target_schema, ref=data.ref, slides=data.slides)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1] (the Lite0 weights' preprocessing)."""
    from histosynth.benchmark.segmenter import to_input as lite0_input

    return lite0_input(images)


def _fingerprint(data: TissueSet, preset: str, config: TrainConfig, num_classes: int, seed: int,
                 weights: str | None) -> str:
    text = json.dumps({"data": data.ref.content_hash, "schema": data.schema, "preset": preset, "config": asdict(config),
                       "classes": num_classes, "seed": seed, "weights": weights}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _batch(rng: np.random.Generator, data: TissueSet, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """A batch of random crops with one random rotation by 90 degrees and flip, image and map alike."""
    n, h, w = data.maps.shape
    crop = min(config.crop, h - h % STRIDE, w - w % STRIDE)
    index = rng.integers(0, n, config.batch_size)
    top = rng.integers(0, h - crop + 1, config.batch_size)
    left = rng.integers(0, w - crop + 1, config.batch_size)
    x = np.stack([data.images[i, t : t + crop, l : l + crop] for i, t, l in zip(index, top, left, strict=True)])
    y = np.stack([data.maps[i, t : t + crop, l : l + crop] for i, t, l in zip(index, top, left, strict=True)])
    k, flip = int(rng.integers(0, 4)), bool(rng.integers(0, 2))
    x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k, axes=(1, 2))
    if flip:
        x, y = x[:, :, ::-1], y[:, :, ::-1]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


@dataclass
class Trained:
    """A trained model and its loss curve; `resumed_at` is the step a checkpoint resumed from (0 if none)."""

    model: nn.Module
    num_classes: int
    losses: list[float]
    seconds: float
    resumed_at: int = 0


def train_tissue(data: TissueSet, num_classes: int, preset: str, config: TrainConfig, seed: int,
                 checkpoints: Path | None = None, weights: str | Path | None = None, device: str = "cpu",
                 stop: Callable[[int, float], bool] | None = None, desc: str = "train") -> Trained:
    """Train DeepLabv3+ (tissue.build_deeplab(preset)) on `data` for `config.steps` steps from `seed`.

    With `checkpoints`, resumes from `<checkpoints>/<fingerprint>/state.pt` when present; `stop(step, loss)`
    returning True raises TrainingStopped after that step (tests use it to interrupt a run).
    """
    from histosynth.benchmark.downstream.tissue import build_deeplab

    config.check()
    labelled = data.maps[data.maps != IGNORE_ID]
    if labelled.size == 0:
        raise InputError(f"{data.ref.path}: the tissue maps have no labelled pixel to train on")
    if labelled.max() >= num_classes:
        raise InputError(f"{data.ref.path}: the maps hold class id {int(labelled.max())}, the schema has {num_classes}")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_deeplab(preset, num_classes, weights=weights, pretrained=False)
        model.encoder.load_state_dict(_pretrained_encoder(preset, num_classes, str(weights) if weights else None))
        model.to(device).train()
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps)
        rng = np.random.default_rng(seed)
        losses: list[float] = []
        step = 0
        state_file = None
        if checkpoints is not None:
            state_file = Path(checkpoints) / _fingerprint(data, preset, config, num_classes, seed,
                                                          str(weights) if weights else None) / "state.pt"
            if state_file.is_file():
                state = torch.load(state_file, map_location=device, weights_only=False)
                model.load_state_dict(state["model"])
                losses, step = list(state["losses"]), int(state["step"])
                if step < config.steps:  # a finished run's file keeps the weights only
                    optimiser.load_state_dict(state["optimiser"])
                    schedule.load_state_dict(state["schedule"])
                    rng.bit_generator.state = state["numpy_rng"]
                    torch.set_rng_state(state["torch_rng"])
        resumed_at = step
        loss_fn = nn.CrossEntropyLoss(ignore_index=IGNORE_ID)
        per_epoch = max(1, math.ceil(len(data.maps) / config.batch_size))
        bar = tqdm(total=config.steps, initial=step, desc=desc, unit="step", leave=False)
        while step < config.steps:
            x, y = _batch(rng, data, config)
            loss = loss_fn(model(to_input(x).to(device)), torch.from_numpy(y).long().to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(epoch=f"{step / per_epoch:.1f}", loss=f"{losses[-1]:.3f}")
            if state_file is not None and (step % config.checkpoint_every == 0 or step == config.steps):
                _save_state(state_file, model, optimiser, schedule, rng, losses, step, final=step == config.steps)
            if stop is not None and step < config.steps and stop(step, losses[-1]):
                bar.close()
                raise TrainingStopped(f"stopped after step {step}")
        bar.close()
    model.eval()
    return Trained(model, num_classes, losses, time.perf_counter() - start, resumed_at)


@lru_cache(maxsize=2)
def _pretrained_encoder(preset: str, num_classes: int, weights: str | None) -> dict[str, torch.Tensor]:
    """The ImageNet encoder state of `preset`, read once per process (seeds differ in the decoder's init only, and
    reading the weights costs seconds per model)."""
    from histosynth.benchmark.downstream.tissue import build_deeplab

    return build_deeplab(preset, num_classes, weights=weights).encoder.state_dict()


def _save_state(path: Path, model: nn.Module, optimiser, schedule, rng: np.random.Generator, losses: list[float],
                step: int, final: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "losses": losses, "step": step}
    if not final:
        state |= {"optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                  "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()}
    with atomic_file(path) as partial:
        torch.save(state, partial)


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


def t_interval(values: list[float], confidence: float = CONFIDENCE,
               bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float | None, float | None]:
    """(mean, low, high): Student-t interval of the mean over seeds, clipped to the metric's `bounds`; no interval
    for fewer than 2 values."""
    from scipy import stats

    array = np.asarray(values, np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


@dataclass
class SeedScores:
    """Per-seed scores of one training set: {metric: [value per seed]}."""

    name: str
    seeds: list[int]
    values: dict[str, list[float]]
    ref: DataRef
    train_seconds: list[float]


def score_training_set(name: str, train: TissueSet, test: TissueSet, preset: str, config: TrainConfig, seeds: list[int],
                       checkpoints: Path | None, weights: str | Path | None, device: str,
                       stop: Callable[[int, float], bool] | None = None) -> SeedScores:
    """Train one model per seed on `train` (already in the test schema) and score each on `test`."""
    num_classes = get_schema(test.schema).num_classes
    names = get_schema(test.schema).names
    values: dict[str, list[float]] = {}
    seconds = []
    for seed in seeds:
        trained = train_tissue(train, num_classes, preset, config, seed, checkpoints, weights, device, stop,
                               desc=f"{name} seed {seed}")
        seconds.append(trained.seconds)
        scores = _scores(predict_maps(trained.model, test.images, device), test.maps, num_classes, names)
        for metric, value in scores.items():
            values.setdefault(metric, []).append(value)
    return SeedScores(name, list(seeds), values, train.ref, seconds)


def _scores(pred: np.ndarray, true: np.ndarray, num_classes: int, names: list[str]) -> dict[str, float]:
    from histosynth.benchmark.downstream.tissue import seg_scores

    scores = seg_scores(pred, true, num_classes, first_foreground=1)
    out = {"miou": scores.miou, "mean_dice": scores.mean_dice, "image_miou": scores.image_miou}
    for c in range(1, num_classes):
        if np.isfinite(scores.per_class_iou[c]):
            out[f"iou/{names[c]}"] = float(scores.per_class_iou[c])
    return out


AVERAGING = ("miou, mean_dice: pooled, one confusion matrix summed over the test images, IoU/Dice per class, mean "
             "over the foreground classes (id >= 1) present in the reference; image_miou: each image's foreground mIoU, "
             "then the mean over images; iou/<class>: pooled; 255 excluded (histosynth.benchmark.downstream.tissue)")


def metric_results(scores: SeedScores, test: TissueSet, baseline: SeedScores | None = None) -> list[MetricResult]:
    """One MetricResult per metric: mean over seeds with the t-interval; `baseline` adds miou_ratio (paired by seed)."""
    results = []
    series = dict(scores.values)
    if baseline is not None and baseline is not scores and len(baseline.values["miou"]) == len(scores.values["miou"]):
        series["miou_ratio_to_real"] = [a / b if b > 0 else float("nan")
                                        for a, b in zip(scores.values["miou"], baseline.values["miou"], strict=True)]
    for metric, values in series.items():
        finite = [v for v in values if np.isfinite(v)]
        extra = {"train": scores.name, "n_train": scores.ref.n, "seeds": scores.seeds, "per_seed": [v if np.isfinite(v) else None for v in values],
                 "interval": "Student t over seeds, clipped to the metric's range" if len(finite) > 1 else "none (one seed)",
                 "averaging": AVERAGING}
        if not finite:
            extra["undefined"] = "no seed gave a finite value (class absent from test reference and predictions)"
            results.append(MetricResult(metric, None, n_real=test.ref.n, extra=extra,
                                        higher_is_better=True))
            continue
        mean, low, high = t_interval(finite, bounds=(0.0, math.inf) if metric == "miou_ratio_to_real" else (0.0, 1.0))
        results.append(MetricResult(metric, mean, ci_low=low, ci_high=high, ci_level=CONFIDENCE if low is not None else None,
                                    n_real=test.ref.n, extra=extra, higher_is_better=True))
    return results


def _check_disjoint(train: TissueSet, test: TissueSet, where: str) -> None:
    """Refuse a test set that shares a slide with a training set (a model tested on its own slides)."""
    shared = sorted(train.slides & test.slides)
    if shared:
        listed = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise InputError(f"{where} and the test set share slide(s) {listed}; test on held-out slides "
                         "(`data build --split-by slide|region`)")


def run_tissue(trains: dict[str, tuple[Path, str]], test: tuple[Path, str], preset: str = "tiny",
               config: TrainConfig | None = None, seeds: list[int] | None = None, mapping: dict[str, str] | None = None,
               real: str | None = None, checkpoints: Path | None = None, weights: str | Path | None = None,
               device: str = "cpu", task: str = "seg", stop: Callable[[int, float], bool] | None = None) -> BenchmarkRun:
    """Train on each of `trains` ({name: (folder, split)}), test on `test` (folder, split); one BenchmarkRun.

    `real` names the real-trained entry of `trains`: the others get a `miou_ratio_to_real` row. Maps of a
    training set in another schema go through tissue.class_remap with `mapping`.
    """
    start = time.perf_counter()
    config = config or train_config(preset)
    config.check()
    seeds = list(seeds if seeds is not None else range(3))
    if not seeds:
        raise InputError("--seeds must be >= 1")
    test_set = load_tissue_set(*test, name=Path(test[0]).name)
    sets = {}
    for name, (path, split) in trains.items():
        if Path(path).resolve() == Path(test[0]).resolve() and split == test[1]:
            raise InputError(f"training set {name!r} is the test set ({path}, split {split!r}); test on held-out data")
        data = remap_set(load_tissue_set(path, split, name=name), test_set.schema, mapping)
        _check_disjoint(data, test_set, f"training set {name!r} ({path})")
        sets[name] = data
    scored = {name: score_training_set(name, data, test_set, preset, config, seeds, checkpoints, weights, device, stop)
              for name, data in sets.items()}
    baseline = scored.get(real) if real else None
    results = [r for s in scored.values() for r in metric_results(s, test_set, baseline)]
    data_refs = {f"train:{name}" if task == "tstr" else "train": s.ref for name, s in scored.items()}
    data_refs["test"] = test_set.ref
    return BenchmarkRun(
        task=task, results=results, data=data_refs,
        settings={"model": "deeplabv3plus", "preset": preset, "train": asdict(config), "seeds": seeds,
                  "test_split": test[1], "train_splits": {n: s for n, (_, s) in trains.items()}, "schema": test_set.schema,
                  "mapping": mapping, "real": real, "device": device, "averaging": AVERAGING,
                  "interval": f"{CONFIDENCE:.0%} Student t over seeds",
                  "train_seconds": {n: s.train_seconds for n, s in scored.items()}},
        wall_time_s=time.perf_counter() - start)


__all__ = ["TissueSet", "TrainConfig", "Trained", "TrainingStopped", "load_tissue_set", "metric_results",
           "predict_maps", "remap_set", "run_tissue", "t_interval", "train_config", "train_tissue"]
