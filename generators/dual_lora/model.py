"""Dual-LoRA (papers/000, arXiv 2603.04565): one diffusion backbone, nuclei-centroid-guided, with two peft LoRA
adapters, "synthesis" (a whole patch from a centroid layout) and "completion" (fill a masked region consistently
with its surroundings and the centroids inside it). There is no official code; the closest public design is
CtrLoRA (one base ControlNet, per-task rank-128 LoRAs on every linear layer, switched at run time).

Decisions the paper leaves open, and why (also on the model card, `card_details`):
- Backbone: DiffusionGenerator's UNet2DConditionModel + ControlNetModel (pixel space for tiny/demo, SD's KL f8
  latents for paper). Both adapters sit on both networks, on every nn.Linear and every 1x1 nn.Conv2d
  (`lora_targets`: time-embedding and ResNet time projections, 1x1 shortcuts, attention projections when present,
  and the ControlNet's zero-convs, CtrLoRA's "every linear layer"); rank per preset (presets.LORA_RANKS: tiny 4,
  demo 16, paper 128 as CtrLoRA), lora_alpha = rank, peft's default init (B = 0: a fresh adapter is the base).
- Condition: one ControlNet input for both tasks, Compose([CentroidMaps(K), MaskedImage()]) = K Gaussian centroid
  channels (sigma 2.5 um at the patch's mpp, histosynth.generators.conditioning.centroids) + the known image (3) +
  the mask (1, paint = 1). Synthesis is fed as completion of a fully masked patch (known image 0, mask 1
  everywhere) rather than with a separate ControlNet stem per task: the paper frames both tasks as "the same
  objective under varying degrees of missingness", so one condition encoder sees one consistent encoding (mask
  = 1 always means "paint here"), and adapter mixing stays meaningful (per-task stems could not be mixed).
  CtrLoRA's per-task zero-convs are covered by each adapter's LoRA on those 1x1 zero-convs.
- Schedule: joint training with per-step task sampling: even steps synthesis, odd steps completion
  (`task_of_step`; deterministic, so a resumed run continues the same schedule). The base networks (the ControlNet,
  and the UNet when the preset trains it) train on every step with optimizer "base"; each adapter trains only on
  its own task's steps with its own optimizer (and LR schedule). With no pretrained histology backbone a frozen
  random base could not learn, hence base + adapters jointly rather than base first.
- Masks: completion steps draw Palette hybrid masks (histosynth.masks.hybrid_mask) from the training seed stream,
  SeedSequence([train seed, MASK_STREAM, step, micro, rank]) -> one set seed, mask j for batch item j; never the
  held-out set's seed (histosynth.masks.HELDOUT_SETS), so completion scores on held-out masks are not on masks seen
  in training.
- Sampling: `sample(..., task="completion")` takes the mask from options.mask, else each condition's
  completion_mask, else held-out mask j for condition j (histosynth.masks.heldout_mask). After every sampler step
  the known region is repasted at the next step's noise level (RePaint's q(x_t | x_0), fresh noise from the
  sample's own generator); the decoded output then gets the known pixels copied exactly, and each output row
  stores its completion_mask (at the model resolution). `adapters={"completion": a, "synthesis": b}` mixes the
  adapters (peft scales, via diffusers' set_weights_and_activate_adapters, what `set_adapters` calls); `{}`
  disables them (the base alone).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from histosynth.errors import InputError
from histosynth.generators.arrays import condition_batch
from histosynth.generators.base import SampleOptions
from histosynth.generators.checkpoint import adapter_names
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.centroids import CentroidMaps
from histosynth.generators.conditioning.compose import Compose
from histosynth.generators.conditioning.masked import MaskedImage
from histosynth.generators.diffusion.backbones import Denoiser
from histosynth.generators.diffusion.generator import DiffusionGenerator
from histosynth.generators.diffusion.presets import TrainConfig
from histosynth.generators.diffusion.training import diffusion_loss
from histosynth.generators.dual_lora.presets import DEFAULT_RANK, LORA_RANKS, PRESETS
from histosynth.generators.registry import generator_meta
from histosynth.generators.training import Batch, LoopSettings, OptimizerSpec, StepContext, TrainStep
from histosynth.masks import HELDOUT_SETS, heldout_mask, hybrid_mask
from histosynth.schema import Sample

ADAPTERS = ("synthesis", "completion")  # also the training schedule's order: step s trains ADAPTERS[s % 2]
MASK_STREAM = 3  # SeedSequence key of the training completion masks (batch_fn uses 0 for order, 1 for crops)


def task_of_step(step: int) -> str:
    """The task (and adapter) optimizer step `step` trains: synthesis on even steps, completion on odd ones."""
    return ADAPTERS[step % 2]


def training_mask_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """The hybrid-mask set seed of one training micro-batch (63 bits), never a held-out set's seed."""
    lo, hi = np.random.SeedSequence([int(seed), MASK_STREAM, int(step), int(micro), int(rank)]).generate_state(2)
    value = (int(hi) << 32 | int(lo)) & ((1 << 63) - 1)
    return value + 1 if value in {h.seed for h in HELDOUT_SETS.values()} else value


def lora_targets(module: nn.Module) -> list[str]:
    """Names of every nn.Linear and 1x1 nn.Conv2d in `module` (CtrLoRA's "every linear layer", for convnets)."""
    return sorted(name for name, m in module.named_modules()
                  if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)))


def add_adapters(net: nn.Module, rank: int) -> None:
    """Both task adapters on `net` (diffusers' `add_adapter`), targets fixed before the first injection."""
    from peft import LoraConfig

    targets = lora_targets(net)
    for name in ADAPTERS:
        net.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets), adapter_name=name)


def set_adapter_weights(denoiser: Denoiser, weights: Mapping[str, float]) -> None:
    """Activate adapters with these scales on every adapted network; an empty mapping disables them (the base).

    Uses diffusers' `set_weights_and_activate_adapters` (what `ModelMixin.set_adapters` runs), because adapters
    loaded from a folder are injected by peft directly and diffusers' own wrapper refuses those models.
    """
    from diffusers.utils.peft_utils import set_weights_and_activate_adapters
    from peft.tuners.tuners_utils import BaseTunerLayer

    unknown = sorted(set(weights) - set(ADAPTERS))
    if unknown:
        raise InputError(f"unknown adapter(s) {unknown}; Dual-LoRA has {', '.join(ADAPTERS)}")
    for net in denoiser.components().values():
        if not adapter_names(net):
            continue
        for module in net.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(bool(weights))
        if weights:
            set_weights_and_activate_adapters(net, list(weights), [float(w) for w in weights.values()])


class DualLoraStep(TrainStep):
    """Joint training: optimizer "base" on every step, the step's task adapter with its own optimizer."""

    def __init__(self, denoiser: Denoiser, scheduler: Any, cfg_dropout: float, loss: str, train_unet: bool) -> None:
        self.denoiser = denoiser
        self.scheduler = scheduler
        self.cfg_dropout = cfg_dropout
        self.loss = loss
        self.base: list[nn.Parameter] = []
        self.adapters: dict[str, list[nn.Parameter]] = {a: [] for a in ADAPTERS}
        for name, param in denoiser.named_parameters():
            adapter = next((a for a in ADAPTERS if ".lora_" in name and f".{a}." in name), None)
            trainable = adapter is not None or train_unet or not name.startswith("unet.")
            param.requires_grad_(trainable)  # peft froze the base when injecting; the base trains here too
            if adapter is not None:
                self.adapters[adapter].append(param)
            elif trainable:
                self.base.append(param)

    def modules(self) -> dict[str, nn.Module]:
        return {"denoiser": self.denoiser}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        lr = settings.lr * (settings.batch_size * settings.grad_accum * world if settings.scale_lr else 1)
        groups = {"base": self.base, **self.adapters}
        share = {"base": 1.0} | {name: 1.0 / len(ADAPTERS) for name in self.adapters}  # adapters alternate steps
        return {name: OptimizerSpec(params, lr, tuple(settings.adam_betas), settings.weight_decay, share=share[name])
                for name, params in groups.items() if params}

    def ema_optimizer(self) -> str | None:
        return None  # see presets: no EMA

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        task = task_of_step(step)
        set_adapter_weights(self.denoiser, {task: 1.0})
        loss = diffusion_loss(ctx.modules["denoiser"], self.scheduler, batch, generator, self.cfg_dropout, self.loss)
        ctx.apply(loss, ("base", task) if self.base else task)
        return {"loss": loss, f"loss_{task}": loss}

    def batch_images(self, batch: Batch) -> int:
        return int(batch["x0"].shape[0])


class DualLoraGenerator(DiffusionGenerator):
    """Centroids (+ a masked image) -> a new patch (synthesis) or the masked region filled (completion)."""

    meta = generator_meta("dual-lora")
    preset_table = PRESETS

    def make_conditioner(self, num_classes: int) -> Conditioner | None:
        return Compose([CentroidMaps(num_classes), MaskedImage()])

    @property
    def lora_rank(self) -> int:
        """The adapters' rank (as saved, else from the preset)."""
        unet = self._require_networks().unet
        if adapter_names(unet):
            return int(unet.peft_config[ADAPTERS[0]].r)
        return LORA_RANKS.get(self.preset.name, DEFAULT_RANK)

    def _build_networks(self, num_classes: int, seed: int) -> None:
        super()._build_networks(num_classes, seed)
        denoiser = self._require_networks()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for net in denoiser.components().values():
                add_adapters(net, LORA_RANKS.get(self.preset.name, DEFAULT_RANK))
        denoiser.to(self.device)

    # ------------------------------------------------------------------ training

    def _train_step(self, denoiser: Denoiser, cfg: TrainConfig) -> TrainStep:
        return DualLoraStep(denoiser, self.scheduler, cfg.cfg_dropout, cfg.loss, self.preset.model.train_unet)

    def _training_batch(self, batch: ConditionBatch, cfg: TrainConfig, step: int, micro: int, rank: int) -> ConditionBatch:
        r = batch.resolution
        if task_of_step(step) == "synthesis":
            return replace(batch, masks=np.ones((len(batch), r, r), bool))
        seed = training_mask_seed(cfg.seed, step, micro, rank)
        return replace(batch, masks=np.stack([hybrid_mask(seed, j, r) for j in range(len(batch))]))

    # ------------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               adapters: Mapping[str, float] | None = None, **fields: Any) -> list[Sample]:
        """One Sample per condition for options.task; `adapters` mixes adapter scales (default: the task's alone at
        1; {} = the base without adapters). Completion outputs keep the known pixels exactly and store their mask."""
        opts = self.resolve_options(options, **fields)
        if opts.task not in self.meta.tasks:
            raise InputError(f"{self.meta.name} does only {', '.join(self.meta.tasks)}, not {opts.task!r}")
        masked = task_conditions(list(conditions), opts)
        set_adapter_weights(self._require_networks(), {opts.task: 1.0} if adapters is None else dict(adapters))
        outputs = super().sample(masked, seed, opts)
        if opts.task != "completion":
            return outputs
        batch = condition_batch(masked, self.preset.model.resolution, ("mask",))
        assert batch.masks is not None
        done = []
        for out, image, mask in zip(outputs, batch.images, batch.masks, strict=True):
            pixels = out.image.copy()
            pixels[~mask] = image[~mask]
            done.append(replace(out, image=pixels, completion_mask=mask.copy()))
        return done

    def _after_step(self, batch: ConditionBatch, scheduler: Any,
                    generators: list[torch.Generator]) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        """Repaste the known region at the next step's noise level (the last step gets the clean known latents)."""
        if batch.masks is None or batch.masks.all():
            return None
        pixels = torch.from_numpy(np.ascontiguousarray(batch.images)).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1
        known = self.codec.encode(pixels)
        paint = torch.from_numpy(batch.masks).to(self.device)[:, None].float()
        stride = self.preset.model.latent_stride
        paint = (F.max_pool2d(paint, stride) if stride > 1 else paint) > 0  # a latent touching the hole is painted
        timesteps = scheduler.timesteps

        def repaste(x: torch.Tensor, i: int) -> torch.Tensor:
            if i + 1 >= len(timesteps):
                level = known
            else:
                noise = torch.stack([torch.randn(tuple(x.shape[1:]), generator=g) for g in generators]).to(x.device)
                level = scheduler.add_noise(known, noise, timesteps[i + 1 : i + 2].repeat(len(x)))
            return torch.where(paint, x, level.to(x.dtype))

        return repaste

    def card_details(self) -> list[str]:
        return [
            *super().card_details(),
            f"- Two LoRA adapters, {', '.join(ADAPTERS)}, on the UNet and the ControlNet: rank {self.lora_rank}, "
            "alpha = rank, on every nn.Linear and 1x1 nn.Conv2d (zero-convs included), as CtrLoRA.",
            "- Condition: K Gaussian nuclei-centroid channels (sigma 2.5 um at the patch's mpp) + the known image + "
            "the mask; synthesis is completion of a fully masked patch (one encoding: mask 1 = paint).",
            "- Training: joint, per-step task sampling (even steps synthesis, odd steps completion); the base trains "
            "every step, each adapter on its task's steps with its own optimizer; no EMA.",
            "- Training masks: Palette hybrid masks (box OR brush strokes, scaled to the patch) from the training seed "
            "stream, never the held-out set; sampling without masks uses held-out set v1, mask j for condition j.",
            "- Completion sampling repastes the known region at each step's noise level and copies the known pixels "
            "exactly at the end; each output stores its completion_mask.",
        ]


def task_conditions(conditions: list[Sample], opts: SampleOptions) -> list[Sample]:
    """The conditions with the completion mask the task paints: all True for synthesis; for completion
    options.mask ((H, W) for all, or (N, H, W)), else the condition's own, else held-out mask j."""
    out = []
    given = None if opts.mask is None else np.asarray(opts.mask, dtype=bool)
    if given is not None and given.ndim == 3 and len(given) != len(conditions):
        raise InputError(f"{len(given)} completion masks for {len(conditions)} conditions")
    for j, cond in enumerate(conditions):
        shape = (cond.height, cond.width)
        if opts.task == "synthesis":
            mask = np.ones(shape, bool)
        elif given is not None:
            mask = given if given.ndim == 2 else given[j]
        elif cond.completion_mask is not None:
            mask = cond.completion_mask
        else:
            mask = heldout_mask(j, shape)
        if mask.shape != shape:
            raise InputError(f"completion mask {j} has shape {mask.shape}, but its condition is {shape}")
        out.append(replace(cond, completion_mask=np.ascontiguousarray(mask, dtype=bool)))
    return out


__all__ = ["ADAPTERS", "DualLoraGenerator", "DualLoraStep", "lora_targets", "set_adapter_weights", "task_of_step"]
