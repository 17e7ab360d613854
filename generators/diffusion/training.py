"""The training loop on accelerate: mixed precision on GPU, gradient accumulation, EMA, classifier-free-guidance
dropout, resumable checkpoints and a tqdm bar with the loss.

Exact resume: everything random in a step (which samples, crops, noise, timesteps, condition dropout) is drawn
from RNGs seeded by (seed, step, micro-step, rank), never from a global RNG; a checkpoint (accelerate
`save_state`: model, optimizer, LR scheduler, EMA, RNG states, plus our step counter) therefore lets a run
stopped after step n continue exactly as if it had never stopped. Checkpoints are written to a hidden folder
and renamed into place, so a crash while saving never leaves a half checkpoint that looks complete.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from histosynth.generators.base import CheckpointError, check_safetensors, read_json_file
from histosynth.generators.diffusion.presets import TrainConfig

CHECKPOINT_PREFIX = "step-"
STATE_FILE = "trainer_state.json"

Batch = dict[str, torch.Tensor]
BatchFn = Callable[[int, int, int, int, torch.device], Batch]
"""batch_fn(step, micro, rank, world, device) -> {"x0": diffusion-space targets, "condition": ..., "embeddings": ...}."""


@dataclass
class TrainResult:
    """What a training run did."""

    start_step: int
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0
    checkpoint: Path | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else float("nan")


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU torch generator seeded from (seed, *keys): the randomness of one micro-step of one process."""
    state = np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(2, dtype=np.uint32)
    return torch.Generator("cpu").manual_seed(int(state[0]) << 32 | int(state[1]))


def step_rng(seed: int, *keys: int) -> np.random.Generator:
    """A numpy generator seeded from (seed, *keys) (data choices, crops, augmentation)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(int, keys)]))


def resolve_mixed_precision(setting: str) -> str:
    """"auto" -> bf16 on a CUDA device that supports it, else "no"."""
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def diffusion_loss(model: torch.nn.Module, scheduler: DDPMScheduler, batch: Batch, generator: torch.Generator,
                   cfg_dropout: float, loss: str) -> torch.Tensor:
    """Noise a clean batch at random timesteps and regress the model's prediction (epsilon, x0 or v) with L1 / L2.

    With probability `cfg_dropout` a sample's condition (and embeddings) is zeroed, which is what
    classifier-free guidance needs at sampling time.
    """
    x0 = batch["x0"]
    n, device = x0.shape[0], x0.device
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(device)
    keep = (torch.rand(n, generator=generator) >= cfg_dropout).to(device, x0.dtype)
    condition, embeddings = batch.get("condition"), batch.get("embeddings")
    if condition is not None:
        condition = condition * keep.view(-1, *([1] * (condition.ndim - 1)))
    if embeddings is not None:
        embeddings = embeddings * keep.view(-1, *([1] * (embeddings.ndim - 1)))
    x_t = scheduler.add_noise(x0, noise, t)
    prediction = model(x_t, t, condition, embeddings)
    kind = scheduler.config.prediction_type
    target = {"epsilon": noise, "sample": x0}.get(kind)
    if target is None:
        target = scheduler.get_velocity(x0, noise, t)  # "v_prediction"
    if loss == "l1":
        return F.l1_loss(prediction.float(), target.float())
    if loss == "l2":
        return F.mse_loss(prediction.float(), target.float())
    raise ValueError(f"loss must be 'l1' or 'l2', not {loss!r}")


def latest_checkpoint(folder: Path | str) -> Path | None:
    """The newest complete checkpoint (step-NNNNNNNN with a trainer_state.json) under `folder`, if any."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    done = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_FILE).is_file())
    return done[-1] if done else None


def _save_checkpoint(accelerator: Accelerator, folder: Path, step: int, config: TrainConfig) -> Path:
    final = folder / f"{CHECKPOINT_PREFIX}{step:08d}"
    partial = folder / f".{final.name}.partial"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / STATE_FILE).write_text(json.dumps({"step": step, "seed": config.seed, "steps": config.steps}), encoding="utf-8")
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        old = sorted(p for p in folder.glob(f"{CHECKPOINT_PREFIX}*") if p != final)
        for stale in old[: max(0, len(old) - max(0, config.keep_checkpoints - 1))]:
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


def train_denoiser(model: torch.nn.Module, scheduler: DDPMScheduler, batch_fn: BatchFn, config: TrainConfig,
                   checkpoint_dir: Path | str | None = None, resume: bool = False,
                   on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train `model` (a `Denoiser`) for `config.steps` optimizer steps in total; returns a TrainResult.

    With `resume`, the newest checkpoint under `checkpoint_dir` is loaded first and training continues from its
    step (a missing checkpoint starts from scratch). EMA weights, when enabled, are copied into `model` at the end.
    `on_step(step)` is called after each optimizer step (tests use it to stop a run).
    """
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=resolve_mixed_precision(config.mixed_precision),
                              gradient_accumulation_steps=config.grad_accum, step_scheduler_with_optimizer=False)
    world, rank = accelerator.num_processes, accelerator.process_index
    params = [p for p in model.parameters() if p.requires_grad]
    lr = config.lr * (config.batch_size * config.grad_accum * world if config.scale_lr else 1)
    optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(config.adam_betas), weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(config.lr_schedule, optimizer, num_warmup_steps=config.warmup_steps,
                                 num_training_steps=max(1, config.steps))
    model.to(accelerator.device)
    ema = EMAModel(params, decay=config.ema_decay, use_ema_warmup=True) if config.ema_decay else None
    prepared, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(lr_scheduler)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    result = TrainResult(start_step=0, steps=config.steps)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and folder is not None and (last := latest_checkpoint(folder)) is not None:
        result.start_step = _load_checkpoint(accelerator, last)
        result.checkpoint = last

    bar = tqdm(total=config.steps, initial=result.start_step, desc="training", unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    smoothed = math.nan
    start = time.perf_counter()
    prepared.train()
    for step in range(result.start_step, config.steps):
        step_loss = 0.0
        for micro in range(config.grad_accum):
            with accelerator.accumulate(prepared):
                batch = batch_fn(step, micro, rank, world, accelerator.device)
                generator = step_generator(config.seed, step, micro, rank)
                loss = diffusion_loss(prepared, scheduler, batch, generator, config.cfg_dropout, config.loss)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += float(loss.detach()) / config.grad_accum
            result.images += int(batch["x0"].shape[0]) * world
        lr_scheduler.step()
        if ema is not None:
            ema.step(params)
        result.losses.append(step_loss)
        smoothed = step_loss if math.isnan(smoothed) else 0.9 * smoothed + 0.1 * step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{smoothed:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        done = step + 1
        if folder is not None and config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            result.checkpoint = _save_checkpoint(accelerator, folder, done, config)
        if on_step is not None:
            on_step(done)
    bar.close()
    result.seconds = time.perf_counter() - start
    if folder is not None and config.steps > result.start_step:
        result.checkpoint = _save_checkpoint(accelerator, folder, config.steps, config)
    prepared.eval()
    if ema is not None:
        ema.copy_to(params)
    accelerator.wait_for_everyone()
    return result
