"""The generator contract: metadata, `train`, `sample`, `save` / `load`.

Torch-free on purpose: `GeneratorMeta` records are listed by `histosynth ls` and the registry without importing
any model code. Implementations (histosynth.generators.htd, histosynth.baselines) import torch themselves.

Contract every registered generator follows (checked by tests/unit/test_generators_contract.py):
- `build(preset, **overrides)` makes an untrained generator from a preset (`tiny`, `demo`, `paper`);
- `train(data, config, out)` trains on a dataset folder or an iterable of Samples, checkpointing into `out`;
- `sample(conditions, seed)` returns one validated Sample per condition. The labels of an output are the
  conditioning tissue map (when the generator provides tissue labels); provenance records the generator, its
  version, the sha256 of its saved weights and the sample's own seed. An int seed derives one seed per
  condition with `derive_seed(seed, j)`; a list gives them explicitly, so sample j of a run can be redone alone;
- `save(dir)` writes a diffusers-style folder: config.json, one sub-folder per network (config.json +
  safetensors via diffusers `save_pretrained`) and a README.md model card; `load(dir)` reads it back.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Sequence

import numpy as np

from histosynth.errors import UserFacingError

if TYPE_CHECKING:
    from histosynth.schema import Sample

SAMPLE_SEED_BITS = 63  # seeds are stored in an int64 provenance column


@dataclass(frozen=True)
class GeneratorMeta:
    """What a generator is and what it needs; shown by `histosynth ls generators`.

    `conditioning` names the parts of a condition Sample it reads ("tissue" map, "image" for crops, or nothing);
    `outputs` names the parts of each output Sample it fills ("image", "tissue").
    """

    name: str
    version: str
    summary: str
    paper: str
    citation: str
    licence: str
    conditioning: tuple[str, ...]
    outputs: tuple[str, ...]
    target: str  # "module:Class" of the implementation, imported on first use

    @property
    def provides_tissue(self) -> bool:
        """True when output Samples carry the conditioning tissue map as their label."""
        return "tissue" in self.outputs


def derive_seed(base: int, index: int) -> int:
    """The 63-bit seed of item `index` of a run seeded `base` (SeedSequence([base, index]); fits int64).

    Same derivation as the simulator's `sample_seed`, so a sample's seed depends only on (base, index),
    never on how the work was split into batches, chunks or processes.
    """
    if base < 0 or index < 0:
        raise ValueError(f"seeds and indices must be >= 0, got base={base}, index={index}")
    lo, hi = np.random.SeedSequence([int(base), int(index)]).generate_state(2, dtype=np.uint32)
    return int(((int(hi) << 32) | int(lo)) & ((1 << SAMPLE_SEED_BITS) - 1))


def weights_hash(folder: Path | str, subfolders: Sequence[str] | None = None) -> str:
    """'sha256:<hex>' over the .safetensors files under `folder` (sorted relative paths, then bytes).

    This is the checkpoint hash recorded in the provenance of generated samples; configs and the model card
    are not part of it, so re-saving the same weights gives the same hash. `subfolders` limits it to those
    component folders (a checkpoint folder also holds resumable training state, which is not the model).
    """
    root = Path(folder)
    tops = [root / s for s in subfolders] if subfolders is not None else [root]
    files = sorted(p for top in tops for p in top.rglob("*.safetensors") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{root}: no .safetensors weights to hash")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return "sha256:" + digest.hexdigest()


class CheckpointError(UserFacingError, ValueError):
    """A saved generator folder is incomplete or damaged; the message names the file and the problem."""


def read_json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; a missing, unreadable or invalid file raises CheckpointError naming it."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; the checkpoint folder is incomplete")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def check_safetensors(path: Path) -> None:
    """Raise CheckpointError naming `path` unless its safetensors header is valid and covers the whole file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np"):
            pass
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{path}: damaged safetensors file, {path.stat().st_size} bytes ({err})") from err


def verify_checkpoint(folder: Path | str, components: Sequence[str], recorded_hash: str | None) -> str:
    """Check a saved folder before any weights are loaded; returns its weights hash.

    Each component folder needs a valid config.json and safetensors files whose headers cover the file
    (truncated, empty or foreign files fail here with the file named); then the weights must hash to the
    recorded checkpoint hash, so a file changed in place is refused too.
    """
    root = Path(folder)
    for name in components:
        part = root / name
        if not part.is_dir():
            raise CheckpointError(f"{part}: missing component folder; the checkpoint folder is incomplete")
        read_json_file(part / "config.json")
        weights = sorted(part.glob("*.safetensors"))
        if not weights:
            raise CheckpointError(f"{part}: no .safetensors weights file; the checkpoint folder is incomplete")
        for path in weights:
            check_safetensors(path)
    actual = weights_hash(root, components)
    if actual != recorded_hash:
        raise CheckpointError(f"{root}: weights hash {actual} differs from the recorded {recorded_hash}; "
                              "the folder was modified or is incomplete")
    return actual


class Generator(ABC):
    """A trainable image generator that turns condition Samples into new Samples."""

    meta: ClassVar[GeneratorMeta]

    @classmethod
    @abstractmethod
    def build(cls, preset: str = "tiny", **overrides: Any) -> "Generator":
        """An untrained generator from a preset name; `overrides` set preset fields (e.g. resolution=32)."""

    @abstractmethod
    def train(self, data: "Path | str | Iterable[Sample]", config: Any = None, out: "Path | str | None" = None,
              resume: bool = False) -> dict[str, Any]:
        """Train on a dataset folder or Samples; checkpoint into `out` (resumable); returns a short report."""

    @abstractmethod
    def sample(self, conditions: "Sequence[Sample]", seed: int | Sequence[int], **options: Any) -> "list[Sample]":
        """One generated, validated Sample per condition (see the module docstring for labels and seeds)."""

    @abstractmethod
    def save(self, path: Path | str) -> Path:
        """Write the diffusers-style folder; returns it."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path | str, device: str | None = None) -> "Generator":
        """Read a folder written by `save`."""

    @property
    @abstractmethod
    def checkpoint_hash(self) -> str:
        """'sha256:<hex>' of the weights as `save` writes them (see `weights_hash`)."""
