"""`GANGenerator`: what every conditional GAN baseline shares (pix2pix, SPADE), on the generator platform.

The base does the contract's work: presets and `build`, `train` through the shared loop (run_training) with two
Adam optimizers "g" and "d", each with its LR schedule (GANTrainConfig.lr_schedule), exact resume, a tqdm bar with
the G and D losses; `sample` in one generator forward pass per batch; labels copied from the condition
(label_policy "copied"); provenance; `save` / `load` / `checkpoint_hash` through ComponentFolder; the model card.

How to subclass it (histosynth.baselines.pix2pix is the worked example):

    class MyGAN(GANGenerator):
        meta = generator_meta("my-gan")                  # registered in generators/registry.py, family "gan"
        preset_table = {"tiny": tiny, "demo": demo, "paper": paper}   # name -> () -> GANPreset
        model_config = MyModelConfig                     # a GANModelConfig subclass (resolution, num_classes, ...)
        network_classes = (MyGenerator, MyDiscriminator)  # diffusers ModelMixin + ConfigMixin, @register_to_config

        def build_networks(self, condition_channels):    # -> (generator, discriminator), random weights
        def discriminator_loss(self, d, batch, fake):    # -> {"d": total D loss, parts...}; fake is detached
        def generator_loss(self, d, batch, fake):        # -> {"g": total G loss, parts...}; d is frozen
        def card_details(self):                          # super().card_details() + architecture lines

  and optionally:
        def make_conditioner(self):                      # default TissueOneHot(K); e.g. Compose with CentroidMaps
        def condition_parts(self):                       # parts the conditioner reads (default meta.conditioning)
        def forward_generator(self, g, batch, noise):    # default g(batch["condition"], noise)

- `batch` is {"image": (B, 3, R, R) in [-1, 1], "condition": (B, C, R, R), ...}: the patch and the conditioner's
  tensors. `noise` (histosynth.baselines.gan.layers.Noise) is the step's torch generator in training, one
  generator per sample (seeded with the sample's seed) at sampling: a network draws every random number from it
  (layers.SeededDropout does), never from the global RNG, so runs resume exactly and sample j can be redone alone.
  A generator network without randomness ignores it.
- One training step (GANStep): fake = G(c); D update on the discriminator loss (real vs fake.detach()), then the G
  update on the generator loss through D with D's parameters frozen (pix2pix's optimize_parameters order).
- Networks are built when the tissue classes are known (from the training data's schema, or a build override
  num_classes=K), their initial weights from the training seed only; sampling before that raises.
- The weights hash (sample provenance) covers the generator only: it alone makes the images. The discriminator is
  saved beside it, so a loaded model trains on from both.
- Tested on one process (CPU). Under torchrun, DDP would see D run twice before one backward and frozen during
  G's update; that needs DDP settings (static graph / unused parameters) that have not been tried here.
"""

from __future__ import annotations

import copy
import functools
from abc import abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from histosynth.baselines.gan.layers import Noise, per_sample_generators
from histosynth.baselines.gan.presets import (
    GANModelConfig,
    GANPreset,
    GANSampleConfig,
    GANTrainConfig,
    config_from_dict,
    replace_fields,
)
from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.generators.arrays import TrainingArrays, augment, condition_batch, load_training_arrays
from histosynth.generators.base import Generator, PresetTable, SampleOptions, TrainReport, derive_seed
from histosynth.generators.checkpoint import Component, ComponentFolder, saved_preset
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.tissue import TissueOneHot
from histosynth.generators.training import (
    TRAINING_DIR,
    Batch,
    LoopSettings,
    OptimizerSpec,
    SampleStream,
    StepContext,
    TrainStep,
    finish_training,
    run_training,
    snapshot_saver,
    step_rng,
)
from histosynth.schema import Nuclei, Provenance, Sample

GENERATOR, DISCRIMINATOR = "generator", "discriminator"  # component folder names
CONDITION_STREAM = 3  # a sample's conditioner draws (if any) use SeedSequence([sample seed, CONDITION_STREAM])


def to_pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, R, R, 3) uint8 -> (B, 3, R, R) float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, R, R) in [-1, 1] -> (B, R, R, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def default_device() -> torch.device:
    """The process's device (its GPU under torchrun/accelerate, else cuda:0 if present, else the CPU)."""
    from histosynth.generators.diffusion.generator import default_device as platform_default

    return platform_default()


class GANStep(TrainStep):
    """One iteration: D update on real vs G(c).detach(), then G update through the frozen D (see the module doc)."""

    def __init__(self, gan: "GANGenerator", generator: nn.Module, discriminator: nn.Module, cfg: GANTrainConfig) -> None:
        self.gan, self.g, self.d, self.cfg = gan, generator, discriminator, cfg

    def modules(self) -> dict[str, nn.Module]:
        return {GENERATOR: self.g, DISCRIMINATOR: self.d}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        cfg = self.cfg
        return {"g": OptimizerSpec(list(self.g.parameters()), cfg.lr, tuple(cfg.adam_betas), cfg.weight_decay,
                                   cfg.lr_factor()),
                "d": OptimizerSpec(list(self.d.parameters()), cfg.lr if cfg.lr_d is None else cfg.lr_d,
                                   tuple(cfg.adam_betas if cfg.adam_betas_d is None else cfg.adam_betas_d),
                                   cfg.weight_decay, cfg.lr_factor())}

    def ema_optimizer(self) -> str | None:
        return "g"

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        g, d = ctx.modules[GENERATOR], ctx.modules[DISCRIMINATOR]
        fake = self.gan.forward_generator(g, batch, generator)
        d_losses = self.gan.discriminator_loss(d, batch, fake.detach())
        ctx.apply(d_losses["d"], "d")
        d.requires_grad_(False)  # G's loss must leave no gradient in D for D's next step
        try:
            g_losses = self.gan.generator_loss(d, batch, fake)
            ctx.apply(g_losses["g"], "g")
        finally:
            d.requires_grad_(True)
        return {"loss": g_losses["g"], **g_losses, **d_losses}

    def batch_images(self, batch: Batch) -> int:
        return int(batch["image"].shape[0])


class GANGenerator(ComponentFolder, PresetTable, Generator):
    """A conditional GAN: conditioner -> generator network, trained against a discriminator (see the module doc)."""

    preset_table: ClassVar[Mapping[str, Callable[[], GANPreset]]]
    model_config: ClassVar[type[GANModelConfig]]
    network_classes: ClassVar[tuple[type[nn.Module], type[nn.Module]]]

    def __init__(self, preset: GANPreset, device: str | torch.device | None = None,
                 networks: tuple[nn.Module, nn.Module | None] | None = None) -> None:
        """Use `build` or `load`; `networks` are already-made (generator, discriminator)."""
        self.preset = preset
        self.device = torch.device(device) if device is not None else default_device()
        self.train_report: TrainReport | None = None
        self._hash: str | None = None
        self._init_seed: int | None = None  # seed of freshly built, untrained networks (None: given or trained)
        self.generator_net: nn.Module | None = None
        self.discriminator_net: nn.Module | None = None
        self.conditioner: Conditioner | None = None
        if networks is not None:
            self.conditioner = self.make_conditioner()
            g, d = networks
            if d is None:  # a folder saved without its discriminator samples; training on starts a fresh one
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(preset.train.seed)
                    d = self.build_networks(self.conditioner.channels)[1]
            self.generator_net, self.discriminator_net = g.to(self.device).eval(), d.to(self.device).eval()
        elif self._classes_known():
            self._build_networks(preset.train.seed)

    # ------------------------------------------------------------------ what a subclass fills in

    @abstractmethod
    def build_networks(self, condition_channels: int) -> tuple[nn.Module, nn.Module]:
        """A fresh (generator, discriminator) pair for a condition of `condition_channels` (random weights: the
        caller seeds the global RNG first)."""

    @abstractmethod
    def discriminator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The discriminator's loss on real `batch["image"]` vs `fake` (detached): {"d": total, parts...}."""

    @abstractmethod
    def generator_loss(self, d: nn.Module, batch: Batch, fake: torch.Tensor) -> dict[str, torch.Tensor]:
        """The generator's loss for `fake` through the (frozen) discriminator: {"g": total, parts...}."""

    def make_conditioner(self) -> Conditioner:
        """The conditioner for the model config's classes (default: the tissue map one-hot, K channels)."""
        return TissueOneHot(self._require(self.preset.model.num_classes, "num_classes"))

    def condition_parts(self) -> tuple[str, ...]:
        """The parts of a condition Sample this model reads (default: its metadata's)."""
        return tuple(self.meta.conditioning)

    def forward_generator(self, g: nn.Module, batch: Batch, noise: Noise) -> torch.Tensor:
        """The generator's images (B, 3, R, R) in [-1, 1] for `batch`'s condition, randomness from `noise`."""
        return g(batch["condition"], noise)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, preset: str | GANPreset = "tiny", device: str | torch.device | None = None,
              **overrides: Any) -> "GANGenerator":
        """An untrained generator; `overrides` change the model config's fields (e.g. num_classes=5, resolution=64)."""
        chosen = cls.get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
        chosen.model = replace_fields(chosen.model, overrides)
        return cls(chosen, device=device)

    def default_options(self) -> SampleOptions:
        return SampleOptions(steps=1, sampler="forward", guidance=1.0, eta=0.0, batch_size=self.preset.sample.batch_size)

    @staticmethod
    def _require(value: int | None, name: str) -> int:
        if value is None:
            raise RuntimeError(f"the networks are built when {name} is known: train first, or build with {name}=K")
        return int(value)

    def _classes_known(self) -> bool:
        model, parts = self.preset.model, self.condition_parts()
        return (("tissue" not in parts or model.num_classes is not None)
                and ("nuclei" not in parts or model.nuclei_classes is not None))

    def _fit_classes(self, tissue_schema: str | None, nuclei_schema: str | None) -> None:
        """Take the class counts and schemas of the training data (refusing data with more classes than built)."""
        model, changes = self.preset.model, {}
        for part, schema, count, name in (("tissue", tissue_schema, "num_classes", "tissue_schema"),
                                          ("nuclei", nuclei_schema, "nuclei_classes", "nuclei_schema")):
            if part not in self.condition_parts() or schema is None:
                continue
            k, held = get_schema(schema).num_classes, getattr(model, count)
            if getattr(model, name) not in (None, schema):
                raise InputError(f"{self.meta.name}: the data's {part} schema is {schema!r}, but this model was built "
                                 f"for {getattr(model, name)!r}")
            if held is not None and k > held and self.generator_net is not None:
                raise InputError(f"{self.meta.name}: the data's {part} schema {schema!r} has {k} classes; this model "
                                 f"holds {held}")
            changes[count] = max(k, held or 0)
            changes[name] = getattr(model, name) or schema
        self.preset.model = replace_fields(model, changes)

    def _build_networks(self, seed: int) -> None:
        """Fresh networks whose weights depend on `seed` only (the training seed), not on the global RNG."""
        self.conditioner = self.make_conditioner()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g, d = self.build_networks(self.conditioner.channels)
        self.generator_net, self.discriminator_net = g.to(self.device).eval(), d.to(self.device).eval()
        self._init_seed = seed
        self._hash = None

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        if self.generator_net is None or self.discriminator_net is None:
            self._require(None, "num_classes" if "tissue" in self.condition_parts() else "nuclei_classes")
        return self.generator_net, self.discriminator_net  # type: ignore[return-value]

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: GANTrainConfig | dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False, on_step: Any = None) -> TrainReport:
        """Train on a dataset folder or Samples; with `out`, checkpoint into out/training and save the model to out.

        `config` is a GANTrainConfig or a dict of its fields to change; with `resume`, training continues from the
        newest checkpoint in out/training up to `config.steps` in total.
        """
        cfg = config if isinstance(config, GANTrainConfig) else replace_fields(self.preset.train, config or {})
        folder = Path(out) / TRAINING_DIR if out is not None else None
        arrays = load_training_arrays(data, self.preset.model.resolution, self.condition_parts(), cfg.heterogeneity,
                                      folder / "arrays" if folder is not None else None)
        self._fit_classes(arrays.tissue_schema, arrays.nuclei_schema)
        if self.generator_net is None or (self._init_seed is not None and self._init_seed != cfg.seed):
            self._build_networks(cfg.seed)  # not built yet, or built under another seed and never trained
        g, d = self._networks()
        self._init_seed = None  # the weights change from here on: a later train() continues from them
        result = run_training(GANStep(self, g, d, cfg), self._batch_fn(arrays, cfg), cfg, folder, resume=resume,
                              on_step=on_step, on_snapshot=snapshot_saver(self, out, arrays.training_data()))
        g.eval()
        d.eval()
        self._hash = None
        self.preset.train = cfg
        return finish_training(self, cfg.steps, result, arrays.training_data(), out)  # loss means of G and D

    def _batch_fn(self, arrays: TrainingArrays, cfg: GANTrainConfig):
        """batch_fn(step, micro, rank, world, device): an epoch-shuffled batch, augmented, as tensors."""
        n = len(arrays)
        stream = SampleStream(n, cfg.seed, cfg.batch_size, cfg.grad_accum)

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
            index = stream.indices(step, micro, rank, world)
            rng = step_rng(cfg.seed, 1, step, micro, rank)
            batch = arrays.batch(index)
            if cfg.augment:  # the same flip / rotation for a patch and all its labels
                batch = augment(batch, rng)
            return {"image": to_pixels(batch.images, device), **self._condition(batch, [rng] * len(index), device)}

        return batch_fn

    def _condition(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                   device: torch.device) -> dict[str, torch.Tensor]:
        assert self.conditioner is not None
        return self.conditioner(batch, rngs, device)

    # ------------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        """One new Sample per condition at the model resolution (conditions of another size are resized), the
        condition's labels copied; one generator forward pass per batch."""
        opts = self.resolve_options(options, **fields)
        if opts.task not in self.meta.tasks:
            raise InputError(f"{self.meta.name} does only {', '.join(self.meta.tasks)}, not {opts.task!r}")
        self._networks()
        conditions = list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        checkpoint = self.checkpoint_hash
        size = int(opts.batch_size)  # type: ignore[arg-type]
        out: list[Sample] = []
        for start in range(0, len(conditions), size):
            out += self._sample_batch(conditions[start:start + size], seeds[start:start + size], checkpoint)
        return out

    def _check_schemas(self, batch: ConditionBatch) -> None:
        model = self.preset.model
        for part, given, held in (("tissue", batch.tissue_schema, model.tissue_schema),
                                  ("nuclei", batch.nuclei_schema, model.nuclei_schema)):
            if given is not None and held is not None and given != held:
                raise InputError(f"{self.meta.name}: the conditions' {part} schema is {given!r}, but this model was "
                                 f"trained on {held!r} (class ids would mean other classes)")
        if batch.tissue_schema is not None and get_schema(batch.tissue_schema).num_classes > (model.num_classes or 0):
            raise InputError(f"{self.meta.name}: conditions use {batch.tissue_schema!r} with "
                             f"{get_schema(batch.tissue_schema).num_classes} classes; this model holds {model.num_classes}")

    @torch.no_grad()
    def _sample_batch(self, conditions: list[Sample], seeds: list[int], checkpoint: str) -> list[Sample]:
        g, _ = self._networks()
        res = self.preset.model.resolution
        batch = condition_batch(conditions, res, self.condition_parts())
        self._check_schemas(batch)
        rngs = [np.random.default_rng(np.random.SeedSequence([s, CONDITION_STREAM])) for s in seeds]
        g.eval()
        inputs = {"image": to_pixels(batch.images, self.device), **self._condition(batch, rngs, self.device)}
        pixels = to_uint8(self.forward_generator(g, inputs, per_sample_generators(seeds)))
        tissue = "tissue" in self.meta.outputs and batch.tissue is not None
        nuclei = batch.nuclei is not None  # the layout the image was drawn from is its nuclei label
        samples = []
        for j, (cond, s) in enumerate(zip(conditions, seeds, strict=True)):
            mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
            prov = Provenance(source=self.meta.name, mpp=mpp, generator=self.meta.name,
                              generator_version=self.meta.version, checkpoint_hash=checkpoint, seed=s)
            layout = batch.nuclei[j] if nuclei else None  # type: ignore[index]
            samples.append(Sample(image=pixels[j], provenance=prov,
                                  tissue=batch.tissue[j].copy() if tissue else None,  # type: ignore[index]
                                  tissue_schema=batch.tissue_schema if tissue else None,
                                  nuclei=Nuclei(batch.nuclei_schema, layout.centroids.copy(), layout.class_ids.copy())
                                  if layout is not None else None))
        return samples

    # ------------------------------------------------------------------ persistence

    def saved_components(self) -> dict[str, Any]:
        g, d = self._networks()
        return {GENERATOR: g, DISCRIMINATOR: d}

    def hashed_components(self) -> list[str]:
        return [GENERATOR]

    def saved_settings(self) -> dict[str, Any]:
        return {"model": asdict(self.preset.model), "train": asdict(self.preset.train),
                "sample": asdict(self.preset.sample),
                "conditioner": self.conditioner.config() if self.conditioner is not None else None}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> GANPreset:
        return saved_preset(config, GANPreset, functools.partial(config_from_dict, cls.model_config),
                            functools.partial(config_from_dict, GANTrainConfig),
                            functools.partial(config_from_dict, GANSampleConfig))

    @classmethod
    def declared_components(cls, settings: GANPreset) -> dict[str, Component]:
        """The generator (hashed); the discriminator beside it, so a loaded model trains on (a folder may lack it)."""
        g_class, d_class = cls.network_classes
        return {GENERATOR: Component(g_class), DISCRIMINATOR: Component(d_class, hashed=False, optional=True)}

    @classmethod
    def from_components(cls, settings: GANPreset, components: dict[str, Any],
                        device: str | torch.device | None = None) -> "GANGenerator":
        return cls(settings, device=device, networks=(components[GENERATOR], components.get(DISCRIMINATOR)))

    def card_details(self) -> list[str]:
        """The training lines every GAN shares; a subclass puts its architecture lines first."""
        t, model = self.preset.train, self.preset.model
        lr_d = t.lr if t.lr_d is None else t.lr_d
        betas_d = t.adam_betas if t.adam_betas_d is None else t.adam_betas_d
        schedule = ("constant" if t.lr_schedule == "constant" else
                    f"constant for {t.decay_start:.0%} of the steps, then linear decay to 0")
        condition = "not built" if self.conditioner is None else (
            " + ".join(c.name for c in getattr(self.conditioner, "conditioners", [self.conditioner]))
            + f", {self.conditioner.channels} channels")
        return [
            f"- Conditional GAN at {model.resolution} px; condition: {condition}.",
            f"- Optimizers: Adam, G lr {t.lr:g} betas {tuple(t.adam_betas)}, D lr {lr_d:g} betas {tuple(betas_d)}; "
            f"LR {schedule}; batch {t.batch_size}. Sampling: one generator pass per batch; a sample's randomness "
            "comes from its own seed only.",
            "- Labels: the condition's, copied (its tissue map, and its nuclei when the model reads them).",
        ]
