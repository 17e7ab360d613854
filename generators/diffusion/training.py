"""The diffusion training step, plugged into the shared loop (histosynth.generators.training): noise a clean batch
at random timesteps, regress the denoiser's prediction, with classifier-free-guidance condition dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from histosynth.errors import InputError
from histosynth.generators.training import Batch, StepContext, TrainStep


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
    raise InputError(f"loss must be 'l1' or 'l2', not {loss!r}")


class DiffusionStep(TrainStep):
    """One micro-step of denoiser training: `diffusion_loss` on the batch {"x0", "condition"?, "embeddings"?}."""

    def __init__(self, denoiser: nn.Module, scheduler: DDPMScheduler, cfg_dropout: float, loss: str) -> None:
        self.denoiser = denoiser
        self.scheduler = scheduler
        self.cfg_dropout = cfg_dropout
        self.loss = loss

    def modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        loss = diffusion_loss(ctx.modules["denoiser"], self.scheduler, batch, generator, self.cfg_dropout, self.loss)
        ctx.apply(loss)
        return {"loss": loss}

    def batch_images(self, batch: Batch) -> int:
        return int(batch["x0"].shape[0])
