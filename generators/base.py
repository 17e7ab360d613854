"""The generator contract: metadata, presets, `train`, `sample`, `save` / `load`; nothing in it assumes diffusion.

Torch-free on purpose: `GeneratorMeta` records are listed by `histosynth ls` and the registry without importing
any model code. Implementations (histosynth.generators.htd, histosynth.baselines) import torch themselves.

Contract every registered generator follows (checked by tests/unit/test_generators_contract.py; how to add one:
docs/ARCHITECTURE.md):
- `presets()` names the presets living beside the generator (`tiny`, `demo`, `paper`); `build(preset, **overrides)`
  makes an untrained generator from one;
- `train(data, config, out)` trains on a dataset folder or an iterable of Samples, checkpointing into `out`, and
  returns a `TrainReport` (kept as `train_report`, saved with the model);
- `sample(conditions, seed, options)` returns one validated Sample per condition, with `SampleOptions` (None fields
  take the model's defaults, `resolve_options`). The labels of an output follow `meta.label_policy`: "copied" from
  the condition, "generated" with the image, or "none". Provenance records the generator, its version, the sha256
  of its saved weights and the sample's own seed. An int seed derives one seed per condition with
  `derive_seed(seed, j)`; a list gives them explicitly, so sample j of a run can be redone alone;
- `save(dir)` writes a folder: config.json, a model_index.json listing the components, one sub-folder per
  component (config + safetensors) and a README.md model card; `load(dir)` reads it back;
- `card_details()` gives the model card its generator-specific lines.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

import numpy as np

from histosynth.checked_files import check_safetensors_file, read_json_object
from histosynth.deprecated import renamed_field, warn_renamed
from histosynth.errors import InputError, UserFacingError
from histosynth.generators.conditioning.batch import CONDITION_PARTS

if TYPE_CHECKING:
    from histosynth.schema import Sample

LABEL_POLICIES = ("copied", "generated", "none")
"""Where an output Sample's labels come from: its condition (HTD, GANs), the generator itself (joint image + label
synthesis), or nowhere (unconditional models)."""
OUTPUT_PARTS = ("image", "tissue", "nuclei")
TASKS = ("synthesis", "completion")
SAMPLE_SEED_BITS = 63  # seeds are stored in an int64 provenance column


@dataclass(frozen=True)
class GeneratorMeta:
    """What a generator is and what it needs; shown by `histosynth ls generators`.

    `conditioning` names the parts of a condition Sample it reads (a subset of CONDITION_PARTS: "tissue" map,
    "crops" of the image inside the map's classes, "nuclei" centroids, completion "mask"; empty = unconditional);
    `outputs` names the parts of each output Sample it fills (OUTPUT_PARTS); `label_policy` says where those labels
    come from (LABEL_POLICIES); `family` is the kind of model ("diffusion", "gan", "reference", ...), a model card tag.
    """

    name: str
    version: str
    summary: str
    paper: str
    citation: str
    license: str
    conditioning: tuple[str, ...]
    outputs: tuple[str, ...]
    label_policy: str
    family: str
    target: str  # "module:Class" of the implementation, imported on first use
    tasks: tuple[str, ...] = ("synthesis",)

    def __post_init__(self) -> None:
        for name, values, allowed in (("conditioning", self.conditioning, CONDITION_PARTS),
                                      ("outputs", self.outputs, OUTPUT_PARTS), ("tasks", self.tasks, TASKS)):
            unknown = sorted(set(values) - set(allowed))
            if unknown:
                raise ValueError(f"generator {self.name!r}: unknown {name} {unknown}; allowed: {', '.join(allowed)}")
        if self.label_policy not in LABEL_POLICIES:
            raise ValueError(f"generator {self.name!r}: label_policy must be one of {LABEL_POLICIES}")
        if (self.label_policy == "none") != (set(self.outputs) == {"image"}):
            raise ValueError(f"generator {self.name!r}: label_policy {self.label_policy!r} does not fit outputs {self.outputs}")

    @property
    def provides_tissue(self) -> bool:
        """True when output Samples carry a tissue map as their label."""
        return "tissue" in self.outputs

    def __getattr__(self, attr: str) -> Any:
        """`GENERATORS.get(name)` gave the implementation class before the registry held these records: its class
        attributes (build, load, presets, ...) still resolve through `target`, with a DeprecationWarning."""
        if attr not in _CLASS_ATTRIBUTES:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        from histosynth.registry import import_target

        warn_renamed(f"GENERATORS.get(name).{attr}", f"generator_class(name).{attr}", "histosynth.generators")
        return getattr(import_target(self.target), attr)


_CLASS_ATTRIBUTES = frozenset({"build", "load", "presets", "get_preset", "preset_table", "meta"})
renamed_field(GeneratorMeta, "licence", "license")  # the British spelling, for one release (plugins may use it)


@dataclass(frozen=True)
class SampleOptions:
    """How to sample. None fields take the model's saved defaults (`Generator.resolve_options`).

    `steps`, `sampler`, `guidance` (classifier-free scale, 1 = none) and `eta` (DDIM) mean something to iterative
    samplers only; a one-shot generator ignores them. `task` is "synthesis" (a whole patch) or "completion" (fill
    `mask`, True where to paint, or each condition's own completion_mask when `mask` is None).
    """

    steps: int | None = None
    sampler: str | None = None
    guidance: float | None = None
    eta: float | None = None
    batch_size: int | None = None
    task: str | None = None  # None: the generator's first task (meta.tasks[0]; "completion" for a completion-only one)
    mask: np.ndarray | None = field(default=None, compare=False)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise InputError(f"task must be one of {', '.join(TASKS)}, not {self.task!r}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, not {value!r}")

    def filled(self, defaults: "SampleOptions") -> "SampleOptions":
        """These options with every None field taken from `defaults`."""
        return SampleOptions(**{f.name: getattr(defaults, f.name) if getattr(self, f.name) is None else getattr(self, f.name)
                                for f in fields(self)})

    def job_fields(self) -> dict[str, Any]:
        """The fields that change generated bytes (for a generation job's key); the mask is not one of them here."""
        return {k: getattr(self, k) for k in ("steps", "sampler", "guidance", "eta", "batch_size", "task")}


@dataclass
class TrainingData:
    """What a generator was trained on (the model card and dataset cards quote it)."""

    description: str = "unknown"
    license: str = "other"
    source_datasets: list[str] = field(default_factory=list)
    patches: int = 0
    dropped: int = 0  # patches left out by a selection rule (e.g. HTD's heterogeneity rule)
    tissue_schema: str | None = None
    nuclei_schema: str | None = None


renamed_field(TrainingData, "licence", "license")  # the British spelling, for one release


@dataclass
class TrainReport:
    """What a training run did. `losses` has one value per optimizer step of this run (the main loss); `extra`
    holds a generator's own per-run figures (e.g. a GAN's discriminator loss)."""

    generator: str
    steps: int
    resumed_from_step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = math.nan
    data: TrainingData = field(default_factory=TrainingData)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def final_loss(self) -> float:
        """Mean of the last 10 losses (nan when no step ran)."""
        tail = self.losses[-10:]
        return float(np.mean(tail)) if tail else math.nan

    def to_json(self, with_losses: bool = False) -> dict[str, Any]:
        """JSON-ready dict; the per-step losses only when asked (a model folder keeps the summary)."""
        out = asdict(self)
        out["final_loss"] = None if math.isnan(self.final_loss) else round(self.final_loss, 6)
        out["images_per_second"] = None if math.isnan(self.images_per_second) else round(self.images_per_second, 2)
        out["seconds"] = round(self.seconds, 2)
        if not with_losses:
            out.pop("losses")
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrainReport":
        """Inverse of `to_json` (a saved summary has no per-step losses)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        saved = dict(data.get("data") or {})
        if "licence" in saved:  # folders saved before the American spelling
            saved.setdefault("license", saved.pop("licence"))
        values["data"] = TrainingData(**{k: v for k, v in saved.items() if k in {f.name for f in fields(TrainingData)}})
        values["images_per_second"] = math.nan if values.get("images_per_second") is None else values["images_per_second"]
        return cls(**values)


def derive_seed(base: int, index: int) -> int:
    """The 63-bit seed of item `index` of a run seeded `base` (SeedSequence([base, index]); fits int64).

    Same derivation as the simulator's `sample_seed`, so a sample's seed depends only on (base, index),
    never on how the work was split into batches, chunks or processes.
    """
    if base < 0 or index < 0:
        raise InputError(f"seeds and indices must be >= 0, got base={base}, index={index}")
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
        raise CheckpointError(f"{root}: no .safetensors weights to hash; the model folder is incomplete")
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
    return read_json_object(path, CheckpointError)


def check_safetensors(path: Path) -> None:
    """Raise CheckpointError naming `path` unless its safetensors header is valid and covers the whole file."""
    check_safetensors_file(path, CheckpointError)


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
    train_report: TrainReport | None = None  # the last training run (None: untrained, random weights)

    @classmethod
    @abstractmethod
    def presets(cls) -> tuple[str, ...]:
        """The names of this generator's presets (defined beside it), e.g. ("tiny", "demo", "paper")."""

    @classmethod
    @abstractmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "Generator":
        """An untrained generator from a preset name, on `device` (default: the process's GPU, else the CPU);
        `overrides` set preset fields (e.g. resolution=32)."""

    @abstractmethod
    def train(self, data: "Path | str | Iterable[Sample]", config: Any = None, out: "Path | str | None" = None,
              resume: bool = False) -> TrainReport:
        """Train on a dataset folder or Samples; `config` changes training fields of the preset by name; checkpoint
        into `out` (resumable with `resume`)."""

    @abstractmethod
    def sample(self, conditions: "Sequence[Sample]", seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> "list[Sample]":
        """One generated, validated Sample per condition; `fields` are SampleOptions fields, for convenience."""

    @property
    @abstractmethod
    def preset_name(self) -> str:
        """The preset this generator was built from ("custom" when none)."""

    @abstractmethod
    def training_steps(self) -> int:
        """How many optimizer steps `train` runs when its config does not say."""

    @abstractmethod
    def default_options(self) -> SampleOptions:
        """The model's saved sampling defaults (every field set)."""

    def resolve_options(self, options: SampleOptions | None = None, **fields: Any) -> SampleOptions:
        """`options` (or SampleOptions(**fields)) with None fields taken from the model's defaults."""
        if options is not None and fields:
            raise TypeError("give SampleOptions or option fields, not both")
        resolved = (options or SampleOptions(**fields)).filled(self.default_options())
        return resolved if resolved.task is not None else replace(resolved, task=self.meta.tasks[0])

    @abstractmethod
    def save(self, path: Path | str) -> Path:
        """Write the model folder; returns it."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path | str, device: str | None = None) -> "Generator":
        """Read a folder written by `save`."""

    @property
    @abstractmethod
    def checkpoint_hash(self) -> str:
        """'sha256:<hex>' of the weights as `save` writes them (see `weights_hash`)."""

    def card_details(self) -> list[str]:
        """Markdown bullet lines describing the model for its card (architecture, sizes); override to add detail."""
        return []


class PresetTable:
    """`presets`, `get_preset`, `preset_name` and `training_steps` for a generator whose presets live in the class
    attribute `preset_table` (name -> a function returning a fresh preset with `.name` and `.train.steps`) and
    which keeps its preset as `self.preset`. Mix it in before `Generator`."""

    preset_table: ClassVar[Mapping[str, Callable[[], Any]]]
    preset: Any

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return tuple(cls.preset_table)

    @classmethod
    def get_preset(cls, name: str) -> Any:
        """A fresh copy of preset `name` (unknown names list the known ones)."""
        from histosynth.errors import UnknownNameError

        if name not in cls.preset_table:
            raise UnknownNameError(f"{cls.meta.name}: unknown preset {name!r}; "  # type: ignore[attr-defined]
                                   f"choose from {', '.join(cls.preset_table)}")
        return cls.preset_table[name]()

    @property
    def preset_name(self) -> str:
        return self.preset.name

    def training_steps(self) -> int:
        return int(self.preset.train.steps)

