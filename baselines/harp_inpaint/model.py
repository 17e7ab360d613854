"""`harp-inpaint`: a HARP-like inpainting baseline, Palette's conditional DDPM written on diffusers.

HARP (Fuchs et al., MIDL 2024) restores artifact regions with a Palette-style conditional DDPM. Its package,
HARPipe, pins torch 2.0.1 and cannot be installed beside this stack, so the model is rebuilt here on diffusers'
UNet2DModel; only its restoration model is reproduced (not its FastFlow + SAM artifact detection).

- Denoiser input (6 channels): concat(y_cond, composite). y_cond is the image with N(0, 1) noise in the hole,
  image * (1 - m) + m * n; composite is the noisy image x_t inside the hole and the known pixels outside,
  x_t * m + image * (1 - m). The UNet predicts the noise (3 channels).
- Loss: MSE between predicted and true noise over the hole's pixels only (mean over masked pixels and channels;
  Palette averages the masked product over the whole image, which is the same up to the hole's area).
- Training masks: Palette's hybrid masks (histosynth.masks.hybrid_mask), scaled to the model resolution, from the
  training seed stream: seed derive_seed(train seed, MASK_STREAM), index = the sample's global position in the
  run, so a resumed run draws the same masks and the held-out set (its own seed) is never trained on.
- Sampling: "ddpm" or "ddim" steps of the training schedule, the known pixels pasted back after every step and
  copied exactly at the end (Palette); "repaint" runs diffusers' RePaintScheduler with jumps (RePaint: 250 steps,
  jump 10, resample 10; its noised known part is replaced by the clean known pixels in the model input, as in
  training). Every random draw of sample j comes from one CPU generator seeded with its seed.
- Output: the patch at its own size. The model fills the hole at its resolution; the fill is resized to the
  patch (Lanczos) and only the hole's pixels are taken from it, so every known pixel is the condition's exactly.
  The row stores its completion mask.
- Labels: "none". The output has no tissue or nuclei label: the condition's labels describe the original patch,
  and nothing makes the filled region follow them, so copying them would put unchecked labels on new pixels.
- Masks at sampling: `SampleOptions.mask` ((H, W) for every condition, or (B, H, W)), else each condition's
  completion_mask, else held-out mask j of the standard set (histosynth.masks.heldout_mask; j = position in
  `conditions`).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, RePaintScheduler, UNet2DModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from PIL import Image
from torch import nn

from histosynth.baselines.harp_inpaint.presets import (
    PRESETS,
    HarpModelConfig,
    HarpPreset,
    model_from_dict,
    sample_from_dict,
)
from histosynth.errors import InputError
from histosynth.generators.arrays import augment, condition_batch, load_training_arrays
from histosynth.generators.base import Generator, PresetTable, SampleOptions, TrainReport, derive_seed
from histosynth.generators.checkpoint import Component, ComponentFolder, saved_preset
from histosynth.generators.diffusion.presets import TrainConfig, replace_fields, to_dict, train_config_from_dict
from histosynth.generators.diffusion.sampling import initial_noise
from histosynth.generators.registry import generator_meta
from histosynth.generators.training import (
    TRAINING_DIR,
    Batch,
    SampleStream,
    StepContext,
    TrainStep,
    finish_training,
    run_training,
    snapshot_saver,
    step_rng,
)
from histosynth.masks import heldout_mask, hybrid_mask
from histosynth.registry import Registry
from histosynth.schema import Provenance, Sample

MASK_STREAM = 2  # training masks use seed derive_seed(train seed, MASK_STREAM)
NETWORKS = ["unet"]  # the components the weights hash covers (the scheduler folder holds only a config)


def build_unet(model: HarpModelConfig) -> UNet2DModel:
    """The 6 -> 3 channel denoiser of `model` (random weights from the global RNG: seed it first)."""
    if len(model.attention) != len(model.block_out_channels):
        raise InputError(f"harp-inpaint: attention {model.attention} needs one flag per level {model.block_out_channels}")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in model.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(model.attention))
    return UNet2DModel(sample_size=model.resolution, in_channels=6, out_channels=3, down_block_types=down,
                       up_block_types=up, block_out_channels=model.block_out_channels,
                       layers_per_block=model.layers_per_block, norm_num_groups=model.norm_num_groups,
                       dropout=model.dropout, add_attention=model.mid_attention, attention_head_dim=8)


def noise_schedule(model: HarpModelConfig) -> DDPMScheduler:
    """The training noise schedule (epsilon prediction, no clipping of predicted images during training)."""
    return DDPMScheduler(num_train_timesteps=model.num_train_timesteps, beta_schedule=model.beta_schedule,
                         beta_start=model.beta_start, beta_end=model.beta_end, prediction_type="epsilon")


def _repaint(config: dict[str, Any], eta: float) -> RePaintScheduler:
    keep = {k: config[k] for k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")}
    return RePaintScheduler(**keep, eta=eta)


SAMPLERS: Registry[Callable[[dict[str, Any], float], SchedulerMixin]] = Registry("harp-inpaint sampler")
"""name -> the sampler's scheduler from the training schedule's config and eta; "ddpm" and "ddim" repaste the
known pixels after every step (Palette), "repaint" runs RePaint's jumps."""
SAMPLERS.register("ddpm", lambda config, eta: DDPMScheduler.from_config(config, clip_sample=True), "ancestral DDPM")
SAMPLERS.register("ddim", lambda config, eta: DDIMScheduler.from_config(config, clip_sample=True, set_alpha_to_one=False),
                  "DDIM (eta from the options)")
SAMPLERS.register("repaint", _repaint, "RePaint: jumps back and resamples")


def model_input(image: torch.Tensor, mask: torch.Tensor, x_t: torch.Tensor, cond_noise: torch.Tensor) -> torch.Tensor:
    """Palette's 6-channel input: concat(image with noise in the hole, x_t in the hole + known pixels elsewhere).

    `image`, `x_t`, `cond_noise`: (B, 3, R, R) in [-1, 1]; `mask`: (B, 1, R, R) float, 1 = hole.
    """
    known = 1.0 - mask
    return torch.cat([image * known + mask * cond_noise, x_t * mask + image * known], dim=1)


def palette_loss(unet: nn.Module, image: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor,
                 cond_noise: torch.Tensor, t: torch.Tensor, scheduler: DDPMScheduler) -> torch.Tensor:
    """MSE between the predicted and true noise inside the hole (mean over hole pixels and channels).

    Neither the noise outside the hole nor `cond_noise` outside it reach the input or the loss.
    """
    x_t = scheduler.add_noise(image, noise, t)
    predicted = unet(model_input(image, mask, x_t, cond_noise), t).sample
    squared = (predicted.float() - noise.float()) ** 2 * mask
    return squared.sum() / (mask.sum() * image.shape[1]).clamp(min=1.0)


class PaletteStep(TrainStep):
    """One micro-step: timesteps, noise and conditioning noise from the step's generator, `palette_loss`."""

    def __init__(self, unet: UNet2DModel, scheduler: DDPMScheduler) -> None:
        self.unet, self.scheduler = unet, scheduler

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        image, mask = batch["image"], batch["mask"]
        device = image.device
        noise = torch.randn(image.shape, generator=generator).to(device)
        cond_noise = torch.randn(image.shape, generator=generator).to(device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (image.shape[0],), generator=generator).to(device)
        loss = palette_loss(ctx.modules["unet"], image, mask, noise, cond_noise, t, self.scheduler)
        ctx.apply(loss)
        return {"loss": loss}

    def batch_images(self, batch: Batch) -> int:
        return int(batch["image"].shape[0])


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, R, R, 3) uint8 -> (B, 3, R, R) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class HarpInpaint(ComponentFolder, PresetTable, Generator):
    """Palette-style conditional DDPM for completion (see the module docstring)."""

    meta = generator_meta("harp-inpaint")
    preset_table = PRESETS
    components = {"unet": Component(UNet2DModel)}  # the scheduler is rebuilt from the settings

    def __init__(self, preset: HarpPreset, device: str | torch.device | None = None, unet: UNet2DModel | None = None) -> None:
        from histosynth.generators.diffusion.generator import default_device

        self.preset = preset
        self.device = torch.device(device) if device is not None else default_device()
        self.scheduler = noise_schedule(preset.model)
        self._init_seed: int | None = None  # seed of fresh, untrained weights (redrawn if training asks another)
        if unet is None:
            unet = self._fresh_unet(preset.train.seed)
        self.unet = unet.to(self.device).eval()
        self.train_report: TrainReport | None = None
        self._hash: str | None = None

    def _fresh_unet(self, seed: int) -> UNet2DModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_unet(self.preset.model)
        self._init_seed = seed
        return unet

    # ------------------------------------------------------------------ contract basics

    @classmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "HarpInpaint":
        """An untrained model; `overrides` change HarpModelConfig fields (e.g. resolution=64)."""
        chosen = cls.get_preset(preset)
        chosen.model = replace_fields(chosen.model, overrides)
        return cls(chosen, device=device)

    def default_options(self) -> SampleOptions:
        s = self.preset.sample
        return SampleOptions(steps=s.steps, sampler=s.sampler, guidance=1.0, eta=s.eta, batch_size=s.batch_size,
                             task="completion")

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: TrainConfig | dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False, on_step: Any = None) -> TrainReport:
        """Train on a dataset folder or Samples (images only; masks are drawn, see the module docstring)."""
        cfg = config if isinstance(config, TrainConfig) else replace_fields(self.preset.train, config or {})
        folder = Path(out) / TRAINING_DIR if out is not None else None
        res = self.preset.model.resolution
        arrays = load_training_arrays(data, res, (), cfg.heterogeneity, folder / "arrays" if folder else None)
        if len(arrays) == 0:
            raise InputError("harp-inpaint: no training patches")
        if self._init_seed is not None and self._init_seed != cfg.seed:
            self.unet = self._fresh_unet(cfg.seed).to(self.device)
        self._init_seed = None
        n, mask_seed = len(arrays), derive_seed(cfg.seed, MASK_STREAM)
        stream = SampleStream(n, cfg.seed, cfg.batch_size, cfg.grad_accum)

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
            positions = stream.positions(step, micro, rank, world)
            batch = arrays.batch(stream.indices(step, micro, rank, world))
            if cfg.augment:
                batch = augment(batch, step_rng(cfg.seed, 1, step, micro, rank))
            masks = np.stack([hybrid_mask(mask_seed, p, res) for p in positions])
            return {"image": _to_tensor(batch.images, device),
                    "mask": torch.from_numpy(masks[:, None].astype(np.float32)).to(device)}

        result = run_training(PaletteStep(self.unet, self.scheduler), batch_fn, cfg, folder, resume=resume, on_step=on_step,
                              on_snapshot=snapshot_saver(self, out, arrays.training_data()))
        self.unet.eval()
        self._hash = None
        self.preset.train = cfg
        return finish_training(self, cfg.steps, result, arrays.training_data(), out)

    # ------------------------------------------------------------------ sampling

    def _masks(self, conditions: list[Sample], mask: np.ndarray | None) -> list[np.ndarray]:
        """The hole of each condition at its own size (see the module docstring for the order of precedence)."""
        if mask is not None:
            given = np.asarray(mask).astype(bool)
            stack = [given] * len(conditions) if given.ndim == 2 else list(given)
            if len(stack) != len(conditions):
                raise InputError(f"harp-inpaint: {len(stack)} masks for {len(conditions)} conditions")
        else:
            stack = [c.completion_mask if c.completion_mask is not None else heldout_mask(j, c.image.shape[:2])
                     for j, c in enumerate(conditions)]
        for j, (m, c) in enumerate(zip(stack, conditions, strict=True)):
            if m.shape != c.image.shape[:2]:
                raise InputError(f"harp-inpaint: mask {j} has shape {m.shape}, its condition is {c.image.shape[:2]}")
            if not m.any():
                raise InputError(f"harp-inpaint: mask {j} is empty; there is nothing to complete")
        return stack

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        """Each condition completed inside its mask; known pixels are the condition's exactly."""
        opts = self.resolve_options(options, **fields)
        if opts.task != "completion":
            raise InputError(f"{self.meta.name} does only completion, not {opts.task!r}")
        SAMPLERS.get(opts.sampler)  # an unknown sampler is refused before any work
        conditions = list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        masks = self._masks(conditions, opts.mask)
        checkpoint = self.checkpoint_hash
        out: list[Sample] = []
        size = int(opts.batch_size)  # type: ignore[arg-type]
        for start in range(0, len(conditions), size):
            stop = start + size
            out += self._sample_batch(conditions[start:stop], masks[start:stop], seeds[start:stop], opts, checkpoint)
        return out

    def _scheduler(self, opts: SampleOptions) -> SchedulerMixin:
        return SAMPLERS.get(str(opts.sampler))(dict(self.scheduler.config), float(opts.eta or 0.0))

    @torch.no_grad()
    def _fill(self, image: torch.Tensor, mask: torch.Tensor, seeds: list[int], opts: SampleOptions) -> torch.Tensor:
        """Run the reverse process at the model resolution; returns images with the known pixels pasted back."""
        noise, generators = initial_noise(seeds, tuple(image.shape[1:]), self.device)
        cond_noise = torch.stack([torch.randn(tuple(image.shape[1:]), generator=g) for g in generators]).to(self.device)
        scheduler = self._scheduler(opts)
        known = 1.0 - mask
        x = noise
        if opts.sampler == "repaint":
            s = self.preset.sample
            scheduler.set_timesteps(int(opts.steps), s.jump_length, s.jump_n_sample, device=self.device)
            t_last = int(scheduler.timesteps[0]) + 1
            for t in scheduler.timesteps:
                t = int(t)
                if t < t_last:
                    eps = self.unet(model_input(image, mask, x, cond_noise), t).sample
                    x = scheduler.step(eps, t, x, image, known, generators).prev_sample
                else:
                    x = scheduler.undo_step(x, t_last, generators)
                t_last = t
        else:
            scheduler.set_timesteps(int(opts.steps), device=self.device)
            extra = {"eta": float(opts.eta or 0.0)} if opts.sampler == "ddim" else {}
            for t in scheduler.timesteps:
                eps = self.unet(model_input(image, mask, x, cond_noise), t).sample
                x = scheduler.step(eps, t, x, generator=generators, **extra).prev_sample
                x = x * mask + image * known
        return x * mask + image * known

    def _sample_batch(self, conditions: list[Sample], masks: list[np.ndarray], seeds: list[int], opts: SampleOptions,
                      checkpoint: str) -> list[Sample]:
        res = self.preset.model.resolution
        batch = condition_batch([replace(c, completion_mask=m) for c, m in zip(conditions, masks, strict=True)],
                                res, self.meta.conditioning)
        image = _to_tensor(batch.images, self.device)
        mask = torch.from_numpy(batch.masks[:, None].astype(np.float32)).to(self.device)  # type: ignore[index]
        self.unet.eval()
        filled = _to_uint8(self._fill(image, mask, seeds, opts))
        samples = []
        for cond, hole, fill, s in zip(conditions, masks, filled, seeds, strict=True):
            h, w = cond.image.shape[:2]
            if (h, w) != (res, res):
                fill = np.asarray(Image.fromarray(fill).resize((w, h), Image.Resampling.LANCZOS))
            completed = np.where(hole[:, :, None], fill, cond.image)
            prov = Provenance(source=self.meta.name, mpp=cond.provenance.mpp, generator=self.meta.name,
                              generator_version=self.meta.version, checkpoint_hash=checkpoint, seed=s)
            samples.append(Sample(image=completed, completion_mask=hole.copy(), provenance=prov))
        return samples

    # ------------------------------------------------------------------ persistence

    def saved_components(self) -> dict[str, Any]:
        return {"unet": self.unet, "scheduler": self.scheduler}

    def hashed_components(self) -> list[str]:
        return list(NETWORKS)

    def saved_settings(self) -> dict[str, Any]:
        return {"model": asdict(self.preset.model), "train": to_dict(self.preset.train),
                "sample": asdict(self.preset.sample)}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> HarpPreset:
        return saved_preset(config, HarpPreset, model_from_dict, train_config_from_dict, sample_from_dict)

    @classmethod
    def from_components(cls, settings: HarpPreset, components: dict[str, Any],
                        device: str | torch.device | None = None) -> "HarpInpaint":
        return cls(settings, device=device, unet=components["unet"])

    def card_details(self) -> list[str]:
        m, s = self.preset.model, self.preset.sample
        return [
            f"- Palette-style conditional DDPM (HARP's restoration model) in pixel space at {m.resolution} px: diffusers "
            f"UNet2DModel, 6 input channels (image with noise in the hole + noisy image composited with the known "
            f"pixels), widths {list(m.block_out_channels)}, {m.layers_per_block} res blocks per level; "
            f"{m.num_train_timesteps} timesteps, linear betas {m.beta_start} -> {m.beta_end}, epsilon prediction.",
            "- Loss: MSE on the noise inside the hole only. Training masks: Palette hybrid (box OR brush) masks scaled "
            "to the patch, from the training seed's own stream (never the held-out set).",
            f"- Sampling: {s.sampler}, {s.steps} steps; known pixels pasted back after every step and copied exactly "
            f"into the output; RePaint jumps with --sampler repaint (jump {s.jump_length}, resample {s.jump_n_sample}).",
            "- Written on diffusers because HARP's package (HARPipe) pins torch 2.0.1; artifact detection is not part of it.",
            "- Outputs carry their completion mask and no labels (label policy none).",
        ]


__all__ = ["HarpInpaint", "PaletteStep", "build_unet", "model_input", "palette_loss"]
