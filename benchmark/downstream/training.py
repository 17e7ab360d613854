"""Training one downstream model per seed, through the one training loop (histosynth.training): resumable
(checkpoints keyed by the data's contents, the settings and the seed), seeded, data parallel under torchrun."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from histosynth.benchmark.downstream.data import LabeledSet, to_input
from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.benchmark.downstream.kinds import TISSUE, Kind, TrainConfig
from histosynth.errors import InputError
from histosynth.training import (
    Batch,
    BatchFn,
    LoopConfig,
    LoopSettings,
    OptimizerSpec,
    RNGState,
    StepContext,
    TrainStep,
    run_training,
)

OLD_STATE_FILE = "state.pt"  # the one-file checkpoint of earlier versions, which this loop cannot resume


def _fingerprint(kind: Kind, data: LabeledSet, preset: str, config: TrainConfig, num_classes: int, seed: int,
                 weights: str | None, world: int = 1) -> str:
    key = {"model": kind.model, "data": data.ref.content_hash, "schema": data.schema, "preset": preset,
           "config": config.record(), "classes": num_classes, "seed": seed, "weights": weights}
    if world > 1:  # another global batch: another training (one process keeps its earlier keys)
        key["processes"] = world
    text = json.dumps(key, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Trained:
    """A trained model and its loss curve; `resumed_at` is the step a checkpoint resumed from (0 if none);
    `precision` what the loop trained in ("no" = fp32); `step_seconds` the wall time of each step of this run."""

    model: nn.Module
    num_classes: int
    losses: list[float]
    seconds: float
    resumed_at: int = 0
    precision: str = "no"
    step_seconds: list[float] = field(default_factory=list)


class KindStep(TrainStep):
    """One step of a downstream model: `kind`'s loss on one batch, AdamW with a cosine schedule over the run; the
    batches come from one seeded numpy stream (`rng`, checkpointed with the run)."""

    def __init__(self, kind: Kind, model: nn.Module, config: TrainConfig, seed: int) -> None:
        self.kind, self.model, self.config = kind, model, config
        self.rng = RNGState(seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        steps = self.config.steps
        return {"model": OptimizerSpec(list(self.model.parameters()), self.config.lr, (0.9, 0.999),
                                       self.config.weight_decay,
                                       scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps))}

    def ema_optimizer(self) -> str | None:
        return None

    def states(self) -> list[RNGState]:
        return [self.rng]

    def batch(self, data: LabeledSet) -> BatchFn:
        """The batch function: this process's share of one global batch drawn from the stream (kind.batch)."""

        def draw(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
            x, targets = self.kind.batch(self.rng.generator, data, self.config, Group(rank, world))
            return {"x": to_input(x).to(device), "targets": targets}

        return draw

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        x = batch["x"]
        loss = self.kind.loss(ctx.modules["model"], x, batch["targets"], str(x.device))
        ctx.apply(loss)
        return {"loss": loss}


def train_model(kind: Kind, data: LabeledSet, num_classes: int, preset: str, config: TrainConfig, seed: int,
                checkpoints: Path | None = None, weights: str | Path | None = None, device: str = "cpu",
                stop: Callable[[int, float], bool] | None = None, desc: str = "train", group: Group = ONE_PROCESS
                ) -> Trained:
    """Train `kind`'s model of `preset` on `data` for `config.steps` AdamW steps (cosine schedule) from `seed`, in
    `config.mixed_precision` (fp32 by default; "bf16": autocast, also on the CPU).

    With `checkpoints`, training state goes to `<checkpoints>/<fingerprint>/step-NNNNNNNN` and a run resumes from
    the newest there (a finished run is read back, not trained again); `stop(step, loss)` returning True raises
    TrainingStopped after that step (tests use it to interrupt a run). In a process `group` each rank trains on its
    share of every batch under DistributedDataParallel (histosynth.benchmark.downstream.run).
    """
    config.check()
    kind.check(data, num_classes, config)
    weights = str(weights) if weights else None
    start = time.perf_counter()
    folder = None
    if checkpoints is not None:
        folder = Path(checkpoints) / _fingerprint(kind, data, preset, config, num_classes, seed, weights, group.world)
        if (folder / OLD_STATE_FILE).is_file():
            raise InputError(f"{folder / OLD_STATE_FILE}: a checkpoint of an earlier histosynth version, which this "
                             f"version cannot resume; delete {folder} to train this model again")
    cuda = torch.device(device).type == "cuda"
    settings = LoopConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                          weight_decay=config.weight_decay, checkpoint_every=config.checkpoint_every,
                          mixed_precision=config.mixed_precision, seed=seed, progress=group.main, device=device,
                          desc=desc)
    with torch.random.fork_rng(devices=[torch.device(device)] if cuda else []):
        torch.manual_seed(seed)
        model = kind.build(preset, num_classes, weights, pretrained=False)
        encoder = kind.encoder(model)
        if encoder is not None:
            encoder.load_state_dict(_pretrained_encoder(kind, preset, num_classes, weights))
        if not group.main:  # dropout masks: an own stream per rank (rank 0 continues one process's stream)
            torch.manual_seed(int(np.random.SeedSequence([seed, group.rank]).generate_state(1)[0]))
        step = KindStep(kind, model, config, seed)
        result = run_training(step, step.batch(data), settings, folder, resume=folder is not None, stop=stop)
    model.eval()
    return Trained(model, num_classes, result.loss_history, time.perf_counter() - start, result.start_step,
                   result.precision, result.step_seconds)


def train_tissue(data: LabeledSet, num_classes: int, preset: str, config: TrainConfig, seed: int,
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
