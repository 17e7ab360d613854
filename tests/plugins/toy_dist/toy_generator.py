"""A toy non-diffusion generator that proves the generator contract: a per-class mean-color painter.

Training fits the mean RGB of each tissue class over the training patches (running sums, one batch per step); sampling
paints each pixel with its class's mean color plus seeded Gaussian noise, and copies the map as the label. It
saves and loads through histosynth.generators.checkpoint like any generator.

It is also the test plugin: this folder, with its .dist-info declaring the `histosynth.generators` entry point
`toy = toy_generator:META`, is a generator package from outside the repository once the folder is on a process's
PYTHONPATH (tests/unit/test_plugins.py, the leaderboard submission tests). The contract tests load this file by
path and register it for their module only.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.generators.arrays import condition_batch, load_training_arrays
from histosynth.generators.base import (
    Generator,
    GeneratorMeta,
    SampleOptions,
    TrainingData,
    TrainReport,
    derive_seed,
)
from histosynth.generators.checkpoint import Component, ComponentFolder
from histosynth.schema import Provenance, Sample

META = GeneratorMeta(name="toy", version="0.0.1", summary="Toy: paints each tissue class with its mean training color",
                     paper="none (a test fixture)", citation="none", license="Apache-2.0", conditioning=("tissue",),
                     outputs=("image", "tissue"), label_policy="copied", family="toy",
                     target=f"{__name__}:ToyPainter")


@dataclass
class ToyPreset:
    name: str = "tiny"
    resolution: int = 32
    noise: float = 8.0  # sd of the painted noise, in uint8 levels
    steps: int = 2
    batch_size: int = 4
    seed: int = 0


PRESETS = {"tiny": ToyPreset}


class ClassColors(ModelMixin, ConfigMixin):
    """The fit: per-class color sums and pixel counts (their ratio is the painted color)."""

    @register_to_config
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("sums", torch.zeros(num_classes, 3, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(num_classes, dtype=torch.float64))

    def means(self) -> np.ndarray:
        return (self.sums / self.counts.clamp(min=1)[:, None]).numpy()


class ToyPainter(ComponentFolder, Generator):
    meta = META
    components = {"colors": Component(ClassColors)}

    def __init__(self, preset: ToyPreset, colors: ClassColors | None = None) -> None:
        self.preset, self.colors, self._hash = preset, colors, None
        self.train_report: TrainReport | None = None

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return tuple(PRESETS)

    @classmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "ToyPainter":
        if preset not in PRESETS:
            raise InputError(f"toy: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        return cls(replace(PRESETS[preset](), **overrides))

    @property
    def preset_name(self) -> str:
        return self.preset.name

    def training_steps(self) -> int:
        return self.preset.steps

    def default_options(self) -> SampleOptions:
        return SampleOptions(steps=1, sampler="paint", guidance=1.0, eta=0.0, batch_size=64)

    def train(self, data: Path | str | Iterable[Sample], config: Any = None, out: Path | str | None = None,
              resume: bool = False) -> TrainReport:
        """Add `config["steps"]` batches to the fit (a loaded model continues its own: `resume` needs nothing more)."""
        unknown = set(config or {}) - {"steps", "batch_size", "seed"}
        if unknown:
            raise InputError(f"toy: no training field(s) {sorted(unknown)}; it has steps, batch_size and seed")
        self.preset = cfg = replace(self.preset, **(config or {}))
        arrays = load_training_arrays(data, cfg.resolution, META.conditioning, None)
        if self.colors is None:
            self.colors = ClassColors(arrays.num_classes)
        k, start, losses = self.colors.config.num_classes, time.perf_counter(), []
        if arrays.num_classes > k:
            raise InputError(f"toy: the data has {arrays.num_classes} tissue classes; this model holds {k}")
        order = np.random.default_rng(cfg.seed).permutation(len(arrays))
        for step in range(cfg.steps):
            batch = arrays.batch(order[np.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size) % len(arrays)])
            ids, pixels = batch.tissue.reshape(-1), batch.images.reshape(-1, 3).astype(np.float64)
            keep = ids < k  # 255 = ignore
            losses.append(float(np.mean((pixels[keep] - self.colors.means()[ids[keep]]) ** 2) / 255**2))
            for c in range(3):
                self.colors.sums[:, c] += torch.from_numpy(np.bincount(ids[keep], pixels[keep, c], minlength=k))
            self.colors.counts += torch.from_numpy(np.bincount(ids[keep], minlength=k).astype(np.float64))
        seconds = time.perf_counter() - start
        self._hash = None
        self.train_report = TrainReport(
            generator=META.name, steps=cfg.steps, losses=losses, seconds=seconds,
            images_per_second=cfg.steps * cfg.batch_size / max(seconds, 1e-9),
            data=TrainingData(description=arrays.description, license=arrays.license, patches=len(arrays),
                              source_datasets=list(arrays.source_datasets), tissue_schema=arrays.tissue_schema))
        if out is not None:
            self.save(out)
        return self.train_report

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        if self.resolve_options(options, **fields).task != "synthesis":  # painting has no other options
            raise InputError("toy does only synthesis")
        if self.colors is None:
            raise RuntimeError("toy: train first")
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else list(seed)
        batch, res = condition_batch(conditions, self.preset.resolution, META.conditioning), self.preset.resolution
        means, k, out = self.colors.means(), self.colors.config.num_classes, []
        if conditions and get_schema(batch.tissue_schema).num_classes > k:
            raise InputError(f"toy: conditions use {batch.tissue_schema!r}; this model holds {k} classes")
        for cond, tissue, s in zip(conditions, batch.tissue, seeds, strict=True):
            noise = np.random.default_rng(s).normal(0.0, self.preset.noise, (res, res, 3))
            image = np.clip(np.rint(means[np.where(tissue < k, tissue, 0)] + noise), 0, 255).astype(np.uint8)
            mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
            prov = Provenance(source=META.name, mpp=mpp, generator=META.name, generator_version=META.version,
                              checkpoint_hash=self.checkpoint_hash, seed=int(s))
            out.append(Sample(image=image, tissue=tissue.copy(), tissue_schema=batch.tissue_schema, provenance=prov))
        return out

    def saved_components(self) -> dict[str, Any]:
        if self.colors is None:
            raise RuntimeError("toy: train first")
        return {"colors": self.colors}

    def hashed_components(self) -> list[str]:
        return ["colors"]

    def saved_settings(self) -> dict[str, Any]:
        return {"settings": asdict(self.preset)}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> ToyPreset:
        known = {f.name for f in fields(ToyPreset)}
        return ToyPreset(**{k: v for k, v in config["settings"].items() if k in known})

    @classmethod
    def from_components(cls, settings: ToyPreset, components: dict[str, Any], device: Any = None) -> "ToyPainter":
        return cls(settings, components["colors"])

    def card_details(self) -> list[str]:
        k = self.colors.config.num_classes if self.colors is not None else "?"
        return [f"- Paints each of {k} tissue classes with its mean training color plus Gaussian noise "
                f"(sd {self.preset.noise} levels) at {self.preset.resolution} px."]
