"""CoSyn-style joint image + label synthesis (Min, Oh, Jeong, ECCV 2024, arXiv 2407.14434; code
hvcl/CoSyn-ContextCondNucAug): one denoiser makes a patch together with its nuclei labels, conditioned on a
classed centroid layout and optionally on the tissue type.

- Network: one diffusers UNet2DModel. Input = the noisy joint sample (RGB 3 + class one-hot K + HoVer x/y 2, in
  [-1, 1]) concatenated with the condition, the K-channel centroid map (CentroidMaps: the class id at each
  instance centroid as a point, CoSyn's point map, or a small Gaussian); output = the K + 5 joint channels.
  Concatenation (Imagen's `cond_images`, as CoSyn) rather than a ControlNet: the condition is as sparse as the
  layout it must be aligned to pixel for pixel.
- Context: the tissue type (context.py) through the UNet's class embedding (`num_class_embeds` = contexts + 1),
  dropped to the null id with probability cfg_dropout (0.1) while training; sampling guides with scale 2.0
  (classifier-free guidance on the context only; the centroid map is always given, as CoSyn's cond images).
- Schedules: cosine for the image, shifted cosine for the labels, one timestep t for both (schedules.py);
  the loss is the mean of the image group's and the label group's MSE, so each group weighs the same whatever
  its number of channels.
- Decoding (decode.py): the label channels -> instances by the downstream HoVer-Net's watershed -> classed
  centroids; outputs carry the image and these nuclei (label policy "generated"). `last_consistency` holds the
  share of conditioning centroids that the last `sample` call's nuclei honor.

Saved folder: config.json, model_index.json, unet/, scheduler/ (image), label_scheduler/, README.md.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from torch import nn

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.generators.arrays import condition_batch
from histosynth.generators.base import Generator, PresetTable, SampleOptions, TrainReport, derive_seed
from histosynth.generators.checkpoint import Component, ComponentFolder, SettingsError, saved_preset
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.centroids import CentroidMaps
from histosynth.generators.cosyn.context import NULL_CONTEXT, context_ids
from histosynth.generators.cosyn.data import JointArrays, augment_pairs, joint_labels, layout_of, load_joint_arrays
from histosynth.generators.cosyn.decode import Consistency, consistency_of, decode_nuclei
from histosynth.generators.cosyn.presets import PRESETS, CoSynModelConfig, CoSynPreset
from histosynth.generators.cosyn.schedules import (
    GroupedScheduler,
    add_noise,
    image_scheduler,
    label_scheduler,
    velocity,
)
from histosynth.generators.diffusion.generator import CROP_STREAM, _to_uint8, default_device
from histosynth.generators.diffusion.presets import (
    TrainConfig,
    override,
    replace_fields,
    sample_config_from_dict,
    to_dict,
    train_config_from_dict,
)
from histosynth.generators.diffusion.sampling import denoise, guided, initial_noise
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
from histosynth.schema import Provenance, Sample

IMAGE_CHANNELS = 3
HV_CHANNELS = 2
DEFAULT_DECODE_MPP = 0.5  # used for decoding only when neither the condition nor the training data give an mpp


def build_joint_unet(model: CoSynModelConfig, num_classes: int) -> UNet2DModel:
    """The joint denoiser: in = joint (K + 5) + centroid map (K) channels, out = joint (K + 5) channels."""
    levels = len(model.block_out_channels)
    attention = tuple(model.attention_levels) if model.attention_levels else (False,) * levels
    if len(attention) != levels:
        raise InputError(f"attention_levels {attention} needs one entry per UNet level ({levels})")
    joint = IMAGE_CHANNELS + num_classes + HV_CHANNELS
    return UNet2DModel(
        sample_size=model.resolution,
        in_channels=joint + num_classes,
        out_channels=joint,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
        block_out_channels=tuple(model.block_out_channels),
        layers_per_block=model.layers_per_block,
        norm_num_groups=model.norm_num_groups,
        attention_head_dim=model.attention_head_dim,
        add_attention=any(attention),
        num_class_embeds=len(model.contexts) + 1 if model.contexts else None,
    )


def model_config_from_dict(data: Mapping[str, Any]) -> CoSynModelConfig:
    """Inverse of `to_dict` for a saved CoSynModelConfig (lists back to tuples)."""
    return CoSynModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class JointStep(TrainStep):
    """One micro-step: noise the joint sample per group at one t, predict from (x_t, centroid map, context)."""

    def __init__(self, unet: UNet2DModel, schedulers: Sequence[DDPMScheduler], groups: Sequence[int],
                 cfg_dropout: float) -> None:
        self.unet = unet
        self.schedulers = list(schedulers)
        self.groups = list(groups)
        self.cfg_dropout = cfg_dropout

    def modules(self) -> dict[str, nn.Module]:
        return {"unet": self.unet}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        x0, condition = batch["x0"], batch["condition"]
        n, device = x0.shape[0], x0.device
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, self.schedulers[0].config.num_train_timesteps, (n,), generator=generator).to(device)
        keep = torch.rand(n, generator=generator) >= self.cfg_dropout
        labels = batch.get("context")
        labels = torch.where(keep.to(device), labels, NULL_CONTEXT) if labels is not None else None
        x_t = add_noise(self.schedulers, self.groups, x0, noise, t)
        prediction = ctx.modules["unet"](torch.cat([x_t, condition], dim=1), t, class_labels=labels).sample
        kind = self.schedulers[0].config.prediction_type
        target = {"epsilon": noise, "sample": x0}.get(kind)
        if target is None:
            target = velocity(self.schedulers, self.groups, x0, noise, t)
        losses = [F.mse_loss(p.float(), q.float()) for p, q in zip(torch.split(prediction, self.groups, 1),
                                                                    torch.split(target, self.groups, 1), strict=True)]
        loss = sum(losses) / len(losses)
        ctx.apply(loss)
        return {"loss": loss, "loss_image": losses[0], "loss_labels": losses[1]}

    def batch_images(self, batch: Batch) -> int:
        return int(batch["x0"].shape[0])


class CoSynGenerator(ComponentFolder, PresetTable, Generator):
    """Centroid layout (+ tissue type) -> a new patch with its own nuclei instances, classes and centroids."""

    meta = generator_meta("cosyn")
    preset_table: ClassVar[Mapping[str, Any]] = PRESETS
    components = {"unet": Component(UNet2DModel)}  # both schedulers are rebuilt from the settings

    def __init__(self, preset: CoSynPreset, device: str | torch.device | None = None,
                 unet: UNet2DModel | None = None) -> None:
        """Use `build` or `load`; this wires already-made parts together."""
        self.preset = preset
        self.device = torch.device(device) if device is not None else default_device()
        model = preset.model
        self.scheduler = image_scheduler(model.num_train_timesteps, model.prediction_type)
        self.label_scheduler = label_scheduler(self.scheduler, model.label_shift)
        self.unet = unet.to(self.device) if unet is not None else None
        self.train_report: TrainReport | None = None
        self.last_consistency: Consistency | None = None
        self._hash: str | None = None
        self._init_seed: int | None = None
        if self.unet is None and model.num_classes:
            self._build_networks(int(model.num_classes), preset.train.seed)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, preset: str | CoSynPreset = "tiny", device: str | torch.device | None = None,
              **overrides: Any) -> "CoSynGenerator":
        """An untrained generator; `overrides` change CoSynModelConfig fields (e.g. num_classes=6, resolution=32)."""
        chosen = cls.get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
        chosen.model = override(chosen.model, **overrides)
        return cls(chosen, device=device)

    @property
    def num_classes(self) -> int:
        """K: nuclei classes including background (the width of the class map and of the centroid map)."""
        return int(self.preset.model.num_classes or 0)

    @property
    def groups(self) -> list[int]:
        """Channel groups of the joint sample: the image, then the labels (class map + distance maps)."""
        return [IMAGE_CHANNELS, self.num_classes + HV_CHANNELS]

    @property
    def conditioner(self) -> CentroidMaps:
        model = self.preset.model
        return CentroidMaps(self.num_classes, sigma_px=model.centroid_sigma_px, mode=model.centroid_mode)

    def _build_networks(self, num_classes: int, seed: int) -> None:
        """A fresh UNet whose initial weights depend on `seed` only."""
        self.preset.model = override(self.preset.model, num_classes=num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.unet = build_joint_unet(self.preset.model, num_classes).to(self.device)
        self._init_seed = seed
        self._hash = None

    def _require_networks(self) -> UNet2DModel:
        if self.unet is None:
            raise RuntimeError("cosyn: the network is built when the number of nuclei classes is known: train first, "
                               "or build with num_classes=K")
        return self.unet

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: TrainConfig | dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False, on_step: Any = None) -> TrainReport:
        """Train on patches whose nuclei carry instance maps; with `out`, checkpoint into out/training and save."""
        cfg = config if isinstance(config, TrainConfig) else replace_fields(self.preset.train, config or {})
        model = self.preset.model
        arrays = load_joint_arrays(data, model.resolution, model.contexts, cfg.heterogeneity)
        k = get_schema(arrays.schema).num_classes
        if model.nuclei_schema is not None and model.nuclei_schema != arrays.schema:
            raise InputError(f"the data's nuclei use schema {arrays.schema!r}, this model {model.nuclei_schema!r}; "
                             "remap the ids first (histosynth.classes.remap_ids)")
        if self.unet is None:
            self._build_networks(k, cfg.seed)
        elif k != self.num_classes:
            raise InputError(f"the data has {k} nuclei classes (schema {arrays.schema}), this model {self.num_classes}")
        finite = arrays.mpp[np.isfinite(arrays.mpp)]
        self.preset.model = override(self.preset.model, nuclei_schema=arrays.schema,
                                     mpp=float(np.median(finite)) if finite.size else None)
        if self._init_seed is not None and self._init_seed != cfg.seed:
            self._build_networks(self.num_classes, cfg.seed)  # built under another seed and never trained: redraw
        unet = self._require_networks()
        self._init_seed = None
        folder = Path(out) / TRAINING_DIR if out is not None else None
        step = JointStep(unet, [self.scheduler, self.label_scheduler], self.groups, cfg.cfg_dropout)
        result = run_training(step, self._batch_fn(arrays, cfg), cfg, folder, resume=resume, on_step=on_step,
                              on_snapshot=snapshot_saver(self, out, arrays.training_data()))
        self._hash = None
        self.preset.train = cfg
        return finish_training(self, cfg.steps, result, arrays.training_data(), out)

    def _batch_fn(self, arrays: JointArrays, cfg: TrainConfig):
        n = len(arrays)
        stream = SampleStream(n, cfg.seed, cfg.batch_size, cfg.grad_accum)
        conditioner = self.conditioner

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> dict[str, torch.Tensor]:
            index = stream.indices(step, micro, rank, world)
            rng = step_rng(cfg.seed, 1, step, micro, rank)
            images, instances = arrays.images[index], arrays.instances[index]
            if cfg.augment:
                images, instances = augment_pairs(images, instances, rng)
            classes = [arrays.classes[i] for i in index]
            labels = np.stack([joint_labels(m, c, self.num_classes) for m, c in zip(instances, classes, strict=True)])
            layouts = [layout_of(m, c) for m, c in zip(instances, classes, strict=True)]
            batch = ConditionBatch(images, nuclei=layouts, nuclei_schema=arrays.schema, mpp=arrays.mpp[index])
            pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            x0 = torch.cat([pixels, torch.from_numpy(labels)], dim=1).to(device)
            inputs = {"x0": x0, "condition": conditioner(batch, [rng] * len(index), device)["condition"]}
            if self.preset.model.contexts:
                inputs["context"] = torch.from_numpy(arrays.contexts[index]).to(device)
            return inputs

        return batch_fn

    # ------------------------------------------------------------------ sampling

    def default_options(self) -> SampleOptions:
        s = self.preset.sample
        return SampleOptions(steps=s.steps, sampler=s.sampler, guidance=s.guidance, eta=s.eta, batch_size=s.batch_size)

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        """One new Sample per condition layout, at the model resolution: image + generated nuclei (instances,
        classes, centroids). Sets `last_consistency` (how many conditioning centroids the nuclei honor)."""
        opts = self.resolve_options(options, **fields)
        if opts.task not in self.meta.tasks:
            raise InputError(f"{self.meta.name} does only {', '.join(self.meta.tasks)}, not {opts.task!r}")
        unet = self._require_networks()
        conditions = list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        checkpoint = self.checkpoint_hash
        unet.eval()
        out: list[Sample] = []
        size = int(opts.batch_size)  # type: ignore[arg-type]
        for start in range(0, len(conditions), size):
            out += self._sample_batch(conditions[start : start + size], seeds[start : start + size], opts, checkpoint)
        self.last_consistency = consistency_of(conditions, out, self.preset.model.consistency_tolerance_px)
        return out

    def _sample_batch(self, conditions: list[Sample], seeds: list[int], opts: SampleOptions,
                      checkpoint: str) -> list[Sample]:
        unet = self._require_networks()
        model = self.preset.model
        res = model.resolution
        batch = condition_batch(conditions, res, ("nuclei",))
        if batch.nuclei_schema != model.nuclei_schema and model.nuclei_schema is not None:
            raise InputError(f"conditions use nuclei schema {batch.nuclei_schema!r}; this model was trained on "
                             f"{model.nuclei_schema!r} (remap the ids first: histosynth.classes.remap_ids)")
        rngs = [np.random.default_rng(np.random.SeedSequence([s, CROP_STREAM])) for s in seeds]
        with torch.no_grad():
            condition = self.conditioner(batch, rngs, self.device)["condition"]
            labels = (torch.from_numpy(context_ids(conditions, model.contexts)).to(self.device)
                      if model.contexts else None)
            noise, generators = initial_noise(seeds, (sum(self.groups), res, res), self.device)

            def model_fn(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
                given = labels if conditional or labels is None else torch.full_like(labels, NULL_CONTEXT)
                return unet(torch.cat([x, condition.to(x.dtype)], dim=1), t, class_labels=given).sample

            guidance = float(opts.guidance) if labels is not None else 1.0  # type: ignore[arg-type]
            scheduler = GroupedScheduler(str(opts.sampler), [self.scheduler, self.label_scheduler], self.groups)
            joint = denoise(guided(model_fn, guidance), noise, scheduler, int(opts.steps),  # type: ignore[arg-type]
                            generators, float(opts.eta or 0.0), opts.progress)
        pixels = _to_uint8(joint[:, :IMAGE_CHANNELS].float())
        label_maps = joint[:, IMAGE_CHANNELS:].float().cpu().numpy()
        samples = []
        for j, (cond, s) in enumerate(zip(conditions, seeds, strict=True)):
            mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
            nuclei = decode_nuclei(label_maps[j], str(model.nuclei_schema or batch.nuclei_schema),
                                   mpp or model.mpp or DEFAULT_DECODE_MPP)
            prov = Provenance(source=self.meta.name, mpp=mpp, generator=self.meta.name,
                              generator_version=self.meta.version, checkpoint_hash=checkpoint, seed=s)
            samples.append(Sample(image=pixels[j], provenance=prov, nuclei=nuclei))
        return samples

    # ------------------------------------------------------------------ persistence

    def saved_components(self) -> dict[str, Any]:
        return {"unet": self._require_networks(), "scheduler": self.scheduler, "label_scheduler": self.label_scheduler}

    def hashed_components(self) -> list[str]:
        return ["unet"]

    def saved_settings(self) -> dict[str, Any]:
        return {"model": to_dict(self.preset.model), "train": to_dict(self.preset.train),
                "sample": to_dict(self.preset.sample), "conditioner": self.conditioner.config()}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> CoSynPreset:
        return saved_preset(config, CoSynPreset, model_config_from_dict, train_config_from_dict, sample_config_from_dict)

    @classmethod
    def from_components(cls, settings: CoSynPreset, components: dict[str, Any],
                        device: str | torch.device | None = None) -> "CoSynGenerator":
        unet, k = components["unet"], int(settings.model.num_classes or 0)
        joint = IMAGE_CHANNELS + k + HV_CHANNELS
        if (unet.config.in_channels, unet.config.out_channels) != (joint + k, joint):
            raise SettingsError(f"num_classes {settings.model.num_classes} does not fit the saved UNet "
                                f"({unet.config.in_channels} in, {unet.config.out_channels} out channels)")
        return cls(settings, device=device, unet=unet)

    def card_details(self) -> list[str]:
        model = self.preset.model
        context = (f"tissue type ({len(model.contexts)} types) as a class embedding, dropout "
                   f"{self.preset.train.cfg_dropout}, guidance {self.preset.sample.guidance}"
                   if model.contexts else "none")
        return [
            f"- Joint pixel-space diffusion at {model.resolution} px: one UNet2DModel (widths "
            f"{list(model.block_out_channels)}) denoises RGB + the nuclei class map (K = {model.num_classes} one-hot "
            f"channels, schema {model.nuclei_schema}) + HoVer x/y distance maps; {model.prediction_type} prediction.",
            f"- Schedules: cosine for the image, shifted cosine (SNR x {model.label_shift}^2) for the labels, "
            f"{model.num_train_timesteps} timesteps.",
            f"- Condition: the centroid map ({model.centroid_mode}) concatenated to the input; context: {context}.",
            "- Labels: decoded by HoVer-Net's marker-controlled watershed into instances, classes and centroids; a "
            f"conditioning centroid is honored when a generated nucleus lies within {model.consistency_tolerance_px} px.",
        ]


__all__ = ["CoSynGenerator", "build_joint_unet"]
