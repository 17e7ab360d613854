"""Two noise schedules on one timestep grid: cosine for the image channels, shifted cosine for the label channels.

CoSyn noises the image with a cosine schedule and its labels with another ("cosine_p"); both groups share the
timestep t. Here the image uses diffusers' "squaredcos_cap_v2" (Nichol & Dhariwal's cosine) and the labels the
shifted cosine of Hoogeboom et al. 2023 (simple diffusion): at every t the labels' signal-to-noise ratio is the
image's times shift^2, i.e. log SNR moves by 2 log(shift). With shift < 1 the labels are destroyed earlier in the
forward process, so their coarse layout is decided in the first sampling steps and the image follows it; a
one-hot map at the image's SNR would stay readable almost to t = T. (CoSyn's exact "cosine_p" formula is not in
REFERENCE.md; the shift is our reading of "shifted cosine".)

`GroupedScheduler` runs one diffusers sampler per channel group behind the single-scheduler interface that
histosynth.generators.diffusion.sampling.denoise drives, so every sampler there works for the joint model.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from diffusers import DDPMScheduler

from histosynth.errors import InputError
from histosynth.generators.diffusion.sampling import make_sampler


def image_scheduler(num_train_timesteps: int, prediction_type: str) -> DDPMScheduler:
    """The image group's training schedule: cosine (alpha_bar = cos^2, betas capped at 0.999)."""
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type=prediction_type, clip_sample=True)


def shifted_betas(alphas_cumprod: np.ndarray, shift: float) -> np.ndarray:
    """Betas whose alpha_bar has SNR = shift^2 * SNR(alphas_cumprod) at every step (alpha_bar = SNR / (1 + SNR))."""
    if not (np.isfinite(shift) and shift > 0):
        raise InputError(f"label_shift must be a positive number, not {shift!r}")
    a = np.asarray(alphas_cumprod, np.float64)
    snr = a / (1.0 - a) * shift**2
    shifted = snr / (1.0 + snr)
    previous = np.concatenate([[1.0], shifted[:-1]])
    return np.clip(1.0 - shifted / previous, 0.0, 0.999)


def label_scheduler(image: DDPMScheduler, shift: float) -> DDPMScheduler:
    """The label group's training schedule: the image's cosine, shifted by `shift` (1 gives the image's alphas)."""
    betas = shifted_betas(image.alphas_cumprod.numpy(), shift)
    return DDPMScheduler(num_train_timesteps=image.config.num_train_timesteps, trained_betas=betas.tolist(),
                         prediction_type=image.config.prediction_type, clip_sample=True)


def add_noise(schedulers: Sequence[DDPMScheduler], groups: Sequence[int], x0: torch.Tensor, noise: torch.Tensor,
              t: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0) per channel group: channels of group g use schedulers[g] at the same timesteps t."""
    parts = torch.split(x0, list(groups), dim=1)
    noises = torch.split(noise, list(groups), dim=1)
    return torch.cat([s.add_noise(p, n, t) for s, p, n in zip(schedulers, parts, noises, strict=True)], dim=1)


def velocity(schedulers: Sequence[DDPMScheduler], groups: Sequence[int], x0: torch.Tensor, noise: torch.Tensor,
             t: torch.Tensor) -> torch.Tensor:
    """The v-prediction target per channel group."""
    parts = torch.split(x0, list(groups), dim=1)
    noises = torch.split(noise, list(groups), dim=1)
    return torch.cat([s.get_velocity(p, n, t) for s, p, n in zip(schedulers, parts, noises, strict=True)], dim=1)


@dataclass
class _Step:
    prev_sample: torch.Tensor


class GroupedScheduler:
    """Sampler `name` on each group's training schedule, stepped together on one timestep grid."""

    def __init__(self, name: str, schedulers: Sequence[DDPMScheduler], groups: Sequence[int]) -> None:
        self.samplers = [make_sampler(name, s.config) for s in schedulers]
        self.groups = list(groups)
        self.device: torch.device | str | None = None

    def set_timesteps(self, steps: int, device: torch.device | str | None = None) -> None:
        self.device = device
        for sampler in self.samplers:
            sampler.set_timesteps(steps, device=device)
        first = self.samplers[0].timesteps
        if any(not torch.equal(s.timesteps.cpu(), first.cpu()) for s in self.samplers[1:]):
            raise InputError("the channel groups' samplers chose different timesteps; use a sampler whose grid does "
                             "not depend on the betas (ddim, ddpm, dpm++, unipc)")

    @property
    def timesteps(self) -> torch.Tensor:
        return self.samplers[0].timesteps

    @property
    def init_noise_sigma(self) -> float | torch.Tensor:
        """Each group's starting noise scale (1 for DDIM/DDPM, sigma_max for Euler-type samplers): one number when
        the groups agree, else (1, C, 1, 1)."""
        values = [float(s.init_noise_sigma) for s in self.samplers]
        if len(set(values)) == 1:
            return values[0]
        sigmas = [torch.full((g,), v) for v, g in zip(values, self.groups, strict=True)]
        return torch.cat(sigmas).view(1, -1, 1, 1).to(self.device or "cpu")

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(x, self.groups, dim=1)

    def scale_model_input(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return torch.cat([s.scale_model_input(p, t) for s, p in zip(self.samplers, self._split(x), strict=True)], 1)

    def step(self, output: torch.Tensor, t: Any, x: torch.Tensor, generator: Any = None, eta: float | None = None) -> _Step:
        """One step of every group's sampler (stochastic ones draw their noise group by group, in order)."""
        parts = []
        for sampler, out, sample in zip(self.samplers, self._split(output), self._split(x), strict=True):
            accepts = inspect.signature(sampler.step).parameters
            extra: dict[str, Any] = {}
            if "generator" in accepts and generator is not None:
                extra["generator"] = generator
            if "eta" in accepts and eta is not None:
                extra["eta"] = eta
            parts.append(sampler.step(out, t, sample, **extra).prev_sample)
        return _Step(torch.cat(parts, dim=1))
