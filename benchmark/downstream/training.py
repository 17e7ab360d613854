"""Training one downstream model per seed: resumable (checkpoints keyed by the data's contents, the settings and the
seed), seeded, data parallel under torchrun."""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from histosynth.atomic import atomic_file
from histosynth.benchmark.downstream.data import LabelledSet, to_input
from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.benchmark.downstream.kinds import TISSUE, Kind, TrainConfig, TrainingStopped


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
