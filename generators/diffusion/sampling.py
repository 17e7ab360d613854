"""Samplers: diffusers schedulers built from the training noise schedule, and the denoising loop with guidance.

    scheduler = make_sampler("dpm++", train_scheduler.config)
    x0 = denoise(model_fn, noise, scheduler, steps=20, guidance=2.0)

Determinism: the initial noise and any stochastic step noise come from one CPU `torch.Generator` per sample,
so a sample depends on its own seed only (not on the device's RNG or on the other samples' seeds).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

from histosynth.errors import InputError
from histosynth.registry import Registry

# name -> (scheduler class, config overrides). DDIM follows CompVis' DDIM sampler (uniform "leading" spacing
# shifted by one, alpha_prev of the first step = alphas_cumprod[0]), which HTD's precursor runs with 200 steps.
SAMPLERS: Registry[tuple[type[SchedulerMixin], dict[str, Any]]] = Registry("sampler")
for _name, _cls, _overrides in (
    ("ddim", DDIMScheduler, {"timestep_spacing": "leading", "steps_offset": 1, "set_alpha_to_one": False}),
    ("dpm++", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    ("dpm++-karras", DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                   "use_karras_sigmas": True}),
    ("dpm++-sde", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    ("unipc", UniPCMultistepScheduler, {}),
    ("euler", EulerDiscreteScheduler, {}),
    ("euler-a", EulerAncestralDiscreteScheduler, {}),
    ("ddpm", DDPMScheduler, {}),
):
    SAMPLERS.register(_name, (_cls, _overrides), _cls.__name__)

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_sampler(name: str, train_config: Mapping[str, Any]) -> SchedulerMixin:
    """Scheduler `name` (see SAMPLERS; an unknown name raises RegistryError) on the training noise schedule
    `train_config` (a scheduler config)."""
    cls, overrides = SAMPLERS.get(name)
    return cls.from_config(dict(train_config), **overrides)


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: torch.device | str) -> tuple[torch.Tensor, list[torch.Generator]]:
    """One noise tensor of `shape` per seed (drawn on the CPU, then moved) and the per-sample generators."""
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
    return noise.to(device), generators


@torch.no_grad()
def denoise(model_fn: ModelFn, noise: torch.Tensor, scheduler: SchedulerMixin, steps: int,
            generators: list[torch.Generator] | None = None, eta: float = 0.0, progress: bool = False,
            after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> torch.Tensor:
    """Run `steps` sampler steps from `noise`; `model_fn(x, t)` returns the model output (guidance folded in).

    `after_step(x, i)`, when given, replaces the latents after step i (inpainting repastes its known region there).
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    scheduler.set_timesteps(steps, device=noise.device)
    accepts = inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {}
    if "generator" in accepts:
        extra["generator"] = generators
    if "eta" in accepts:
        extra["eta"] = eta
    x = noise * scheduler.init_noise_sigma
    for i, t in enumerate(tqdm(scheduler.timesteps, desc="sampling", leave=False, disable=not progress)):
        model_input = scheduler.scale_model_input(x, t)
        output = model_fn(model_input, t)
        x = scheduler.step(output, t, x, **extra).prev_sample
        if after_step is not None:
            x = after_step(x, i)
    return x


def guided(model_fn: Callable[[torch.Tensor, torch.Tensor, bool], torch.Tensor], guidance: float) -> ModelFn:
    """Classifier-free guidance: out = uncond + w (cond - uncond); w = 1 runs the conditional model only.

    `model_fn(x, t, conditional)` evaluates the model with or without its condition.
    """
    if guidance == 1.0:
        return lambda x, t: model_fn(x, t, True)

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = model_fn(x, t, True)
        uncond = model_fn(x, t, False)
        return uncond + guidance * (cond - uncond)

    return fn
