"""What one training step is, for the one loop (histosynth.training.loop): the settings a run reads, the modules
that train with their optimizers, what a micro-step computes, and the seeded RNGs a step draws from."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

Batch = dict[str, Any]
BatchFn = Callable[[int, int, int, int, torch.device], Batch]
"""batch_fn(step, micro, rank, world, device) -> the named inputs of one micro-batch of one process."""


class LoopSettings(Protocol):
    """The fields the loop reads (a generator's train config has them all, e.g. diffusion.presets.TrainConfig).

    Read when present, with defaults: `snapshot_steps` (()), `threads` (None: torch's count as it is), `device`
    (None: CUDA when there is one, else the CPU; "cpu", "cuda" or "cuda:N"), `desc` (the progress bar's label) and
    `compile` (False: eager; True: each module's forward runs through torch.compile for the run, which pays minutes
    of compilation up front per process, resume included, for faster steps after).
    """

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
    seed: int
    progress: bool


@dataclass
class LoopConfig:
    """LoopSettings with defaults, for callers without a train config of their own (the benchmark's segmenters)."""

    steps: int
    batch_size: int = 1
    grad_accum: int = 1
    lr: float = 1e-4
    scale_lr: bool = False
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)  # torch's AdamW default
    max_grad_norm: float | None = None
    mixed_precision: str = "no"
    ema_decay: float | None = None
    checkpoint_every: int = 0  # 0: only the final checkpoint (when the run has a checkpoint folder)
    keep_checkpoints: int = 1
    snapshot_steps: tuple[int, ...] = ()
    seed: int = 0
    progress: bool = True
    threads: int | None = None
    device: str | None = None
    desc: str = "training"
    compile: bool = False


@dataclass
class OptimizerSpec:
    """One AdamW optimizer over some parameters, with its LR scheduler: `scheduler(optimizer)` when given (e.g.
    torch's CosineAnnealingLR), else LambdaLR of the `schedule` factor by step, else the settings' lr_schedule."""

    params: list[nn.Parameter]
    lr: float
    betas: tuple[float, float]
    weight_decay: float = 0.0
    schedule: Callable[[int], float] | None = None  # LR factor by step (a closure, for LambdaLR)
    share: float = 1.0  # share of the run's steps that use this optimizer (its lr_schedule spans only those)
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None


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

    def states(self) -> list[Any]:
        """Further objects with state_dict / load_state_dict that checkpoints keep, e.g. an RNGState a batch
        function draws from in sequence (none by default: per-step seeded RNGs need no saving)."""
        return []

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


class RNGState:
    """A numpy Generator that checkpoints save and restore (TrainStep.states), for a batch function that draws
    from one stream in sequence: a resumed run continues the stream where the checkpoint left it."""

    def __init__(self, seed: int | np.random.SeedSequence) -> None:
        self.generator = np.random.default_rng(seed)

    def state_dict(self) -> dict[str, Any]:
        return self.generator.bit_generator.state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.bit_generator.state = state


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
