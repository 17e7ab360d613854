"""The generators' layer over the one training loop (histosynth.training): the names every generator, baseline and
plugin imports from here, the model folder's places for training state and snapshots, and what a finished run
records in the generator (its TrainReport) and on disk.

What one step computes is a pluggable `TrainStep`: the diffusion loss (histosynth.generators.diffusion.training), a
GAN's generator/discriminator updates, a two-adapter model switching adapters per step. Everything random in a
step (which samples, crops, noise, timesteps, condition dropout) is drawn from RNGs seeded by (seed, step,
micro-step, rank), never from a global RNG, so a run stopped after step n and resumed from its checkpoint
continues exactly as if it had never stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from histosynth.generators.base import CheckpointError, Generator, TrainingData, TrainReport
from histosynth.training import (
    CHECKPOINT_PREFIX,
    STATE_FILE,
    WARMUP_STEPS,
    BatchFn,
    LoopSettings,
    OptimizerSpec,
    SampleStream,
    StepContext,
    TrainingStateError,
    TrainResult,
    TrainStep,
    latest_checkpoint,
    resolve_mixed_precision,
    step_generator,
    step_rng,
)
from histosynth.training import run_training as _run_training

TRAINING_DIR = "training"  # a model folder's resumable training state; not part of the model or its hash
SNAPSHOT_DIR = "snapshots"  # a model folder's saved models at settings.snapshot_steps (learning curves)

Batch = dict[str, torch.Tensor]

__all__ = [
    "CHECKPOINT_PREFIX", "SNAPSHOT_DIR", "STATE_FILE", "TRAINING_DIR", "WARMUP_STEPS", "Batch", "BatchFn", "LoopSettings",
    "OptimizerSpec", "SampleStream", "StepContext", "TrainResult", "TrainStep", "finish_training", "latest_checkpoint",
    "resolve_mixed_precision", "run_training", "snapshot_saver", "step_generator", "step_rng",
]


def run_training(step_fn: TrainStep, batch_fn: BatchFn, settings: LoopSettings, checkpoint_dir: Path | str | None = None,
                 resume: bool = False, on_step: Callable[[int], None] | None = None,
                 on_snapshot: Callable[[int, TrainResult], None] | None = None) -> TrainResult:
    """histosynth.training.run_training, with a damaged training checkpoint reported as the generators'
    CheckpointError (same message)."""
    try:
        return _run_training(step_fn, batch_fn, settings, checkpoint_dir, resume, on_step, on_snapshot)
    except TrainingStateError as err:
        raise CheckpointError(str(err)) from err


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


def finish_training(generator: Generator, steps: int, result: TrainResult, data: TrainingData,
                    out: Path | str | None) -> TrainReport:
    """Record a finished `run_training` as the generator's TrainReport (with every named loss's mean) and, with
    `out`, save the model folder from the main process while the others wait."""
    from histosynth.speed import speed_record

    generator.train_report = TrainReport(
        generator=generator.meta.name, steps=steps, resumed_from_step=result.start_step, losses=result.losses,
        seconds=result.total_seconds, images_per_second=result.images_per_second, data=data,
        extra={"loss_means": {k: round(v, 6) for k, v in result.loss_means.items()},
               "speed": {**speed_record(result.precision), **({"threads": result.threads} if result.threads else {}),
                         **({"compiled": True} if result.compiled else {}),
                         **({"fp32_attention_shapes": sorted(result.fp32_attention_shapes)}
                            if result.fp32_attention_shapes else {}),
                         "steady_images_per_second": round(result.steady_images_per_second, 3)}})
    if out is not None:
        from accelerate import PartialState

        if PartialState().is_main_process:
            generator.save(out)
        PartialState().wait_for_everyone()
    return generator.train_report

