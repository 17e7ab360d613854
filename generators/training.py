"""The training loop every generator uses, on accelerate: mixed precision on GPU, gradient accumulation, EMA,
resumable checkpoints and a tqdm bar with every named loss (a GAN's G and D). What one step computes is a pluggable
`TrainStep`: the diffusion loss (histosynth.generators.diffusion.training), a GAN's generator/discriminator updates,
a two-adapter model switching adapters per step.

Exact resume: everything random in a step (which samples, crops, noise, timesteps, condition dropout) is drawn
from RNGs seeded by (seed, step, micro-step, rank), never from a global RNG; a checkpoint (accelerate
`save_state`: modules, optimizers, LR schedulers, EMA, RNG states, plus our step counter) therefore lets a run
stopped after step n continue exactly as if it had never stopped. Checkpoints are written to a hidden folder
and renamed into place, so a crash while saving never leaves a half checkpoint that looks complete.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn
from tqdm.auto import tqdm

from histosynth.generators.base import (
    CheckpointError,
    Generator,
    TrainingData,
    TrainReport,
    check_safetensors,
    read_json_file,
)

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"
TRAINING_DIR = "training"  # a model folder's resumable training state; not part of the model or its hash
SNAPSHOT_DIR = "snapshots"  # a model folder's saved models at settings.snapshot_steps (learning curves)
WARMUP_STEPS = 2  # steps left out of the steady images/s (kernel selection, first allocations)

Batch = dict[str, torch.Tensor]
BatchFn = Callable[[int, int, int, int, torch.device], Batch]
"""batch_fn(step, micro, rank, world, device) -> the named tensors of one micro-batch of one process."""


class LoopSettings(Protocol):
    """The training-loop fields every generator's train config has (see e.g. diffusion.presets.TrainConfig)."""

    steps: int
    batch_size: int
    grad_accum: int
    lr: float
    scale_lr: bool
    lr_schedule: str
    warmup_steps: int
    weight_decay: float
    adam_betas: tuple[float, float]
    max_grad_norm: float | None
    mixed_precision: str
    ema_decay: float | None
    checkpoint_every: int
    keep_checkpoints: int
    snapshot_steps: tuple[int, ...]
    seed: int
    progress: bool


@dataclass
class OptimizerSpec:
    """One AdamW optimizer (with its own LR schedule from the settings) over some parameters."""

    params: list[nn.Parameter]
    lr: float
    betas: tuple[float, float]
    weight_decay: float = 0.0
    schedule: Callable[[int], float] | None = None  # LR factor by step (a closure, for LambdaLR); None: lr_schedule
    share: float = 1.0  # share of the run's steps that use this optimizer (its lr_schedule spans only those)


@dataclass
class TrainResult:
    """What a training run did: the main loss per optimizer step, and every named loss's mean over the run."""

    start_step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    loss_means: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    images: int = 0
    checkpoint: Path | None = None
    precision: str = "no"  # what accelerate trained in ("no" = fp32)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step of this run
    step_images: list[int] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_images_per_second(self) -> float:
        """images/s after the first WARMUP_STEPS steps (which pay for kernel selection and allocation)."""
        skip = min(WARMUP_STEPS, max(0, len(self.step_seconds) - 1))
        seconds = sum(self.step_seconds[skip:])
        return sum(self.step_images[skip:]) / seconds if seconds > 0 else float("nan")


class StepContext:
    """What a TrainStep sees: the prepared modules and `apply` (backward, clip, optimizer step, zero grads)."""

    def __init__(self, accelerator: Accelerator, modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                 params: dict[str, list[nn.Parameter]], max_grad_norm: float | None) -> None:
        self.accelerator = accelerator
        self.modules = modules
        self.optimizers = optimizers
        self._params = params
        self._max_grad_norm = max_grad_norm
        self.applied: set[str] = set()  # optimizers stepped in the current optimizer step

    def apply(self, loss: torch.Tensor, optimizer: str | tuple[str, ...] = "model") -> None:
        """Backpropagate `loss` once and step optimizer `optimizer` (or each of several, e.g. a shared base and the
        active adapter, each clipped on its own parameters); accelerate skips the step mid-accumulation."""
        self.accelerator.backward(loss)
        for name in (optimizer,) if isinstance(optimizer, str) else optimizer:
            if self.accelerator.sync_gradients and self._max_grad_norm:
                self.accelerator.clip_grad_norm_(self._params[name], self._max_grad_norm)
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)
            self.applied.add(name)


class TrainStep(ABC):
    """The pluggable part of training: which modules train, with which optimizers, and what one micro-step does."""

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """The modules to train (prepared by accelerate and saved in checkpoints), by name."""

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        """One optimizer, "model", over every trainable parameter (CompVis `scale_lr` when set)."""
        params = [p for m in self.modules().values() for p in m.parameters() if p.requires_grad]
        lr = settings.lr * (settings.batch_size * settings.grad_accum * world if settings.scale_lr else 1)
        return {"model": OptimizerSpec(params, lr, tuple(settings.adam_betas), settings.weight_decay)}

    def ema_optimizer(self) -> str | None:
        """The optimizer whose parameters get an EMA copy (when the settings ask for one)."""
        return "model"

    @abstractmethod
    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        """Compute this micro-batch's losses and `ctx.apply` them; returns them by name ("loss" is the main one)."""

    def batch_images(self, batch: Batch) -> int:
        """How many images a micro-batch holds (for images/s)."""
        return int(next(iter(batch.values())).shape[0])


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from (seed, *keys): the randomness of one micro-step of one process."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, dtype=np.uint32)
    return torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def step_rng(seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator seeded from (seed, *keys) (data choices, crops, augmentation)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def resolve_mixed_precision(setting: str, checkpoint: Path | None = None) -> str:
    """The precision a run trains in: a resumed "auto" run keeps the one its checkpoint recorded (a run never
    changes precision half-way); otherwise histosynth.speed decides ("auto": bf16 where this machine runs it
    faster, else "no")."""
    from histosynth.speed import resolve_precision

    if setting == "auto" and checkpoint is not None:
        recorded = read_json_file(checkpoint / STATE_FILE).get("precision")
        if recorded in ("no", "bf16", "fp16"):
            return recorded
    return resolve_precision(setting)


def latest_checkpoint(folder: Path | str) -> Path | None:
    """The newest complete checkpoint (step-NNNNNNNN with a trainer_state.json) under `folder`, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _save_checkpoint(accelerator: Accelerator, folder: Path, step: int, settings: LoopSettings) -> Path:
    """Every process writes its part (its RNG states) into one shared hidden folder that the main process then
    renames into place; histosynth.atomic's per-process partial folders cannot hold a multi-process write."""
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    partial = folder / f".{final.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"step": step, "seed": settings.seed, "steps": settings.steps, "precision": accelerator.mixed_precision}
        (partial / STATE_FILE).write_text(json.dumps(state), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        old = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p != final)
        for stale in old[: max(0, len(old) - max(0, settings.keep_checkpoints - 1))]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> int:
    """Restore a training checkpoint; returns its step. A damaged one raises CheckpointError naming it."""
    state = read_json_file(checkpoint / STATE_FILE)
    if not isinstance(state.get("step"), int) or state["step"] < 0:
        raise CheckpointError(f"{checkpoint / STATE_FILE}: no step count; the checkpoint is damaged")
    for weights in sorted(checkpoint.glob("*.safetensors")):
        check_safetensors(weights)
    try:
        accelerator.load_state(str(checkpoint))
    except Exception as err:  # safetensors, pickle and torch each raise their own types for a damaged file
        reason = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{checkpoint}: cannot resume from this training checkpoint ({type(err).__name__}: "
                              f"{reason}); delete it to resume from an earlier one, or train without --resume") from err
    return state["step"]


def run_training(step_fn: TrainStep, batch_fn: BatchFn, settings: LoopSettings, checkpoint_dir: Path | str | None = None,
                 resume: bool = False, on_step: Callable[[int], None] | None = None,
                 on_snapshot: Callable[[int, TrainResult], None] | None = None) -> TrainResult:
    """Train `step_fn`'s modules for `settings.steps` optimizer steps in total; returns a TrainResult.

    With `resume`, the newest checkpoint under `checkpoint_dir` is loaded first and training continues from its
    step (a missing checkpoint starts from scratch). EMA weights, when enabled, are copied into the modules at
    the end. `on_step(step)` is called after each optimizer step (tests use it to stop a run). After each step of
    `settings.snapshot_steps`, `on_snapshot(step, result so far)` is called on the main process with the EMA weights
    (when there are any) in the modules, to save the model as it stands: the checkpoints of one run make a learning
    curve (a run planned for fewer steps would have another LR schedule).
    """
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    last = latest_checkpoint(folder) if resume and folder is not None else None
    precision = resolve_mixed_precision(settings.mixed_precision, last)
    cpu = not torch.cuda.is_available()
    # accelerate fixes one precision per process (AcceleratorState is a singleton), but one process may train models
    # in different precisions (tests, recipes): on the CPU the loop applies bf16 autocast itself
    own_autocast = cpu and precision == "bf16"
    accelerator = Accelerator(cpu=cpu, mixed_precision="no" if own_autocast else precision,
                              gradient_accumulation_steps=settings.grad_accum, step_scheduler_with_optimizer=False)
    world, rank = accelerator.num_processes, accelerator.process_index
    specs = step_fn.optimizers(settings, world)
    optimizers = {name: torch.optim.AdamW(s.params, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
                  for name, s in specs.items()}
    # A scheduler steps only when its optimizer was used (see the loop), so an optimizer used on a share of the
    # steps (an adapter trained on alternate steps) gets a schedule as long as its own steps.
    schedulers = {name: torch.optim.lr_scheduler.LambdaLR(opt, specs[name].schedule) if specs[name].schedule else
                  get_scheduler(settings.lr_schedule, opt,
                                num_warmup_steps=math.ceil(settings.warmup_steps * specs[name].share),
                                num_training_steps=max(1, math.ceil(settings.steps * specs[name].share)))
                  for name, opt in optimizers.items()}
    modules = step_fn.modules()
    for module in modules.values():
        module.to(accelerator.device)
    ema_name = step_fn.ema_optimizer() if settings.ema_decay else None
    ema = EMAModel(specs[ema_name].params, decay=settings.ema_decay, use_ema_warmup=True) if ema_name else None
    prepared = accelerator.prepare(*modules.values(), *optimizers.values())
    prepared = prepared if isinstance(prepared, (list, tuple)) else [prepared]
    prepared_modules = dict(zip(modules, prepared[: len(modules)], strict=True))
    prepared_optimizers = dict(zip(optimizers, prepared[len(modules):], strict=True))
    for scheduler in schedulers.values():
        accelerator.register_for_checkpointing(scheduler)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    ctx = StepContext(accelerator, prepared_modules, prepared_optimizers, {n: s.params for n, s in specs.items()},
                      settings.max_grad_norm)

    result = TrainResult(start_step=0, steps=settings.steps, precision=precision)
    if last is not None:
        result.start_step = _load_checkpoint(accelerator, last)
        result.checkpoint = last

    bar = tqdm(total=settings.steps, initial=result.start_step, desc="training", unit="step",
               disable=not (settings.progress and accelerator.is_main_process))
    smoothed: dict[str, float] = {}  # every named loss, exponentially smoothed for the bar
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # steps that reported each loss (a two-adapter step reports each on half of them)
    start = time.perf_counter()
    for module in prepared_modules.values():
        module.train()
    plain_forwards = {name: _cpu_bf16_forward(module) for name, module in prepared_modules.items()} if own_autocast else {}
    for step in range(result.start_step, settings.steps):
        step_start, images_before = time.perf_counter(), result.images
        step_losses: dict[str, float] = {}
        ctx.applied.clear()
        for micro in range(settings.grad_accum):
            with accelerator.accumulate(*prepared_modules.values()):
                batch = batch_fn(step, micro, rank, world, accelerator.device)
                generator = step_generator(settings.seed, step, micro, rank)
                losses = step_fn(ctx, batch, generator, step)
            for name, value in losses.items():
                step_losses[name] = step_losses.get(name, 0.0) + float(value.detach()) / settings.grad_accum
            result.images += step_fn.batch_images(batch) * world
        for name in ctx.applied:  # an optimizer this step did not use (an idle adapter's) keeps its schedule
            schedulers[name].step()
        if ema is not None:
            ema.step(specs[ema_name].params)
        result.step_seconds.append(time.perf_counter() - step_start)
        result.step_images.append(result.images - images_before)
        main = step_losses["loss"]
        result.losses.append(main)
        for name, value in step_losses.items():
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
        for name, value in step_losses.items():
            smoothed[name] = value if name not in smoothed else 0.9 * smoothed[name] + 0.1 * value
        bar.update(1)
        bar.set_postfix({name: f"{value:.4f}" for name, value in smoothed.items()},
                        lr=f"{next(iter(schedulers.values())).get_last_lr()[0]:.2e}")
        done = step + 1
        if folder is not None and settings.checkpoint_every and done % settings.checkpoint_every == 0 and done < settings.steps:
            result.checkpoint = _save_checkpoint(accelerator, folder, done, settings)
        if on_snapshot is not None and done in set(getattr(settings, "snapshot_steps", ()) or ()):
            result.seconds = time.perf_counter() - start
            result.loss_means = {name: total / counts[name] for name, total in sums.items()}
            _snapshot(accelerator, ema, specs[ema_name].params if ema is not None else [], on_snapshot, done, result)
        if on_step is not None:
            on_step(done)
    bar.close()
    for restore in plain_forwards.values():
        restore()
    result.seconds = time.perf_counter() - start
    result.loss_means = {name: total / counts[name] for name, total in sums.items()}
    if folder is not None and settings.steps > result.start_step:
        result.checkpoint = _save_checkpoint(accelerator, folder, settings.steps, settings)
    for module in prepared_modules.values():
        module.eval()
    if ema is not None:
        ema.copy_to(specs[ema_name].params)
    accelerator.wait_for_everyone()
    return result


def _snapshot(accelerator: Accelerator, ema: EMAModel | None, params: list[nn.Parameter],
              on_snapshot: Callable[[int, TrainResult], None], step: int, result: TrainResult) -> None:
    """Call `on_snapshot` on the main process with the EMA weights swapped in (and swapped back out after)."""
    if ema is not None:
        ema.store(params)
        ema.copy_to(params)
    try:
        if accelerator.is_main_process:
            on_snapshot(step, result)
    finally:
        if ema is not None:
            ema.restore(params)
    accelerator.wait_for_everyone()


def snapshot_saver(generator: Generator, out: Path | str | None, data: TrainingData) -> Callable[[int, TrainResult], None] | None:
    """The `on_snapshot` that saves `generator` as trained so far to out/snapshots/step-NNNNNNNN (atomically; a
    model folder of its own, with a train report of the steps so far), or None without `out`."""
    if out is None:
        return None

    def save(step: int, result: TrainResult) -> None:
        from histosynth.atomic import atomic_directory

        final = generator.train_report
        finish_training(generator, step, result, data, None)
        try:
            with atomic_directory(Path(out) / SNAPSHOT_DIR / f"{CHECKPOINT_PREFIX}{step:08d}") as partial:
                generator.save(partial)
        finally:
            generator.train_report = final

    return save


def _cpu_bf16_forward(module: nn.Module) -> Callable[[], None]:
    """Run `module`'s forward under CPU bf16 autocast with float32 outputs (what accelerate's mixed precision does to
    a prepared model); returns the function that puts the plain forward back after training."""
    from accelerate.utils import convert_outputs_to_fp32

    own = module.__dict__.get("forward")  # an instance-level forward someone set before, if any
    plain = module.forward

    def forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(*args, **kwargs)

    module.forward = convert_outputs_to_fp32(forward)

    def restore() -> None:
        if own is None:
            del module.forward
        else:
            module.forward = own

    return restore


class SampleStream:
    """Which training samples micro-batch (step, micro) of rank `rank` among `world` reads.

    The run reads one stream: epochs of a seeded permutation of the `n` samples (step_rng(seed, 0, epoch)), cut
    into consecutive batches. A micro-batch's place in the stream depends only on its coordinates, so the data do
    not depend on how the steps were split across processes or resumed runs.
    """

    def __init__(self, n: int, seed: int, batch_size: int, grad_accum: int) -> None:
        self.n, self.seed, self.batch_size, self.grad_accum = n, seed, batch_size, grad_accum
        self._orders: dict[int, np.ndarray] = {}  # the current epoch's permutation only

    def positions(self, step: int, micro: int, rank: int, world: int) -> range:
        """The micro-batch's positions in the stream (e.g. to seed per-sample draws such as training masks)."""
        start = ((step * self.grad_accum + micro) * world + rank) * self.batch_size
        return range(start, start + self.batch_size)

    def indices(self, step: int, micro: int, rank: int, world: int) -> np.ndarray:
        """The sample indices of the micro-batch."""
        out = []
        for p in self.positions(step, micro, rank, world):
            epoch = p // self.n
            if epoch not in self._orders:
                self._orders.clear()
                self._orders[epoch] = step_rng(self.seed, 0, epoch).permutation(self.n)
            out.append(self._orders[epoch][p % self.n])
        return np.array(out)


def finish_training(generator: Generator, steps: int, result: TrainResult, data: TrainingData,
                    out: Path | str | None) -> TrainReport:
    """Record a finished `run_training` as the generator's TrainReport (with every named loss's mean) and, with
    `out`, save the model folder from the main process while the others wait."""
    from histosynth.speed import speed_record

    generator.train_report = TrainReport(
        generator=generator.meta.name, steps=steps, resumed_from_step=result.start_step, losses=result.losses,
        seconds=result.seconds, images_per_second=result.images_per_second, data=data,
        extra={"loss_means": {k: round(v, 6) for k, v in result.loss_means.items()},
               "speed": {**speed_record(result.precision),
                         "steady_images_per_second": round(result.steady_images_per_second, 3)}})
    if out is not None:
        from accelerate import PartialState

        if PartialState().is_main_process:
            generator.save(out)
        PartialState().wait_for_everyone()
    return generator.train_report

