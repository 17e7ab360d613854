"""Reference rows for every score: the real-data ceiling and the copy baseline.

- `real-heldout` returns each condition's own real patch (image and tissue map) at the model resolution. Given the
  held-out real Samples of the conditioning dataset as conditions, every score of its output is the score of real
  data: the ceiling. It fits nothing; `train` records what it was pointed at (the data description, for the card).
  Its provenance keeps the condition's source, slide and coordinates beside the generator name, so a row says it is
  real data passed through.
- `copy-nearest` stores its training patches (images and tissue maps, a `bank` component in safetensors) and
  returns, for each condition, the training patch whose tissue map agrees with the condition's map on most pixels
  (both maps at a common MATCH_GRID x MATCH_GRID grid, ignore pixels left out; ties go to the lowest index), or a
  training patch drawn from the sample's seed when the condition has no map. The condition's map is copied as the
  label (the copied patch's own map when the condition has none). Every output is a training patch, so a
  memorization score must flag all of it: the end-to-end test of histosynth.benchmark.memorization.

Both follow the whole generator contract (save/load, weights hash, model card). real-heldout has no weights; its
folder holds a one-number `passthrough` component (the output resolution) so that it is hashed and verified like
any model: its checkpoint hash therefore depends only on the resolution, as its outputs do. Neither uses the seed
when a condition has a map: their outputs are the same for every seed (the contract test knows the "reference"
family is deterministic). `train` reports one "loss" per step: the mean squared error (images in [0, 1]) between
a batch of training patches and this generator's outputs for them as conditions, 0 when the pass-through or the
copy is exact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from histosynth.baselines.reference.presets import PRESETS, ReferencePreset
from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError
from histosynth.generators.arrays import TrainingArrays, load_training_arrays
from histosynth.generators.base import Generator, PresetTable, SampleOptions, TrainingData, TrainReport, derive_seed
from histosynth.generators.checkpoint import Component, ComponentFolder
from histosynth.generators.registry import generator_meta
from histosynth.resize import resize_image, resize_map
from histosynth.schema import Provenance, Sample

MATCH_GRID = 32  # side of the grid both maps are compared on (at most the model resolution)
MATCH_CHUNK = 4096  # training maps compared per block (bounds memory at paper scale)
TRAIN_FIELDS = ("steps", "batch_size", "seed", "heterogeneity")


class PassThrough(ModelMixin, ConfigMixin):
    """real-heldout's only "weights": its output resolution (one number, so the folder hashes like any model's)."""

    @register_to_config
    def __init__(self, resolution: int) -> None:
        super().__init__()
        self.register_buffer("side", torch.tensor([resolution], dtype=torch.int64))


class PatchBank(ModelMixin, ConfigMixin):
    """copy-nearest's memory: the training patches (N, R, R, 3) and their tissue maps (N, R, R), uint8."""

    @register_to_config
    def __init__(self, num_patches: int, resolution: int, tissue_schema: str | None = None) -> None:
        super().__init__()
        r = resolution
        self.register_buffer("images", torch.zeros(num_patches, r, r, 3, dtype=torch.uint8))
        self.register_buffer("tissue", torch.zeros(num_patches, r, r, dtype=torch.uint8))


def map_agreement(condition: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(N,) share of pixels where `condition` (G, G) and each of `bank` (N, G, G) give the same class, over the
    pixels that neither marks ignore (0 where none is left)."""
    scores = np.empty(len(bank))
    for lo in range(0, len(bank), MATCH_CHUNK):
        part = bank[lo : lo + MATCH_CHUNK]
        valid = (part != IGNORE_ID) & (condition != IGNORE_ID)[None]
        same = (part == condition[None]) & valid
        scores[lo : lo + MATCH_CHUNK] = same.sum(axis=(1, 2)) / np.maximum(valid.sum(axis=(1, 2)), 1)
    return scores


class _Reference(ComponentFolder, PresetTable, Generator):
    """What both reference rows share: presets, the training shell, sampling options, provenance, save/load."""

    preset_table = PRESETS
    component: ClassVar[str]
    component_class: ClassVar[type]
    sampler: ClassVar[str]

    def __init__(self, preset: ReferencePreset, weights: Any = None) -> None:
        self.preset, self.weights, self._hash = preset, weights, None
        self.train_report: TrainReport | None = None

    @classmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "_Reference":
        """An untrained reference row (device is ignored: nothing runs on an accelerator)."""
        chosen = cls.get_preset(preset)
        unknown = sorted(set(overrides) - {f.name for f in fields(ReferencePreset)})
        if unknown:
            raise InputError(f"{cls.meta.name}: no preset field(s) {unknown}")
        return cls(replace(chosen, **overrides))

    def training_steps(self) -> int:
        return self.preset.steps

    def default_options(self) -> SampleOptions:
        return SampleOptions(steps=1, sampler=self.sampler, guidance=1.0, eta=0.0, batch_size=64)

    def fit(self, arrays: TrainingArrays) -> None:
        """Keep what sampling needs from the training arrays."""
        raise NotImplementedError

    def outputs_for(self, tissue: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(B, R, R, 3) the images this row returns for training patches with these maps and images."""
        raise NotImplementedError

    def train(self, data: Path | str | Iterable[Sample], config: Any = None, out: Path | str | None = None,
              resume: bool = False) -> TrainReport:
        """Read the data at the model resolution and keep what sampling needs (`resume` has nothing to resume)."""
        unknown = sorted(set(config or {}) - set(TRAIN_FIELDS))
        if unknown:
            raise InputError(f"{self.meta.name}: no training field(s) {unknown}; it has {', '.join(TRAIN_FIELDS)}")
        self.preset = cfg = replace(self.preset, **(config or {}))
        start = time.perf_counter()
        arrays = load_training_arrays(data, cfg.resolution, ("tissue",), cfg.heterogeneity)
        if len(arrays) == 0:
            raise InputError(f"{self.meta.name}: no training patches in {arrays.description}")
        self.fit(arrays)
        order = np.random.default_rng(cfg.seed).permutation(len(arrays))
        losses = []
        for step in range(cfg.steps):
            batch = arrays.batch(order[np.arange(step * cfg.batch_size, (step + 1) * cfg.batch_size) % len(arrays)])
            diff = self.outputs_for(batch.tissue, batch.images).astype(np.float64) - batch.images
            losses.append(float(np.mean((diff / 255.0) ** 2)))
        seconds = time.perf_counter() - start
        self._hash = None
        self.train_report = TrainReport(
            generator=self.meta.name, steps=cfg.steps, losses=losses, seconds=seconds,
            images_per_second=cfg.steps * cfg.batch_size / max(seconds, 1e-9),
            data=TrainingData(description=arrays.description, license=arrays.license, patches=len(arrays),
                              dropped=arrays.dropped, source_datasets=list(arrays.source_datasets),
                              tissue_schema=arrays.tissue_schema))
        if out is not None:
            self.save(out)
        return self.train_report

    def pick(self, condition: Sample, seed: int) -> tuple[np.ndarray, np.ndarray | None, Provenance]:
        """(image, tissue map or None, provenance without the generator fields) for one condition."""
        raise NotImplementedError

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        if self.resolve_options(options, **fields).task != "synthesis":
            raise InputError(f"{self.meta.name} does only synthesis")
        if self.weights is None:
            raise RuntimeError(f"{self.meta.name}: train first")
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else list(seed)
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        out = []
        for cond, s in zip(conditions, seeds, strict=True):
            image, tissue, prov = self.pick(cond, s)
            prov = replace(prov, mpp=cond.provenance.mpp * cond.width / image.shape[0] if cond.provenance.mpp else None,
                           generator=self.meta.name, generator_version=self.meta.version,
                           checkpoint_hash=self.checkpoint_hash, seed=int(s))
            schema = cond.tissue_schema if cond.tissue is not None else self.weights.config.get("tissue_schema")
            out.append(Sample(image=image, tissue=tissue, tissue_schema=schema if tissue is not None else None,
                              provenance=prov))
            out[-1].validate()
        return out

    def saved_components(self) -> dict[str, Any]:
        if self.weights is None:
            raise RuntimeError(f"{self.meta.name}: train first")
        return {self.component: self.weights}

    def hashed_components(self) -> list[str]:
        return [self.component]

    def saved_settings(self) -> dict[str, Any]:
        return {"settings": asdict(self.preset)}

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> ReferencePreset:
        known = {f.name for f in fields(ReferencePreset)}
        settings = {k: v for k, v in (config.get("settings") or {}).items() if k in known}
        if settings.get("heterogeneity") is not None:
            settings["heterogeneity"] = tuple(settings["heterogeneity"])
        return ReferencePreset(**settings)

    @classmethod
    def declared_components(cls, settings: ReferencePreset) -> dict[str, Component]:
        return {cls.component: Component(cls.component_class)}

    @classmethod
    def from_components(cls, settings: ReferencePreset, components: dict[str, Any], device: Any = None) -> "_Reference":
        return cls(settings, components[cls.component])


class RealHeldout(_Reference):
    """The real-data row: each condition's own real patch and map, at the model resolution."""

    meta = generator_meta("real-heldout")
    component, component_class, sampler = "passthrough", PassThrough, "pass-through"

    def fit(self, arrays: TrainingArrays) -> None:
        self.weights = PassThrough(arrays.resolution)

    def outputs_for(self, tissue: np.ndarray, images: np.ndarray) -> np.ndarray:
        return images

    def pick(self, condition: Sample, seed: int) -> tuple[np.ndarray, np.ndarray | None, Provenance]:
        r = self.preset.resolution
        tissue = None if condition.tissue is None else resize_map(condition.tissue, r)
        return resize_image(condition.image, r).copy(), tissue, replace(condition.provenance)

    def card_details(self) -> list[str]:
        return [f"- Not a model: returns each condition's own real patch and tissue map at {self.preset.resolution} px "
                "(Lanczos / nearest). Given held-out real conditions it is the ceiling of every score.",
                "- Its one weights file holds the output resolution only, so the folder is hashed and verified like "
                "any model; the training data is recorded for the card, not used."]


class CopyNearest(_Reference):
    """The copy baseline: the training patch whose map best matches the condition's."""

    meta = generator_meta("copy-nearest")
    component, component_class, sampler = "bank", PatchBank, "copy"
    _grid_maps: np.ndarray | None = None

    def fit(self, arrays: TrainingArrays) -> None:
        bank = PatchBank(len(arrays), arrays.resolution, arrays.tissue_schema)
        bank.images.copy_(torch.from_numpy(np.ascontiguousarray(arrays.images)))
        bank.tissue.copy_(torch.from_numpy(np.ascontiguousarray(arrays.tissue)))
        self.weights, self._grid_maps = bank, None

    def grid_maps(self) -> np.ndarray:
        """(N, G, G) the training maps at the match grid (computed once)."""
        if self._grid_maps is None:
            g = min(MATCH_GRID, self.weights.config.resolution)
            self._grid_maps = np.stack([resize_map(t, g) for t in self.weights.tissue.numpy()])
        return self._grid_maps

    def nearest(self, tissue: np.ndarray) -> int:
        """Index of the training patch whose map agrees best with `tissue` (any size)."""
        maps = self.grid_maps()
        return int(np.argmax(map_agreement(resize_map(tissue, maps.shape[1]), maps)))

    def outputs_for(self, tissue: np.ndarray, images: np.ndarray) -> np.ndarray:
        return self.weights.images.numpy()[[self.nearest(t) for t in tissue]]

    def pick(self, condition: Sample, seed: int) -> tuple[np.ndarray, np.ndarray | None, Provenance]:
        bank, r = self.weights, self.weights.config.resolution
        if condition.tissue is None:
            index = int(np.random.default_rng(seed).integers(bank.config.num_patches))
            tissue = bank.tissue[index].numpy().copy()
        else:
            if condition.tissue_schema != bank.config.tissue_schema:
                raise InputError(f"copy-nearest: condition {condition.where} has tissue schema "
                                 f"{condition.tissue_schema!r}; the stored patches use {bank.config.tissue_schema!r}")
            index, tissue = self.nearest(condition.tissue), resize_map(condition.tissue, r).copy()
        return bank.images[index].numpy().copy(), tissue, Provenance(source=self.meta.name)

    def card_details(self) -> list[str]:
        n = self.weights.config.num_patches if self.weights is not None else "?"
        return [f"- Not a model: stores its {n} training patches at {self.preset.resolution} px and returns, for each "
                f"condition, the one whose tissue map agrees with the condition's on most pixels (at {MATCH_GRID} px), "
                "or a seeded draw when the condition has no map.",
                "- Every output is a training patch: a memorization score must flag all of them (the copy detector's "
                "end-to-end test). Do not publish its outputs beyond the license of the training data."]
