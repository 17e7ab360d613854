"""The one training loop, on accelerate: device placement and DistributedDataParallel under torchrun, mixed precision,
gradient accumulation, optional EMA, LR schedules, resumable checkpoints, a tqdm bar with every named loss, a loss
log and a snapshot hook. What a step computes is a TrainStep (histosynth.training.step).

Exact resume: a checkpoint holds everything a step's outcome depends on (modules, optimizers, LR schedulers, EMA,
each process's RNG states, a step's further states such as a sequential data RNG, the step counter and the loss
log), so a run stopped after step n and resumed from its checkpoint of step n repeats no step and skips none.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from histosynth.errors import UserFacingError
from histosynth.training.checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint
from histosynth.training.precision import (
    compiled_forward,
    cpu_bf16_forward,
    fp32_attention_forwards,
    make_accelerator,
    on_device,
    resolve_fp32_attention,
    resolve_mixed_precision,
    wants_cpu,
)
from histosynth.training.step import BatchFn, LoopSettings, OptimizerSpec, StepContext, TrainStep, step_generator

WARMUP_STEPS = 2  # steps left out of the steady images/s (kernel selection, first allocations)


class TrainingStopped(UserFacingError):
    """A `stop` callback ended training early; the message says where the last checkpoint stays for a resumed run."""


@dataclass
class TrainResult:
    """What a training run did: the main loss per optimizer step of this run, and every named loss's mean over it."""

    start_step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    loss_means: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of this run (a resumed run counts from its resume)
    seconds_before: float = 0.0  # training wall time of the steps before the checkpoint this run resumed from
    images: int = 0
    checkpoint: Path | None = None
    precision: str = "no"  # what accelerate trained in ("no" = fp32)
    threads: int = 0  # torch CPU threads the run trained with
    compiled: bool = False  # whether the modules' forwards ran through torch.compile
    fp32_attention: bool = False  # CPU bf16: attention in float32 for the shapes this machine runs faster that way
    fp32_attention_shapes: set[str] = field(default_factory=set)  # those that did (speed.attention_shape_name)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each optimizer step of this run
    step_images: list[int] = field(default_factory=list)
    loss_history: list[float] = field(default_factory=list)  # the main loss of every step from step 0 (the log)

    @property
    def total_seconds(self) -> float:
        """Training wall time of every step so far, across resumes (what a model card and a learning curve report)."""
        return self.seconds_before + self.seconds

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def steady_images_per_second(self) -> float:
        """images/s after the first WARMUP_STEPS steps (which pay for kernel selection and allocation)."""
        skip = min(WARMUP_STEPS, max(0, len(self.step_seconds) - 1))
        seconds = sum(self.step_seconds[skip:])
        return sum(self.step_images[skip:]) / seconds if seconds > 0 else float("nan")


def run_training(step_fn: TrainStep, batch_fn: BatchFn, settings: LoopSettings, checkpoint_dir: Path | str | None = None,
                 resume: bool = False, on_step: Callable[[int], None] | None = None,
                 on_snapshot: Callable[[int, TrainResult], None] | None = None,
                 stop: Callable[[int, float], bool] | None = None) -> TrainResult:
    """Train `step_fn`'s modules for `settings.steps` optimizer steps in total; returns a TrainResult.

    With `resume`, the newest checkpoint under `checkpoint_dir` is loaded first and training continues from its
    step (a missing checkpoint starts from scratch). EMA weights, when enabled, are copied into the modules at
    the end. `on_step(step)` is called after each optimizer step. After each step of `settings.snapshot_steps`,
    `on_snapshot(step, result so far)` is called on the main process with the EMA weights (when there are any) in
    the modules, to save the model as it stands: the snapshots of one run make a learning curve (a run planned
    for fewer steps would have another LR schedule). `stop(step, loss)` returning True after a step before the
    last raises TrainingStopped (the checkpoints written so far stay for a resumed run).
    """
    from histosynth.speed import torch_threads

    device = getattr(settings, "device", None)
    with torch_threads(getattr(settings, "threads", None)), on_device(device):
        return _train(step_fn, batch_fn, settings, Path(checkpoint_dir) if checkpoint_dir is not None else None,
                      resume, wants_cpu(device), on_step, on_snapshot, stop)


def _scheduler(spec: OptimizerSpec, optimizer: torch.optim.Optimizer, settings: LoopSettings) -> Any:
    """An optimizer's LR scheduler. It steps only when its optimizer was used (see the loop), so an optimizer used
    on a share of the steps (an adapter trained on alternate steps) gets a schedule as long as its own steps."""
    if spec.scheduler is not None:
        return spec.scheduler(optimizer)
    if spec.schedule is not None:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, spec.schedule)
    from diffusers.optimization import get_scheduler

    return get_scheduler(settings.lr_schedule, optimizer, num_warmup_steps=math.ceil(settings.warmup_steps * spec.share),
                         num_training_steps=max(1, math.ceil(settings.steps * spec.share)))


def _train(step_fn: TrainStep, batch_fn: BatchFn, settings: LoopSettings, folder: Path | None, resume: bool, cpu: bool,
           on_step: Callable[[int], None] | None, on_snapshot: Callable[[int, TrainResult], None] | None,
           stop: Callable[[int, float], bool] | None) -> TrainResult:
    last = latest_checkpoint(folder) if resume and folder is not None else None
    precision = resolve_mixed_precision(settings.mixed_precision, last)
    accelerator, own_autocast = make_accelerator(cpu, precision, settings.grad_accum)
    fp32_attention = resolve_fp32_attention(own_autocast, last)
    world, rank = accelerator.num_processes, accelerator.process_index
    specs = step_fn.optimizers(settings, world)
    optimizers = {name: torch.optim.AdamW(s.params, lr=s.lr, betas=tuple(s.betas), weight_decay=s.weight_decay)
                  for name, s in specs.items()}
    schedulers = {name: _scheduler(specs[name], opt, settings) for name, opt in optimizers.items()}
    modules = step_fn.modules()
    for module in modules.values():
        module.to(accelerator.device)
    ema_name = step_fn.ema_optimizer() if settings.ema_decay else None
    ema = None
    if ema_name:  # accelerate has no EMA; diffusers' (with warmup) is the one the generators were trained with
        from diffusers.training_utils import EMAModel

        ema = EMAModel(specs[ema_name].params, decay=settings.ema_decay, use_ema_warmup=True)
    prepared = accelerator.prepare(*modules.values(), *optimizers.values())
    prepared = prepared if isinstance(prepared, (list, tuple)) else [prepared]
    prepared_modules = dict(zip(modules, prepared[: len(modules)], strict=True))
    prepared_optimizers = dict(zip(optimizers, prepared[len(modules):], strict=True))
    for extra in [*schedulers.values(), *([ema] if ema is not None else []), *step_fn.states()]:
        accelerator.register_for_checkpointing(extra)
    ctx = StepContext(accelerator, prepared_modules, prepared_optimizers, {n: s.params for n, s in specs.items()},
                      settings.max_grad_norm)

    result = TrainResult(start_step=0, steps=settings.steps, precision=precision, threads=torch.get_num_threads(),
                         compiled=bool(getattr(settings, "compile", False)), fp32_attention=fp32_attention)
    if last is not None:
        state = load_checkpoint(accelerator, last)
        result.start_step = state["step"]
        result.checkpoint = last
        logged = state.get("losses")  # the loss log (checkpoints written before it was kept have none)
        result.loss_history = [float(x) for x in logged] if isinstance(logged, list) else []
        before = state.get("train_seconds")  # checkpoints written before it was kept have none: counted as 0
        result.seconds_before = float(before) if isinstance(before, (int, float)) and math.isfinite(before) \
            and before >= 0 else 0.0

    def checkpoint(step: int) -> Path:
        state = {"seed": settings.seed, "steps": settings.steps, "precision": precision, "losses": result.loss_history,
                 "fp32_attention": fp32_attention, "train_seconds": round(result.seconds_before + time.perf_counter() - start, 3)}
        return save_checkpoint(accelerator, folder, step, state, settings.keep_checkpoints)

    bar = tqdm(total=settings.steps, initial=result.start_step, desc=getattr(settings, "desc", "training"), unit="step",
               disable=not (settings.progress and accelerator.is_main_process))
    smoothed: dict[str, float] = {}  # every named loss, exponentially smoothed for the bar
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # steps that reported each loss (a two-adapter step reports each on half of them)
    snapshot_steps = set(getattr(settings, "snapshot_steps", ()) or ())
    start = time.perf_counter()
    for module in prepared_modules.values():
        module.train()
    plain_forwards = [cpu_bf16_forward(module) for module in prepared_modules.values()] if own_autocast else []
    if fp32_attention:
        for module in prepared_modules.values():
            plain_forwards += fp32_attention_forwards(module, result.fp32_attention_shapes)
    if result.compiled:  # after the autocast wrapper, so the compiled graph holds the bf16 regions
        plain_forwards += [compiled_forward(module) for module in prepared_modules.values()]
    try:
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
            if world > 1:
                step_losses = _mean_over_processes(accelerator, step_losses)
            result.step_seconds.append(time.perf_counter() - step_start)
            result.step_images.append(result.images - images_before)
            main = step_losses["loss"]
            result.losses.append(main)
            result.loss_history.append(main)
            for name, value in step_losses.items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
                smoothed[name] = value if name not in smoothed else 0.9 * smoothed[name] + 0.1 * value
            bar.update(1)
            bar.set_postfix({name: f"{value:.4f}" for name, value in smoothed.items()},
                            lr=f"{next(iter(schedulers.values())).get_last_lr()[0]:.2e}")
            done = step + 1
            if folder is not None and settings.checkpoint_every and done % settings.checkpoint_every == 0 \
                    and done < settings.steps:
                result.checkpoint = checkpoint(done)
            if on_snapshot is not None and done in snapshot_steps:
                result.seconds = time.perf_counter() - start
                result.loss_means = {name: total / counts[name] for name, total in sums.items()}
                _snapshot(accelerator, ema, specs[ema_name].params if ema is not None else [], on_snapshot, done, result)
            if on_step is not None:
                on_step(done)
            if stop is not None and done < settings.steps and stop(done, main):
                kept = (f"; rerun to resume from {result.checkpoint}" if result.checkpoint is not None
                        else " (no checkpoint kept)")
                raise TrainingStopped(f"training stopped after step {done} of {settings.steps}{kept}")
    finally:
        bar.close()
        for restore in reversed(plain_forwards):
            restore()
    result.seconds = time.perf_counter() - start
    result.loss_means = {name: total / counts[name] for name, total in sums.items()}
    if folder is not None and settings.steps > result.start_step:
        result.checkpoint = checkpoint(settings.steps)
    for module in prepared_modules.values():
        module.eval()
    if ema is not None:
        ema.copy_to(specs[ema_name].params)
    accelerator.wait_for_everyone()
    return result


def _mean_over_processes(accelerator: Any, losses: dict[str, float]) -> dict[str, float]:
    """Each named loss averaged over the processes (the loss of the global batch), in the same order on every rank."""
    names = list(losses)
    total = accelerator.reduce(torch.tensor([losses[n] for n in names], dtype=torch.float64,
                                            device=accelerator.device), reduction="sum")
    return {name: float(value) / accelerator.num_processes for name, value in zip(names, total.tolist(), strict=True)}


def _snapshot(accelerator: Any, ema: Any, params: list[torch.nn.Parameter],
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
