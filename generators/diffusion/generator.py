"""`DiffusionGenerator`: a diffusion UNet (pixel or latent space) steered ControlNet-style by a Conditioner.

What a subclass sets: its `meta`, its `preset_table` (the presets beside it) and `make_conditioner` (which parts
of a condition Sample it reads and how they become tensors); optionally `make_head`, a trainable module between
the condition and the ControlNet. HTD and its ablations are such configurations (histosynth.generators.htd,
histosynth.baselines.htd_ablations).

Saved folder (histosynth.generators.checkpoint): config.json (generator, version, preset, configs, conditioner,
training report, checkpoint hash), model_index.json, unet/, controlnet/ (with a conditioner), head/ (with a head),
autoencoder/ (latent presets), scheduler/ (the training noise schedule) and README.md (model card). A training
run's resumable state lives in training/ beside them and is not part of the model or its hash.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel, VQModel
from torch import nn

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.generators.arrays import TrainingArrays, augment, condition_batch, load_training_arrays
from histosynth.generators.base import Generator, PresetTable, SampleOptions, TrainReport, derive_seed
from histosynth.generators.checkpoint import Component, ComponentFolder, SettingsError, saved_preset
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.diffusion.backbones import (
    Denoiser,
    LatentCodec,
    build_autoencoder,
    build_controlnet,
    build_unet,
    noise_scheduler,
)
from histosynth.generators.diffusion.curriculum import Curriculum
from histosynth.generators.diffusion.presets import (
    Preset,
    TrainConfig,
    model_config_from_dict,
    override,
    replace_fields,
    sample_config_from_dict,
    to_dict,
    train_config_from_dict,
)
from histosynth.generators.diffusion.sampling import denoise, guided, initial_noise, make_sampler
from histosynth.generators.diffusion.training import DiffusionStep
from histosynth.generators.training import (
    TRAINING_DIR,
    SampleStream,
    TrainStep,
    finish_training,
    run_training,
    snapshot_saver,
    step_rng,
)
from histosynth.schema import Nuclei, Provenance, Sample

CROP_STREAM = 1  # SeedSequence([sample seed, CROP_STREAM]) draws a sample's condition randomness; its noise uses the seed


def default_device() -> torch.device:
    """The process's device: its GPU under torchrun/accelerate, else cuda:0 if present, else the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).device


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


class DiffusionGenerator(ComponentFolder, PresetTable, Generator):
    """A conditioned (or unconditional) diffusion model; subclasses choose the conditioner and presets."""

    preset_table: ClassVar[Mapping[str, Callable[[], Preset]]]

    def __init__(self, preset: Preset, device: str | torch.device | None = None,
                 codec: LatentCodec | None = None, denoiser: Denoiser | None = None) -> None:
        """Use `build` or `load`; this wires already-made parts together."""
        self.preset = preset
        self.device = torch.device(device) if device is not None else default_device()
        model = preset.model
        ae = model.autoencoder
        self.codec = codec if codec is not None else LatentCodec(
            build_autoencoder(ae) if ae is not None else None, ae.scaling_factor if ae is not None else None)
        self.codec.to(self.device)
        self.scheduler = noise_scheduler(model)
        self.denoiser = denoiser.to(self.device) if denoiser is not None else None
        self.train_report: TrainReport | None = None
        self._hash: str | None = None
        self._init_seed: int | None = None  # the seed of freshly built, untrained networks (None: given or trained)
        self.conditioner: Conditioner | None = None
        if self.unconditional or model.num_classes:
            self.conditioner = self.make_conditioner(model.num_classes or 0)
            if self.denoiser is None:
                self._build_networks(model.num_classes or 0, preset.train.seed)

    # ------------------------------------------------------------------ what a subclass configures

    @property
    def unconditional(self) -> bool:
        """True when the model reads no condition at all (its metadata declares no conditioning parts)."""
        return not self.meta.conditioning

    def make_conditioner(self, num_classes: int) -> Conditioner | None:
        """The conditioner for K = `num_classes` tissue classes (None: unconditional)."""
        return None

    def make_head(self, num_classes: int) -> nn.Module | None:
        """An extra trainable module between the condition and the ControlNet (e.g. the embedding ablation's)."""
        return None

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, preset: str | Preset = "tiny", device: str | torch.device | None = None,
              autoencoder_weights: str | None = None, autoencoder_subfolder: str | None = None,
              **overrides: Any) -> "DiffusionGenerator":
        """An untrained generator; `overrides` change ModelConfig fields (e.g. num_classes=5, resolution=32);
        `autoencoder_weights` points a latent preset at its autoencoder (local folder or cached repo id)."""
        chosen = cls.get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
        chosen.model = override(chosen.model, **overrides)
        if autoencoder_weights is not None and chosen.model.autoencoder is None:
            raise InputError(f"{cls.meta.name}: the {chosen.name} preset works in pixel space and takes no autoencoder "
                             f"(given {autoencoder_weights}); use a latent preset such as paper")
        if autoencoder_weights is not None:
            chosen.model.autoencoder = override(chosen.model.autoencoder, weights=autoencoder_weights,
                                                subfolder=autoencoder_subfolder)
        return cls(chosen, device=device)

    @property
    def num_classes(self) -> int:
        """K, the number of tissue classes the condition holds (0 for an unconditional model)."""
        return int(self.preset.model.num_classes or 0)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts of a condition Sample this model reads."""
        return tuple(self.meta.conditioning)

    def update_condition(self, **changes: Any) -> None:
        """Change ModelConfig fields the conditioner reads (e.g. crops=CropConfig(placement="none")) on a built or
        loaded model, and rebuild the conditioner from them; the networks are unchanged."""
        self.preset.model = override(self.preset.model, **changes)
        if not self.unconditional and self.preset.model.num_classes:
            self.conditioner = self.make_conditioner(self.num_classes)

    def _build_networks(self, num_classes: int, seed: int) -> None:
        """Fresh networks whose initial weights depend on `seed` only (the training seed), not on the global RNG."""
        model = self.preset.model
        self.conditioner = None if self.unconditional else self.make_conditioner(num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_unet(model, self.codec.channels)
            controlnet = build_controlnet(unet, model, self.conditioner.channels) if self.conditioner else None
            head = self.make_head(num_classes)
        if not model.train_unet:
            unet.requires_grad_(False)
        self.denoiser = Denoiser(unet, controlnet, head).to(self.device)
        self._init_seed = seed
        self._hash = None
        if not self.unconditional:
            self.preset.model = override(model, num_classes=num_classes)

    def _require_networks(self) -> Denoiser:
        if self.denoiser is None:
            raise RuntimeError(f"{self.meta.name}: the networks are built when the number of tissue classes is known: "
                               "train first, or build with num_classes=K")
        return self.denoiser

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: TrainConfig | dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False, on_step: Any = None) -> TrainReport:
        """Train on a dataset folder or Samples; with `out`, checkpoint into out/training and save the model to out.

        `config` is a TrainConfig or a dict of fields to change in the preset's (None values included). With
        `resume`, training continues from the newest checkpoint in out/training (same data, same config) up to
        `config.steps` in total. Networks not trained yet start from weights drawn with `config.seed`.
        """
        cfg = config if isinstance(config, TrainConfig) else replace_fields(self.preset.train, config or {})
        folder = Path(out) / TRAINING_DIR if out is not None else None
        spill = folder / "arrays" if folder is not None else None  # memory-mapped patches, not RAM
        arrays = load_training_arrays(data, self.preset.model.resolution, self.parts, cfg.heterogeneity, spill)
        curriculum = Curriculum(cfg.curriculum) if cfg.curriculum is not None and arrays.tissue is not None else None
        if not self.unconditional:
            k = max(self.num_classes, arrays.num_classes or 0, curriculum.max_classes if curriculum else 0)
            if self.denoiser is None:
                self._build_networks(k, cfg.seed)
            elif k > self.num_classes:
                raise InputError(f"the data has {k} tissue classes but this model's condition holds {self.num_classes}")
            self.preset.model = override(self.preset.model, tissue_schema=self.preset.model.tissue_schema or arrays.tissue_schema)
        if self._init_seed is not None and self._init_seed != cfg.seed:
            self._build_networks(self.num_classes, cfg.seed)  # built under another seed and never trained: redraw
        denoiser = self._require_networks()
        batch_fn = self._batch_fn(arrays, cfg, curriculum)
        self._init_seed = None  # the weights change from here on: a later train() continues from them
        result = run_training(self._train_step(denoiser, cfg), batch_fn, cfg, folder, resume=resume, on_step=on_step,
                              on_snapshot=snapshot_saver(self, out, arrays.training_data()))
        self._hash = None
        self.preset.train = cfg
        return finish_training(self, cfg.steps, result, arrays.training_data(), out)  # loss means per task (dual-lora)

    def _batch_fn(self, arrays: TrainingArrays, cfg: TrainConfig, curriculum: Curriculum | None):
        n = len(arrays)
        stream = SampleStream(n, cfg.seed, cfg.batch_size, cfg.grad_accum)

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> dict[str, torch.Tensor]:
            index = stream.indices(step, micro, rank, world)
            rng = step_rng(cfg.seed, 1, step, micro, rank)
            batch = arrays.batch(index)
            if cfg.augment:  # the same flip / rotation for a patch and all its labels
                batch = augment(batch, rng)
            if curriculum is not None and batch.tissue is not None:
                batch.tissue = curriculum.apply(batch.tissue, step)
            batch = self._training_batch(batch, cfg, step, micro, rank)
            pixels = torch.from_numpy(np.ascontiguousarray(batch.images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            inputs = {"x0": self.codec.encode(pixels.to(device))}
            inputs.update(self._condition_tensors(batch, [rng] * len(index), device))
            return inputs

        return batch_fn

    def _train_step(self, denoiser: Denoiser, cfg: TrainConfig) -> TrainStep:
        """What one training step computes (a two-adapter model overrides it)."""
        return DiffusionStep(denoiser, self.scheduler, cfg.cfg_dropout, cfg.loss)

    def _training_batch(self, batch: ConditionBatch, cfg: TrainConfig, step: int, micro: int, rank: int) -> ConditionBatch:
        """A training batch before it becomes tensors; a subclass adds what its task needs (e.g. completion masks)."""
        return batch

    def _condition_tensors(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                           device: torch.device) -> dict[str, torch.Tensor]:
        return {} if self.conditioner is None else self.conditioner(batch, rngs, device)

    # ------------------------------------------------------------------ sampling

    def default_options(self) -> SampleOptions:
        s = self.preset.sample
        return SampleOptions(steps=s.steps, sampler=s.sampler, guidance=s.guidance, eta=s.eta, batch_size=s.batch_size)

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        """One new Sample per condition, at the model resolution (conditions of another size are resized).

        Options default to the saved SampleConfig (e.g. DDIM, 50 steps, guidance 1 = no CFG).
        """
        opts = self.resolve_options(options, **fields)
        if opts.task not in self.meta.tasks:
            raise InputError(f"{self.meta.name} does only {', '.join(self.meta.tasks)}, not {opts.task!r}")
        self._require_networks()
        conditions = list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        checkpoint = self.checkpoint_hash
        self._require_networks().eval()
        out: list[Sample] = []
        size = int(opts.batch_size)  # type: ignore[arg-type]
        for start in range(0, len(conditions), size):
            out += self._sample_batch(conditions[start : start + size], seeds[start : start + size], opts, checkpoint)
        return out

    def _sample_batch(self, conditions: list[Sample], seeds: list[int], opts: SampleOptions, checkpoint: str) -> list[Sample]:
        denoiser = self._require_networks()
        res = self.preset.model.resolution
        batch = condition_batch(conditions, res, self.parts)
        schema = batch.tissue_schema
        if schema is not None and get_schema(schema).num_classes > self.num_classes:
            raise InputError(f"conditions use schema {schema!r} with {get_schema(schema).num_classes} classes; "
                             f"this model holds {self.num_classes}")
        rngs = [np.random.default_rng(np.random.SeedSequence([s, CROP_STREAM])) for s in seeds]
        with torch.no_grad():
            inputs = self._condition_tensors(batch, rngs, self.device)
            latent = res // self.preset.model.latent_stride
            noise, generators = initial_noise(seeds, (self.codec.channels, latent, latent), self.device)

            def model_fn(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
                given = inputs if conditional else {k: torch.zeros_like(v) for k, v in inputs.items()}
                return denoiser(x, t, given.get("condition"), given.get("embeddings"))

            guidance = opts.guidance if inputs else 1.0
            scheduler = make_sampler(opts.sampler, self.scheduler.config)
            with _autocast(self.device):
                after_step = self._after_step(batch, scheduler, generators)
                latents = denoise(guided(model_fn, guidance), noise, scheduler, opts.steps, generators, opts.eta,
                                  opts.progress, after_step)
                pixels = _to_uint8(self.codec.decode(latents.float()))
        samples = []
        copied = self.meta.label_policy == "copied"
        tissue = copied and "tissue" in self.meta.outputs and batch.tissue is not None
        nuclei = copied and "nuclei" in self.meta.outputs and batch.nuclei is not None
        for j, (cond, s) in enumerate(zip(conditions, seeds, strict=True)):
            mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
            prov = Provenance(source=self.meta.name, mpp=mpp, generator=self.meta.name,
                              generator_version=self.meta.version, checkpoint_hash=checkpoint, seed=s)
            layout = batch.nuclei[j] if nuclei else None  # type: ignore[index]
            samples.append(Sample(image=pixels[j], provenance=prov,
                                  tissue=batch.tissue[j].copy() if tissue else None,  # type: ignore[index]
                                  tissue_schema=schema if tissue else None,
                                  nuclei=Nuclei(batch.nuclei_schema, layout.centroids.copy(), layout.class_ids.copy())
                                  if layout is not None else None))
        return samples

    def _after_step(self, batch: ConditionBatch, scheduler: Any,
                    generators: list[torch.Generator]) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        """A function applied to the latents after each sampler step (e.g. repasting known pixels); None: none."""
        return None

    # ------------------------------------------------------------------ persistence

    def _components(self) -> dict[str, Any]:
        parts: dict[str, Any] = dict(self._require_networks().components())
        if self.codec.autoencoder is not None:
            parts["autoencoder"] = self.codec.autoencoder
        return parts

    def saved_components(self) -> dict[str, Any]:
        return dict(self._components(), scheduler=self.scheduler)

    def hashed_components(self) -> list[str]:
        return sorted(self._components())

    def saved_settings(self) -> dict[str, Any]:
        return {"model": to_dict(self.preset.model), "train": to_dict(self.preset.train),
                "sample": to_dict(self.preset.sample),
                "conditioner": self.conditioner.config() if self.conditioner is not None else None}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> Preset:
        return saved_preset(config, Preset, model_config_from_dict, train_config_from_dict, sample_config_from_dict)

    @classmethod
    def declared_components(cls, settings: Preset) -> dict[str, Component]:
        autoencoder = settings.model.autoencoder
        return {"autoencoder": Component({"vq": VQModel, "kl": AutoencoderKL}[autoencoder.kind if autoencoder else "vq"],
                                         optional=True),
                "unet": Component(UNet2DConditionModel),
                "controlnet": Component(ControlNetModel, optional=True),
                "head": Component(nn.Module, optional=True)}

    @classmethod
    def from_components(cls, settings: Preset, components: dict[str, Any],
                        device: str | torch.device | None = None) -> "DiffusionGenerator":
        model, unet = settings.model, components["unet"]
        autoencoder = components.get("autoencoder")
        if autoencoder is not None:
            autoencoder.eval().requires_grad_(False)
        if not model.train_unet:
            unet.requires_grad_(False)
        _check_settings(model, unet)
        scale = model.autoencoder.scaling_factor if model.autoencoder is not None else None
        return cls(settings, device=device, codec=LatentCodec(autoencoder, scale),
                   denoiser=Denoiser(unet, components.get("controlnet"), components.get("head")))

    def card_details(self) -> list[str]:
        model = self.preset.model
        space = ("pixel space" if model.autoencoder is None
                 else f"the latent space of a frozen {model.autoencoder.kind.upper()} autoencoder")
        condition = (f"{type(self.conditioner).__name__} ({self.conditioner.channels} channels) into a ControlNet"
                     if self.conditioner is not None else "none")
        return [
            f"- Diffusion in {space} at {model.resolution} px; UNet widths {list(model.block_out_channels)}, "
            f"{model.layers_per_block} layers per block; {model.num_train_timesteps} timesteps "
            f"({model.beta_schedule} betas {model.beta_start} -> {model.beta_end}), {model.prediction_type} prediction.",
            f"- Conditioning: {condition}; tissue classes K = {model.num_classes} (schema {model.tissue_schema}).",
        ]


def _check_settings(model: Any, unet: UNet2DConditionModel) -> None:
    """Refuse saved settings the loaded networks cannot run with (at load, not as a failure mid-sampling)."""
    factor = model.latent_stride * 2 ** (len(unet.config.block_out_channels) - 1)
    if not isinstance(model.resolution, int) or model.resolution <= 0 or model.resolution % factor:
        raise SettingsError(f"model.resolution is {model.resolution!r}; this model needs a positive multiple of {factor}")
    if model.num_classes is not None and (not isinstance(model.num_classes, int) or model.num_classes < 0):
        raise SettingsError(f"model.num_classes is {model.num_classes!r}; expected a count of classes")


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (sampling speed), a no-op on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["CROP_STREAM", "DiffusionGenerator", "default_device"]
