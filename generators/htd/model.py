"""HTD (HeteroTissue-Diffuse) and the shared implementation of its ablations.

`HTDGenerator` conditions a diffusion UNet ControlNet-style on c = concat(M, C_1..C_K): the tissue map one-hot
and one visual crop per class placed in a sparse image-sized tensor (histosynth.generators.htd.conditions).
The ablations in histosynth.baselines change only `condition` ("none" or "embedding") and their metadata.

Saved folder (diffusers style): config.json (histosynth: generator, version, configs, training summary),
unet/, controlnet/ (and head/ for the embedding ablation) and autoencoder/ (latent presets) as diffusers
`save_pretrained` folders, scheduler/ (the training noise schedule), README.md (model card). A training run's
resumable state lives in training/ beside them and is not part of the model or its hash.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel, VQModel
from torch import nn

from histosynth.classes import get_schema
from histosynth.generators.base import (
    CheckpointError,
    Generator,
    derive_seed,
    read_json_file,
    verify_checkpoint,
    weights_hash,
)
from histosynth.generators.diffusion.backbones import (
    Denoiser,
    LatentCodec,
    build_autoencoder,
    build_controlnet,
    build_unet,
    noise_scheduler,
)
from histosynth.generators.diffusion.presets import (
    Preset,
    SampleConfig,
    TrainConfig,
    get_preset,
    model_config_from_dict,
    override,
    replace_fields,
    sample_config_from_dict,
    to_dict,
)
from histosynth.generators.diffusion.sampling import denoise, guided, initial_noise, make_sampler
from histosynth.generators.diffusion.training import step_rng, train_denoiser
from histosynth.generators.htd.conditions import Curriculum, pack_crops
from histosynth.generators.htd.data import TrainingSet, condition_arrays, load_training_set
from histosynth.generators.registry import GENERATOR_META
from histosynth.schema import Provenance, Sample

TRAINING_DIR = "training"
CROP_STREAM = 1  # SeedSequence([sample seed, CROP_STREAM]) draws a sample's crops; its noise uses the seed itself


def default_device() -> torch.device:
    """The process's device: its GPU under torchrun/accelerate, else cuda:0 if present, else the CPU."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).device


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _replace_folder(target: Path, write) -> None:
    """Write a component folder beside `target`, then swap it in (a crash leaves the old one or the new one)."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(partial)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)


class HTDGenerator(Generator):
    """HTD: tissue map + per-class visual crops -> new patch whose label is that map."""

    meta = GENERATOR_META["htd"]
    condition: ClassVar[str] = "crops"  # "crops" (HTD), "none", "embedding" (the ablations)
    head_class: ClassVar[type | None] = None

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
        self.training_info: dict[str, Any] = {}
        self._hash: str | None = None
        self._encoder_cache: Any = None
        self._init_seed: int | None = None  # the seed of freshly built, untrained networks (None: given or trained)
        if self.denoiser is None and (self.condition == "none" or model.num_classes):
            self._build_networks(model.num_classes or 0, preset.train.seed)

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, preset: str | Preset = "tiny", device: str | torch.device | None = None, **overrides: Any) -> "HTDGenerator":
        """An untrained generator; `overrides` change ModelConfig fields (e.g. num_classes=5, resolution=32)."""
        chosen = get_preset(preset) if isinstance(preset, str) else copy.deepcopy(preset)
        chosen.model = override(chosen.model, **overrides)
        return cls(chosen, device=device)

    @property
    def num_classes(self) -> int:
        """K, the number of tissue classes the condition holds (0 for the unconditional model)."""
        return int(self.preset.model.num_classes or 0)

    def condition_channels(self, num_classes: int) -> int | None:
        """ControlNet input width: 4K (one-hot + 3 crop channels per class); None = no ControlNet."""
        return 4 * num_classes

    def make_head(self, num_classes: int) -> nn.Module | None:
        """An extra trainable module between the condition and the ControlNet (the embedding ablation's)."""
        return None

    def _build_networks(self, num_classes: int, seed: int) -> None:
        """Fresh networks whose initial weights depend on `seed` only (the training seed), not on the global RNG."""
        model = self.preset.model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = build_unet(model, self.codec.channels)
            channels = self.condition_channels(num_classes) if self.condition != "none" else None
            controlnet = build_controlnet(unet, model, channels) if channels else None
            head = self.make_head(num_classes)
        if not model.train_unet:
            unet.requires_grad_(False)
        self.denoiser = Denoiser(unet, controlnet, head).to(self.device)
        self._init_seed = seed
        self._hash = None
        if self.condition != "none":
            self.preset.model = override(model, num_classes=num_classes)

    def _require_networks(self) -> Denoiser:
        if self.denoiser is None:
            raise RuntimeError(f"{self.meta.name}: the networks are built when the number of tissue classes is known: "
                               "train first, or build with num_classes=K")
        return self.denoiser

    # ------------------------------------------------------------------ conditions

    def condition_tensors(self, maps: np.ndarray | None, images: np.ndarray, rngs: Sequence[np.random.Generator],
                          device: torch.device) -> dict[str, torch.Tensor]:
        """The model inputs besides x_t for a batch: {"condition": (B, 4K, H, W)} for HTD."""
        if self.condition == "none" or maps is None:
            return {}
        cfg = self.preset.model.crops
        packed = np.stack([pack_crops(m, im, self.num_classes, rng, cfg) for m, im, rng in zip(maps, images, rngs, strict=False)])
        return {"condition": torch.from_numpy(packed).to(device)}

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: TrainConfig | dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False, on_step: Any = None) -> dict[str, Any]:
        """Train on a dataset folder or Samples; with `out`, checkpoint into out/training and save the model to out.

        `config` is a TrainConfig or a dict of fields to change in the preset's (None values included). With `resume`, training continues from
        the newest checkpoint in out/training (same data, same config) up to `config.steps` in total. Networks not
        trained yet start from weights drawn with `config.seed`, so the seed fixes the whole run.
        """
        cfg = config if isinstance(config, TrainConfig) else replace_fields(self.preset.train, config or {})
        need_tissue = self.condition != "none"
        folder = Path(out) / TRAINING_DIR if out is not None else None
        spill = folder / "arrays" if folder is not None else None  # memory-mapped patches, not RAM
        data_set = load_training_set(data, self.preset.model.resolution, need_tissue, cfg.heterogeneity, spill)
        curriculum = Curriculum(cfg.curriculum) if cfg.curriculum is not None and need_tissue else None
        if need_tissue:
            k = max(self.num_classes, data_set.num_classes or 0, curriculum.max_classes if curriculum else 0)
            if self.denoiser is None:
                self._build_networks(k, cfg.seed)
            elif k > self.num_classes:
                raise ValueError(f"the data has {k} tissue classes but this model's condition holds {self.num_classes}")
            self.preset.model = override(self.preset.model, tissue_schema=self.preset.model.tissue_schema or data_set.tissue_schema)
        if self._init_seed is not None and self._init_seed != cfg.seed:
            self._build_networks(self.num_classes, cfg.seed)  # built under another seed and never trained: redraw
        denoiser = self._require_networks()
        batch_fn = self._batch_fn(data_set, cfg, curriculum)
        self._init_seed = None  # the weights change from here on: a later train() continues from them
        result = train_denoiser(denoiser, self.scheduler, batch_fn, cfg, folder, resume=resume, on_step=on_step)
        self._hash = None
        self.preset.train = cfg
        self.training_info = {
            "data": data_set.description, "data_licence": data_set.licence, "source_datasets": data_set.source_datasets,
            "patches": len(data_set), "dropped_homogeneous": data_set.dropped, "tissue_schema": data_set.tissue_schema,
            "steps": cfg.steps, "resumed_from_step": result.start_step, "final_loss": result.final_loss,
            "train_images_per_second": round(result.images_per_second, 2),
        }
        if out is not None:
            from accelerate import PartialState

            if PartialState().is_main_process:
                self.save(out)
            PartialState().wait_for_everyone()
        return dict(self.training_info, seconds=round(result.seconds, 2), losses=result.losses)

    def _batch_fn(self, data_set: TrainingSet, cfg: TrainConfig, curriculum: Curriculum | None):
        n = len(data_set)
        orders: dict[int, np.ndarray] = {}

        def order(epoch: int) -> np.ndarray:
            if epoch not in orders:
                orders.clear()
                orders[epoch] = step_rng(cfg.seed, 0, epoch).permutation(n)
            return orders[epoch]

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> dict[str, torch.Tensor]:
            start = ((step * cfg.grad_accum + micro) * world + rank) * cfg.batch_size
            index = np.array([order(p // n)[p % n] for p in range(start, start + cfg.batch_size)])
            rng = step_rng(cfg.seed, 1, step, micro, rank)
            images = data_set.images[index]
            maps = data_set.tissue[index] if data_set.tissue is not None else None
            if cfg.augment:  # the same flip / rotation for a patch and its map
                images, maps = images.copy(), None if maps is None else maps.copy()
                for j, (k, flip) in enumerate(zip(rng.integers(0, 4, len(index)), rng.integers(0, 2, len(index)), strict=False)):
                    images[j] = np.rot90(images[j], k)[:, ::-1] if flip else np.rot90(images[j], k)
                    if maps is not None:
                        maps[j] = np.rot90(maps[j], k)[:, ::-1] if flip else np.rot90(maps[j], k)
            if curriculum is not None and maps is not None:
                maps = curriculum.apply(maps, step)
            pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
            batch = {"x0": self.codec.encode(pixels.to(device))}
            batch.update(self.condition_tensors(maps, images, [rng] * len(index), device))
            return batch

        return batch_fn

    # ------------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], *, steps: int | None = None,
               sampler: str | None = None, guidance: float | None = None, eta: float | None = None,
               batch_size: int | None = None, progress: bool = False) -> list[Sample]:
        """One new Sample per condition, at the model resolution (conditions of another size are resized).

        Options default to the saved SampleConfig (e.g. DDIM, 50 steps, guidance 1 = no CFG).
        """
        denoiser = self._require_networks()
        conditions = list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise ValueError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        cfg = override(self.preset.sample, sampler=sampler, steps=steps, guidance=guidance, eta=eta, batch_size=batch_size)
        checkpoint = self.checkpoint_hash
        denoiser.eval()
        out: list[Sample] = []
        for start in range(0, len(conditions), cfg.batch_size):
            chunk = conditions[start : start + cfg.batch_size]
            out += self._sample_batch(chunk, seeds[start : start + cfg.batch_size], cfg, checkpoint, progress)
        return out

    def _sample_batch(self, conditions: list[Sample], seeds: list[int], cfg: SampleConfig, checkpoint: str,
                      progress: bool) -> list[Sample]:
        denoiser = self._require_networks()
        res = self.preset.model.resolution
        need_tissue = self.condition != "none"
        images, maps, schema = condition_arrays(conditions, res, need_tissue)
        if schema is not None and get_schema(schema).num_classes > self.num_classes:
            raise ValueError(f"conditions use schema {schema!r} with {get_schema(schema).num_classes} classes; "
                             f"this model holds {self.num_classes}")
        rngs = [np.random.default_rng(np.random.SeedSequence([s, CROP_STREAM])) for s in seeds]
        with torch.no_grad():
            inputs = self.condition_tensors(maps, images, rngs, self.device)
            latent = res // self.preset.model.latent_stride
            noise, generators = initial_noise(seeds, (self.codec.channels, latent, latent), self.device)

            def model_fn(x: torch.Tensor, t: torch.Tensor, conditional: bool) -> torch.Tensor:
                given = inputs if conditional else {k: torch.zeros_like(v) for k, v in inputs.items()}
                return denoiser(x, t, given.get("condition"), given.get("embeddings"))

            guidance = cfg.guidance if inputs else 1.0
            scheduler = make_sampler(cfg.sampler, self.scheduler.config)
            with _autocast(self.device):
                latents = denoise(guided(model_fn, guidance), noise, scheduler, cfg.steps, generators, cfg.eta, progress)
                pixels = _to_uint8(self.codec.decode(latents.float()))
        samples = []
        for j, (cond, s) in enumerate(zip(conditions, seeds, strict=False)):
            mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
            prov = Provenance(source=self.meta.name, mpp=mpp, generator=self.meta.name,
                              generator_version=self.meta.version, checkpoint_hash=checkpoint, seed=s)
            labelled = self.meta.provides_tissue and maps is not None
            samples.append(Sample(image=pixels[j], provenance=prov, tissue=maps[j].copy() if labelled else None,
                                  tissue_schema=schema if labelled else None))
        return samples

    # ------------------------------------------------------------------ persistence

    def _components(self) -> dict[str, nn.Module]:
        parts = dict(self._require_networks().components())
        if self.codec.autoencoder is not None:
            parts["autoencoder"] = self.codec.autoencoder
        return parts

    def _write_weights(self, folder: Path) -> None:
        for name, module in self._components().items():
            _replace_folder(folder / name, module.save_pretrained)
        _replace_folder(folder / "scheduler", self.scheduler.save_pretrained)

    @property
    def checkpoint_hash(self) -> str:
        """sha256 of the weights as saved (computed by saving to a temporary folder if not saved yet)."""
        if self._hash is None:
            with tempfile.TemporaryDirectory() as tmp:
                self._write_weights(Path(tmp))
                self._hash = weights_hash(tmp, list(self._components()))
        return self._hash

    def save(self, path: Path | str) -> Path:
        """Write the model folder; config.json goes last, so a folder without it is incomplete."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").unlink(missing_ok=True)
        self._write_weights(folder)
        self._hash = weights_hash(folder, list(self._components()))
        config = {
            "generator": self.meta.name, "version": self.meta.version, "preset": self.preset.name,
            "components": sorted(self._components()), "checkpoint_hash": self._hash,
            "model": to_dict(self.preset.model), "train": to_dict(self.preset.train),
            "sample": to_dict(self.preset.sample), "training": self.training_info,
        }
        from histosynth.generators.model_card import render_model_card

        (folder / "README.md").write_text(render_model_card(self.meta, config), encoding="utf-8")
        tmp = folder / ".config.json.partial"
        tmp.write_text(json.dumps(config, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.rename(folder / "config.json")
        return folder

    @classmethod
    def load(cls, path: Path | str, device: str | torch.device | None = None) -> "HTDGenerator":
        """Read a folder written by `save` (weights exactly as saved)."""
        folder = Path(path)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{config_file}: missing; {folder} is not a (complete) saved generator folder")
        config = read_json_file(config_file)
        if config.get("generator") != cls.meta.name:
            raise ValueError(f"{folder} holds generator {config.get('generator')!r}, not {cls.meta.name!r}")
        components = config.get("components")
        if not isinstance(components, list) or not all(isinstance(c, str) for c in components):
            raise CheckpointError(f"{config_file}: no list of 'components'; not written by this version of histosynth")
        checkpoint_hash = verify_checkpoint(folder, components, config.get("checkpoint_hash"))
        try:
            model = model_config_from_dict(config["model"])
            train = config.get("train") or {}
            train_cfg = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in train.items() if k != "curriculum"})
            preset = Preset(config.get("preset", "custom"), model, train_cfg, sample_config_from_dict(config["sample"]))
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{config_file}: invalid generator settings ({type(err).__name__}: {err})") from err

        def network(kind: Any, name: str) -> Any:
            try:
                return kind.from_pretrained(folder / name)
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:  # diffusers wraps most as OSError
                reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise CheckpointError(f"{folder / name}: cannot load the {name} network ({reason})") from err

        autoencoder = None
        if "autoencoder" in components:
            kind = model.autoencoder.kind if model.autoencoder is not None else "vq"
            autoencoder = network({"vq": VQModel, "kl": AutoencoderKL}[kind], "autoencoder").eval().requires_grad_(False)
        unet = network(UNet2DConditionModel, "unet")
        controlnet = network(ControlNetModel, "controlnet") if "controlnet" in components else None
        head = network(cls.head_class, "head") if cls.head_class and "head" in components else None
        if not model.train_unet:
            unet.requires_grad_(False)
        _check_settings(config_file, model, unet)
        scale = model.autoencoder.scaling_factor if model.autoencoder is not None else None
        generator = cls(preset, device=device, codec=LatentCodec(autoencoder, scale), denoiser=Denoiser(unet, controlnet, head))
        generator.training_info = config.get("training", {})
        generator._hash = checkpoint_hash
        return generator


def _check_settings(config_file: Path, model: Any, unet: UNet2DConditionModel) -> None:
    """Refuse saved settings the loaded networks cannot run with, naming the file (not a failure mid-sampling)."""
    factor = model.latent_stride * 2 ** (len(unet.config.block_out_channels) - 1)
    if not isinstance(model.resolution, int) or model.resolution <= 0 or model.resolution % factor:
        raise CheckpointError(f"{config_file}: model.resolution is {model.resolution!r}; this model needs a positive "
                              f"multiple of {factor}")
    if model.num_classes is not None and (not isinstance(model.num_classes, int) or model.num_classes < 0):
        raise CheckpointError(f"{config_file}: model.num_classes is {model.num_classes!r}; expected a count of classes")


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (sampling speed), a no-op on the CPU."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


__all__ = ["HTDGenerator", "default_device"]
