"""The downstream task: train a segmenter on dataset A (synthetic, real or a mix), test it on held-out real dataset B.

Two kinds share everything here but their data, model, loss and scores (a `Kind` strategy): `TISSUE` (DeepLabv3+,
tissue.py) and `NUCLEI` (HoVer-Net, hovernet.py + hover_post.py + nuclei_metrics.py, in nuclei_task.py).

One run trains one model per seed on A's split, predicts B's split and scores each seed's predictions; every metric
is reported as the mean over seeds with a Student-t interval over seeds (mean +- t_{n-1} s / sqrt(n)): with the few
seeds a training budget allows (3 by default) a bootstrap over seeds has too few distinct resamples to mean
anything, and the t-interval states its assumption (seed-to-seed variation roughly normal). With one seed there is
no interval; intervals are clipped to the metric's range ([0, 1], ratios >= 0). A training set scored beside a
real-trained one also gets the ratio of its headline metric (mIoU, PQ) to the real row's, seed by seed (seed s of
both), with its own interval. What a seed varies: the model's initialisation (decoder; the encoder starts from the same ImageNet
weights), the batches, crops and augmentations.

Tissue metrics are pooled over the test set from one summed confusion matrix (IoU_c = TP / (TP + FP + FN),
Dice_c = 2 TP / (2 TP + FP + FN), means over the foreground classes present in the reference), pixels labelled 255
left out; the mean over images of each image's foreground mIoU is reported beside it, since the HTD paper does not
say which it uses.

Training is resumable: every `checkpoint_every` steps the model, optimiser, schedule, step, losses and both random
states (numpy batches, torch dropout) are written atomically to a folder keyed by the training data's content hash,
the settings and the seed, so a killed run replays from its last checkpoint to the same weights, and a finished
one is not trained again.

Data parallel (`torchrun --nproc_per_node N -m histosynth.cli bench seg ...`): as in generator training,
`batch_size` is per process, so N processes train on a global batch of N x batch_size. Every process draws the
same global crop plan from the shared seeded generator and takes its own consecutive share (rank r: crops
r*B..(r+1)*B-1), so N processes with batch B see exactly the samples one process with batch N*B sees, step for
step. DistributedDataParallel averages the gradients (the mean of the per-process mean losses: the global mean
when every crop has as many labelled pixels); the logged loss is that mean too. What still differs from one
process: BatchNorm statistics are per process (torch's SyncBatchNorm is GPU-only), dropout masks are drawn per
process, and float sums run in another order, so N processes reach the same metric as one only up to the
seed-to-seed spread (tests/integration/test_distributed_downstream.py). One process (rank 0) writes the
checkpoints (holding every rank's dropout RNG state; the process count is part of the checkpoint key) and scores
the test set once; the others receive its scores.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
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
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult, current_task_version
from histosynth.benchmark.subjects import subject_of
from histosynth.classes import IGNORE_ID, get_schema
from histosynth.errors import InputError, UserFacingError

CONFIDENCE = 0.95
STRIDE = 16  # DeepLabv3+ output stride: inputs are padded to a multiple of it
SCORES_VERSION = 1  # of the cached per-seed scores' format (score_training_set); the task version is keyed too


@dataclass(frozen=True)
class Group:
    """This process's place in a torchrun data-parallel launch: rank of world (0 of 1 when not launched so)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def broadcast(self, value: object) -> object:
        """Rank 0's `value` on every rank (a picklable object)."""
        if self.world == 1:
            return value
        import torch.distributed as dist

        box = [value if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: object) -> list:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world == 1:
            return [value]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, value)
        return out

    def mean(self, value: torch.Tensor) -> float:
        """The mean over ranks of a scalar tensor."""
        if self.world == 1:
            return value.item()
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total)
        return float(total) / self.world


ONE_PROCESS = Group()


def process_group(device: str = "cpu") -> Group:
    """The torchrun group this process belongs to (accelerate's PartialState opens it: gloo for CPU training, NCCL
    for CUDA); Group() without torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return ONE_PROCESS
    from accelerate import PartialState

    state = PartialState(cpu=torch.device(device).type != "cuda")
    return Group(state.process_index, state.num_processes)


def close_group() -> None:
    """End the torchrun process group, if one was opened (torch warns about a group left open at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


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


def train_config(preset: str, model: str = "deeplabv3plus", **overrides) -> TrainConfig:
    """The training budget of `model`'s `preset` (crop, batch, steps, lr), with the non-None `overrides`."""
    return kind_of(model).config(preset, **overrides)


class TrainingStopped(UserFacingError):
    """A `stop` callback ended training early; the message says where the last checkpoint stays for a resumed run."""


@dataclass
class LabelledSet:
    """Images (N, H, W, 3) uint8 and their label maps (N, H, W) in `schema`: tissue class maps, or nuclei instance
    maps (ids 1..n) with `types[i][k]` the class of instance k + 1 of image i."""

    images: np.ndarray
    maps: np.ndarray
    schema: str
    ref: DataRef
    slides: set[str] = field(default_factory=set)
    types: list[np.ndarray] | None = None
    mpp: float | None = None
    positions: dict[str, list[tuple[int, int] | None]] = field(default_factory=dict)  # slide -> level-0 (x, y)


def load_set(path: Path | str, split: str, label: str, name: str | None = None) -> LabelledSet:
    """Read a split with `label` ("tissue" or "nuclei" instance maps) into memory; all samples need it and share one
    size (and, for nuclei, one mpp)."""
    from histosynth.benchmark.features import scan_rows
    from histosynth.disk import iter_samples, read_metadata

    path = Path(path)
    read_metadata(path)
    images, maps, types, slides, schema, mpps = [], [], [], set(), None, set()
    positions: dict[str, list[tuple[int, int] | None]] = {}
    for i, sample in enumerate(iter_samples(path, split)):
        where = f"{path}: split {split!r} sample {i} ({sample.where})"
        if label == "tissue":
            if sample.tissue is None:
                raise InputError(f"{where} has no tissue map; the tissue task needs one")
            maps.append(sample.tissue)
            schema = sample.tissue_schema
        else:
            if sample.nuclei is None or sample.nuclei.instances is None:
                raise InputError(f"{where} has no nuclei instance map; the nuclei task needs one")
            maps.append(sample.nuclei.instances)
            types.append(sample.nuclei.class_ids)
            schema = sample.nuclei.schema
            mpps.add(sample.provenance.mpp)
        if images and sample.image.shape != images[0].shape:
            raise InputError(f"{where} is {sample.image.shape[:2]}, sample 0 is {images[0].shape[:2]}; one size per dataset")
        images.append(sample.image)
        prov = sample.provenance
        if prov.slide_id is not None:
            slide = f"{prov.source}:{prov.slide_id}"
            slides.add(slide)
            positions.setdefault(slide, []).append(None if prov.x is None or prov.y is None else (prov.x, prov.y))
    if not images:
        raise InputError(f"{path}: split {split!r} holds no samples")
    mpp = None
    if label == "nuclei":
        if None in mpps:
            raise InputError(f"{path}: split {split!r} has samples without mpp; nuclei post-processing scales with it")
        if max(mpps) > min(mpps) * 1.01:  # one magnification per set, up to the rounding of resampled reads
            raise InputError(f"{path}: split {split!r} mixes mpp {min(mpps)}..{max(mpps)}; one magnification per set")
        mpp = float(np.median(sorted(mpps)))
    ref = DataRef(name or path.name, str(path.resolve()), scan_rows(path, split).content_hash, len(images))
    return LabelledSet(np.stack(images), np.stack(maps), schema, ref, slides, types if label == "nuclei" else None, mpp,
                       positions)


def load_tissue_set(path: Path | str, split: str, name: str | None = None) -> LabelledSet:
    """`load_set` of tissue maps."""
    return load_set(path, split, "tissue", name)


def remap_set(data: LabelledSet, target_schema: str, mapping: dict[str, str] | None) -> LabelledSet:
    """`data` with its classes in `target_schema` (tissue.class_remap's LUT); unchanged when the schemas agree.
    A nucleus class mapped to 'ignore' becomes type 0 (unclassified: it still counts for detection and binary PQ)."""
    from histosynth.benchmark.downstream.tissue import class_remap

    if data.schema == target_schema and not mapping:
        return data
    lut = class_remap(data.schema, target_schema, mapping)
    if data.types is None:
        return dataclasses.replace(data, maps=lut[data.maps], schema=target_schema)
    lut = np.where(lut == IGNORE_ID, 0, lut).astype(np.uint8)
    return dataclasses.replace(data, types=[lut[t] for t in data.types], schema=target_schema)


def to_input(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1] (the Lite0 weights' preprocessing)."""
    from histosynth.benchmark.segmenter import to_input as lite0_input

    return lite0_input(images)


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

    def check(self, data: LabelledSet, num_classes: int, config: TrainConfig) -> None:
        raise NotImplementedError

    def batch(self, rng: np.random.Generator, data: LabelledSet, config: TrainConfig, group: Group = ONE_PROCESS
              ) -> tuple[np.ndarray, object]:
        """This process's share of one global batch (inputs, targets): `crop_plan` drawn for the whole group."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor, targets: object, device: str) -> torch.Tensor:
        raise NotImplementedError

    def scores(self, model: nn.Module, test: LabelledSet, preset: str, device: str) -> dict[str, float]:
        raise NotImplementedError


def crop_plan(rng: np.random.Generator, data: LabelledSet, batch_size: int, crop: int, group: Group = ONE_PROCESS):
    """Random (image, top, left) of `batch_size` crops and one rotation k (x 90 degrees) and flip for the batch.

    In a process group every rank draws the plan of the global batch (batch_size x world) and keeps its own
    `batch_size` consecutive crops: the same draws as one process with the global batch."""
    n, h, w = data.maps.shape
    total = batch_size * group.world
    index = rng.integers(0, n, total)
    top = rng.integers(0, h - crop + 1, total)
    left = rng.integers(0, w - crop + 1, total)
    plan = list(zip(index, top, left, strict=True))[group.rank * batch_size : (group.rank + 1) * batch_size]
    return plan, int(rng.integers(0, 4)), bool(rng.integers(0, 2))


def augment(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the (H, W, ...) leading axes by k x 90 degrees, then flip columns if `flip`."""
    array = np.rot90(array, k, axes=(0, 1))
    return np.ascontiguousarray(array[:, ::-1] if flip else array)


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

    def check(self, data: LabelledSet, num_classes: int, config: TrainConfig) -> None:
        if config.crop % STRIDE:
            raise InputError(f"--crop must be a multiple of {STRIDE} (the DeepLabv3+ output stride), got {config.crop}")
        labelled = data.maps[data.maps != IGNORE_ID]
        if labelled.size == 0:
            raise InputError(f"{data.ref.path}: the tissue maps have no labelled pixel to train on")
        if labelled.max() >= num_classes:
            raise InputError(f"{data.ref.path}: the maps hold class id {int(labelled.max())}, the schema has {num_classes}")

    def batch(self, rng: np.random.Generator, data: LabelledSet, config: TrainConfig, group: Group = ONE_PROCESS
              ) -> tuple[np.ndarray, np.ndarray]:
        h, w = data.maps.shape[1:]
        crop = min(config.crop, h - h % STRIDE, w - w % STRIDE)
        plan, k, flip = crop_plan(rng, data, config.batch_size, crop, group)
        x = np.stack([augment(data.images[i, t : t + crop, l : l + crop], k, flip) for i, t, l in plan])
        y = np.stack([augment(data.maps[i, t : t + crop, l : l + crop], k, flip) for i, t, l in plan])
        return x, y

    def loss(self, model: nn.Module, x: torch.Tensor, targets: np.ndarray, device: str) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), torch.from_numpy(targets).long().to(device), ignore_index=IGNORE_ID)

    def scores(self, model: nn.Module, test: LabelledSet, preset: str, device: str) -> dict[str, float]:
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


def _fingerprint(kind: Kind, data: LabelledSet, preset: str, config: TrainConfig, num_classes: int, seed: int,
                 weights: str | None, world: int = 1) -> str:
    key = {"model": kind.model, "data": data.ref.content_hash, "schema": data.schema, "preset": preset,
           "config": asdict(config), "classes": num_classes, "seed": seed, "weights": weights}
    if world > 1:  # another global batch: another training (one process keeps its earlier keys)
        key["processes"] = world
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Trained:
    """A trained model and its loss curve; `resumed_at` is the step a checkpoint resumed from (0 if none)."""

    model: nn.Module
    num_classes: int
    losses: list[float]
    seconds: float
    resumed_at: int = 0


def train_model(kind: Kind, data: LabelledSet, num_classes: int, preset: str, config: TrainConfig, seed: int,
                checkpoints: Path | None = None, weights: str | Path | None = None, device: str = "cpu",
                stop: Callable[[int, float], bool] | None = None, desc: str = "train", group: Group = ONE_PROCESS
                ) -> Trained:
    """Train `kind`'s model of `preset` on `data` for `config.steps` AdamW steps (cosine schedule) from `seed`.

    With `checkpoints`, resumes from `<checkpoints>/<fingerprint>/state.pt` when present; `stop(step, loss)`
    returning True raises TrainingStopped after that step (tests use it to interrupt a run). In a process `group`
    each rank trains on its share of every batch under DistributedDataParallel (module docstring).
    """
    config.check()
    kind.check(data, num_classes, config)
    weights = str(weights) if weights else None
    start = time.perf_counter()
    cuda = torch.device(device).type == "cuda"
    with torch.random.fork_rng(devices=[torch.device(device)] if cuda else []):
        torch.manual_seed(seed)
        model = kind.build(preset, num_classes, weights, pretrained=False)
        encoder = kind.encoder(model)
        if encoder is not None:
            encoder.load_state_dict(_pretrained_encoder(kind, preset, num_classes, weights))
        model.to(device).train()
        forward = model
        if group.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            forward = DistributedDataParallel(model, device_ids=[torch.device(device)] if cuda else None)
            if not group.main:  # dropout masks: an own stream per rank (rank 0 continues one process's stream)
                torch.manual_seed(int(np.random.SeedSequence([seed, group.rank]).generate_state(1)[0]))
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, config.steps)
        rng = np.random.default_rng(seed)
        losses: list[float] = []
        step = 0
        state_file = None
        if checkpoints is not None:
            key = _fingerprint(kind, data, preset, config, num_classes, seed, weights, group.world)
            state_file = Path(checkpoints) / key / "state.pt"
            if state_file.is_file():
                state = torch.load(state_file, map_location=device, weights_only=False)
                model.load_state_dict(state["model"])
                losses, step = list(state["losses"]), int(state["step"])
                if step < config.steps:  # a finished run's file keeps the weights only
                    optimiser.load_state_dict(state["optimiser"])
                    schedule.load_state_dict(state["schedule"])
                    rng.bit_generator.state = state["numpy_rng"]
                    torch.set_rng_state(_own_rng(state, "torch_rng", group))
                    if cuda and "cuda_rng" in state:
                        torch.cuda.set_rng_state(_own_rng(state, "cuda_rng", group), device)
        resumed_at = step
        per_epoch = max(1, math.ceil(len(data.maps) / (config.batch_size * group.world)))
        bar = tqdm(total=config.steps, initial=step, desc=desc, unit="step", leave=False, disable=not group.main)
        while step < config.steps:
            x, targets = kind.batch(rng, data, config, group)
            loss = kind.loss(forward, to_input(x).to(device), targets, device)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
            losses.append(group.mean(loss))
            bar.update(1)
            bar.set_postfix(epoch=f"{step / per_epoch:.1f}", loss=f"{losses[-1]:.3f}")
            if state_file is not None and (step % config.checkpoint_every == 0 or step == config.steps):
                _save_state(state_file, model, optimiser, schedule, rng, losses, step, final=step == config.steps,
                            device=device, group=group)
            if stop is not None and step < config.steps and stop(step, losses[-1]):
                bar.close()
                kept = f"; rerun to resume from {state_file}" if state_file is not None else " (no checkpoints kept)"
                raise TrainingStopped(f"training stopped after step {step} of {config.steps}{kept}")
        bar.close()
    model.eval()
    return Trained(model, num_classes, losses, time.perf_counter() - start, resumed_at)


def train_tissue(data: LabelledSet, num_classes: int, preset: str, config: TrainConfig, seed: int,
                 checkpoints: Path | None = None, weights: str | Path | None = None, device: str = "cpu",
                 stop: Callable[[int, float], bool] | None = None, desc: str = "train") -> Trained:
    """`train_model` of DeepLabv3+ (tissue.build_deeplab(preset))."""
    return train_model(TISSUE, data, num_classes, preset, config, seed, checkpoints, weights, device, stop, desc)


@lru_cache(maxsize=4)
def _pretrained_encoder(kind: Kind, preset: str, num_classes: int, weights: str | None) -> dict[str, torch.Tensor]:
    """The ImageNet encoder state of `kind`'s `preset` model, read once per process (seeds differ in the other
    layers' init only, and reading the weights costs seconds per model). Built outside the seeded RNG stream, so a
    cache hit and a miss leave the same random state behind."""
    with torch.random.fork_rng(devices=[]):
        return kind.encoder(kind.build(preset, num_classes, weights, pretrained=True)).state_dict()


def _own_rng(state: dict, key: str, group: Group) -> torch.Tensor:
    """This rank's RNG state from a checkpoint: rank 0's under the one-process key, all ranks' under rank_<key>."""
    return state[key] if group.main else state[f"rank_{key}"][group.rank]


def _save_state(path: Path, model: nn.Module, optimiser, schedule, rng: np.random.Generator, losses: list[float],
                step: int, final: bool, device: str = "cpu", group: Group = ONE_PROCESS) -> None:
    """Rank 0 writes the state; every rank of a group takes part (each one's dropout RNG state goes in)."""
    cuda = torch.device(device).type == "cuda"  # dropout on the GPU draws from its own generator
    rngs = (torch.get_rng_state(), torch.cuda.get_rng_state(device) if cuda else None)
    rank_rngs = group.gather(rngs) if not final else []
    if not group.main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": model.state_dict(), "losses": losses, "step": step}
    if not final:
        state |= {"optimiser": optimiser.state_dict(), "schedule": schedule.state_dict(),
                  "numpy_rng": rng.bit_generator.state, "torch_rng": rank_rngs[0][0]}
        if group.world > 1:
            state["rank_torch_rng"] = [r[0] for r in rank_rngs]
        if cuda:
            state["cuda_rng"] = rank_rngs[0][1]
            if group.world > 1:
                state["rank_cuda_rng"] = [r[1] for r in rank_rngs]
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


def score_training_set(kind: Kind, name: str, train: LabelledSet, test: LabelledSet, preset: str, config: TrainConfig,
                       seeds: list[int], checkpoints: Path | None, weights: str | Path | None, device: str,
                       stop: Callable[[int, float], bool] | None = None, group: Group = ONE_PROCESS,
                       score_cache: Path | None = None) -> SeedScores:
    """Train one model per seed on `train` (already in the test schema) and score each on `test` (rank 0 scores,
    the other ranks of a group receive its scores). With `score_cache`, a seed whose scores were computed before
    (same model, data contents, settings, seed, torch version and thread count) is read back instead of trained
    again: the real-data rows every submission is compared with are computed once."""
    num_classes = get_schema(test.schema).num_classes
    values: dict[str, list[float]] = {}
    seconds = []
    for seed in seeds:
        cached = _cached_scores(score_cache, kind, train, test, preset, config, num_classes, seed, weights, group)
        if cached is not None:
            scores, spent = cached
        else:
            trained = train_model(kind, train, num_classes, preset, config, seed, checkpoints, weights, device, stop,
                                  desc=f"{name} seed {seed}", group=group)
            spent = trained.seconds
            scores = group.broadcast(kind.scores(trained.model, test, preset, device) if group.main else None)
            _store_scores(score_cache, kind, train, test, preset, config, num_classes, seed, weights, group, scores,
                          spent)
        seconds.append(spent)
        for metric, value in scores.items():
            values.setdefault(metric, []).append(float(value))
    return SeedScores(name, list(seeds), values, train.ref, seconds)


def _score_key(kind: Kind, train: LabelledSet, test: LabelledSet, preset: str, config: TrainConfig, num_classes: int,
               seed: int, weights: str | Path | None, group: Group) -> str:
    key = {"train": _fingerprint(kind, train, preset, config, num_classes, seed, str(weights) if weights else None,
                                 group.world),
           "test": test.ref.content_hash, "test_schema": test.schema, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "scores_version": SCORES_VERSION,
           "task_version": current_task_version("tstr", {"model": kind.model})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _cached_scores(cache: Path | None, *key_parts) -> tuple[dict[str, float], float] | None:
    if cache is None:
        return None
    path = Path(cache) / f"{_score_key(*key_parts)}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in record["scores"].items()}, float(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: computed again (and rewritten)


def _store_scores(cache: Path | None, kind: Kind, train: LabelledSet, test: LabelledSet, preset: str,
                  config: TrainConfig, num_classes: int, seed: int, weights: str | Path | None, group: Group,
                  scores: dict[str, float], seconds: float) -> None:
    if cache is None or not group.main:
        return
    from histosynth.atomic import write_text_atomic

    key = _score_key(kind, train, test, preset, config, num_classes, seed, weights, group)
    Path(cache).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(cache) / f"{key}.json", json.dumps({"scores": scores, "seconds": seconds}) + "\n")


def metric_results(kind: Kind, scores: SeedScores, test: LabelledSet, baseline: SeedScores | None = None
                   ) -> list[MetricResult]:
    """One MetricResult per metric: the mean over seeds with the t-interval; with a `baseline` (the real-trained
    row) also `<headline>_ratio_to_real`, the per-seed ratio paired by seed."""
    results = []
    series = dict(scores.values)
    ratio = f"{kind.headline}_ratio_to_real"
    if baseline is not None and baseline is not scores:
        series[ratio] = [a / b if b > 0 else float("nan")
                         for a, b in zip(scores.values[kind.headline], baseline.values[kind.headline], strict=True)]
    for metric, values in series.items():
        finite = [v for v in values if np.isfinite(v)]
        extra = {"train": scores.name, "n_train": scores.ref.n, "seeds": scores.seeds,
                 "per_seed": [v if np.isfinite(v) else None for v in values],
                 "interval": "Student t over seeds, clipped to the metric's range" if len(finite) > 1 else "none (one seed)",
                 "averaging": kind.averaging}
        if not finite:
            extra["undefined"] = "no seed gave a finite value (class absent from test reference and predictions)"
            results.append(MetricResult(metric, None, n_real=test.ref.n, extra=extra, higher_is_better=True))
            continue
        mean, low, high = t_interval(finite, bounds=(0.0, math.inf) if metric == ratio else (0.0, 1.0))
        results.append(MetricResult(metric, mean, ci_low=low, ci_high=high, ci_level=CONFIDENCE if low is not None else None,
                                    n_real=test.ref.n, extra=extra, higher_is_better=True))
    return results


def _tile_stride(points: np.ndarray) -> float | None:
    """The smallest Chebyshev distance between two distinct positions (None with fewer than two)."""
    from scipy.spatial import cKDTree

    points = np.unique(points, axis=0)
    if len(points) < 2:
        return None
    distances, _ = cKDTree(points).query(points, k=2, p=np.inf)
    return float(distances[:, 1].min())


def _overlapping(train: list[tuple[int, int] | None], test: list[tuple[int, int] | None]) -> bool:
    """Whether a test patch may overlap a training patch of the same slide. The tiles' level-0 extent is not in the
    provenance, so it is taken as the tiling's stride: the smallest distance between two patches of the same set
    (the smaller of the two sets' strides). A split by region (histosynth.splits) leaves every test tile at least one
    stride from every training tile. Patches without a position, or sets too small to show a stride, could be
    anywhere."""
    from scipy.spatial import cKDTree

    if any(p is None for p in train) or any(p is None for p in test):
        return True
    a, b = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    strides = [s for s in (_tile_stride(a), _tile_stride(b)) if s is not None]
    if not strides:
        return True
    nearest, _ = cKDTree(a).query(b, k=1, p=np.inf)
    return bool(nearest.min() < min(strides))


def _check_disjoint(train: LabelledSet, test: LabelledSet, where: str) -> None:
    """Refuse a test set that shares patches of a slide with a training set (a model tested on what it saw): a
    shared slide is allowed only when the two sets' patches do not overlap, as a split by region gives."""
    shared = sorted(s for s in train.slides & test.slides
                    if _overlapping(train.positions.get(s, [None]), test.positions.get(s, [None])))
    if shared:
        listed = ", ".join(shared[:5]) + (f" and {len(shared) - 5} more" if len(shared) > 5 else "")
        raise InputError(f"{where} and the test set have overlapping (or unplaced) patches of slide(s) {listed}; "
                         "test on held-out slides or regions (`data build --split-by slide|region`)")


def run_downstream(trains: dict[str, tuple[Path, str]], test: tuple[Path, str], model: str = "deeplabv3plus",
                   preset: str = "tiny", config: TrainConfig | None = None, seeds: list[int] | None = None,
                   mapping: dict[str, str] | None = None, real: str | None = None, checkpoints: Path | None = None,
                   weights: str | Path | None = None, device: str = "cpu", task: str = "seg",
                   stop: Callable[[int, float], bool] | None = None, reference_cache: Path | None = None) -> BenchmarkRun:
    """Train `model` on each of `trains` ({name: (folder, split)}), test on `test` (folder, split); one BenchmarkRun.

    `real` names the real-trained entry of `trains`: the others get a ratio-to-real row. Labels of a training set
    in another schema go through tissue.class_remap with `mapping`. With `reference_cache`, the `real` entry's
    per-seed scores are cached there (score_training_set), so repeated runs against one real set train it once.
    """
    start = time.perf_counter()
    group = process_group(device)
    if group.world > 1 and device == "cuda":  # one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', group.rank)}"
    kind = kind_of(model)
    config = config or kind.config(preset)
    config.check()
    seeds = list(seeds if seeds is not None else range(3))
    if not seeds:
        raise InputError("--seeds must be >= 1")
    test_set = load_set(*test, kind.label, name=Path(test[0]).name)
    sets = {}
    for name, (path, split) in trains.items():
        if Path(path).resolve() == Path(test[0]).resolve() and split == test[1]:
            raise InputError(f"training set {name!r} is the test set ({path}, split {split!r}); test on held-out data")
        data = remap_set(load_set(path, split, kind.label, name=name), test_set.schema, mapping)
        _check_disjoint(data, test_set, f"training set {name!r} ({path})")
        sets[name] = data
    scored = {name: score_training_set(kind, name, data, test_set, preset, config, seeds, checkpoints, weights, device,
                                       stop, group, reference_cache if name == real else None)
              for name, data in sets.items()}
    baseline = scored.get(real) if real else None
    role = {name: f"train:{name}" if task == "tstr" else "train" for name in scored}
    results = []
    for name, s in scored.items():
        for result in metric_results(kind, s, test_set, baseline):
            result.subject = role[name]
            results.append(result)
    data_refs = {role[name]: s.ref for name, s in scored.items()}
    subjects = {role[name]: subject_of(trains[name][0], trains[name][1], s.ref) for name, s in scored.items()}
    data_refs["test"] = test_set.ref
    return BenchmarkRun(
        task=task, results=results, data=data_refs, subjects=subjects,
        settings={"model": kind.model, "preset": preset, "train": asdict(config), "seeds": seeds,
                  "test_split": test[1], "train_splits": {n: s for n, (_, s) in trains.items()}, "schema": test_set.schema,
                  "mapping": mapping, "real": real, "device": device, "averaging": kind.averaging,
                  "threads": torch.get_num_threads(),
                  "interval": f"{CONFIDENCE:.0%} Student t over seeds", "mpp": test_set.mpp, "processes": group.world,
                  "batch": "train.batch_size per process; global batch = batch_size x processes",
                  "train_seconds": {n: s.train_seconds for n, s in scored.items()}},
        wall_time_s=time.perf_counter() - start)


__all__ = ["ONE_PROCESS", "TISSUE", "Group", "Kind", "LabelledSet", "TrainConfig", "Trained", "TrainingStopped",
           "augment", "close_group", "crop_plan", "kind_of", "load_set", "load_tissue_set", "metric_results",
           "predict_maps", "process_group", "remap_set",
           "run_downstream", "t_interval", "train_config", "train_model", "train_tissue"]
