"""Model folders made of components: diffusers-style sub-folders, a `model_index.json` listing them, and peft
adapters saved beside the weights they adapt.

    model/
      config.json          histosynth's settings (generator, preset, configs, training report, checkpoint hash)
      model_index.json     {"_class_name": generator, "_histosynth_version": ..., component: [library, class], ...}
      unet/                config.json + diffusion_pytorch_model.safetensors (diffusers `save_pretrained`)
      unet/adapters/NAME/  adapter_config.json + adapter_model.safetensors (peft state-dict functions)
      scheduler/           scheduler_config.json

A component is any diffusers ModelMixin/ConfigMixin (UNet, ControlNet, autoencoder, scheduler, or a project
module built on them). LoRA adapters are injected with peft; the component's own weights are saved without them
(peft's `base_layer` names mapped back), so the base folder loads into a plain model and each adapter loads on
top through `set_peft_model_state_dict`. diffusers' pipelines keep a model_index.json the same way; no library
writes one for a non-pipeline bundle like ours, hence this module.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import torch
from safetensors.torch import save_file
from torch import nn

from histosynth import __version__
from histosynth.atomic import atomic_directory
from histosynth.errors import InputError
from histosynth.generators.base import (
    CheckpointError,
    TrainReport,
    check_safetensors,
    read_json_file,
    verify_checkpoint,
)

MODEL_INDEX = "model_index.json"
ADAPTERS_DIR = "adapters"
# Component modules that moved: model_index.json files written before keep naming the old module. (A baseline's
# module that became a package needs no entry: the package re-exports its classes.)
MOVED_MODULES = {"histosynth.baselines.spade_nets": "histosynth.baselines.spade.nets"}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
BASE_WEIGHTS = "diffusion_pytorch_model.safetensors"  # the name diffusers' from_pretrained looks for


def adapter_names(module: Any) -> list[str]:
    """The peft adapters injected into `module` (sorted; empty when none)."""
    return sorted(getattr(module, "peft_config", {}) or {})


def base_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s weights without any peft adapter: LoRA tensors dropped, `.base_layer.` names mapped back."""
    state = {}
    for key, value in module.state_dict().items():
        if ".lora_" in key or ".modules_to_save." in key:
            continue
        state[key.replace(".base_layer.", ".").replace(".original_module.", ".")] = value.detach().contiguous()
    return state


def save_component(component: Any, folder: Path) -> None:
    """Write one component folder atomically (config + weights, then its adapters)."""
    with atomic_directory(folder) as partial:
        names = adapter_names(component)
        if not names:
            component.save_pretrained(partial)
            return
        component.save_config(partial)
        save_file(base_state_dict(component), str(partial / BASE_WEIGHTS))
        for name in names:
            save_adapter(component, name, partial / ADAPTERS_DIR / name)


def save_adapter(module: nn.Module, name: str, folder: Path) -> None:
    """peft adapter `name` of `module` as adapter_config.json + adapter_model.safetensors in `folder`."""
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(module, adapter_name=name).items()}
    save_file(state, str(folder / ADAPTER_WEIGHTS))
    config = module.peft_config[name].to_dict()
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=list) + "\n", encoding="utf-8")


def load_adapters(module: nn.Module, component_folder: Path) -> list[str]:
    """Inject and fill every adapter saved under `component_folder`/adapters; returns their names."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    root = component_folder / ADAPTERS_DIR
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for name in names:
        config = read_json_file(root / name / ADAPTER_CONFIG)
        weights = root / name / ADAPTER_WEIGHTS
        if not weights.is_file():
            raise CheckpointError(f"{weights}: missing; the adapter {name!r} is incomplete")
        check_safetensors(weights)
        try:
            lora = LoraConfig(**{k: v for k, v in config.items() if k in LoraConfig.__dataclass_fields__})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{root / name / ADAPTER_CONFIG}: not a LoRA adapter config ({err})") from err
        inject_adapter_in_model(lora, module, adapter_name=name)
        result = set_peft_model_state_dict(module, load_file(str(weights)), adapter_name=name)
        unexpected = list(getattr(result, "unexpected_keys", []) or [])
        if unexpected:
            raise CheckpointError(f"{weights}: {len(unexpected)} tensors fit no layer of {component_folder.name} "
                                  f"(e.g. {unexpected[0]})")
    return names


def component_class(component: Any) -> list[str]:
    """[library, class name] of a component, as model_index.json records it (diffusers classes by "diffusers")."""
    module = type(component).__module__
    library = "diffusers" if module.startswith("diffusers") else module
    return [library, type(component).__name__]


def write_model_index(folder: Path, generator: str, components: dict[str, Any]) -> None:
    """model_index.json: which class each component folder holds, and its adapters (written atomically)."""
    from histosynth.atomic import write_text_atomic

    index: dict[str, Any] = {"_class_name": generator, "_histosynth_version": __version__}
    for name in sorted(components):
        index[name] = component_class(components[name])
    adapters = {name: adapter_names(c) for name, c in sorted(components.items()) if adapter_names(c)}
    if adapters:
        index["_adapters"] = adapters
    write_text_atomic(folder / MODEL_INDEX, json.dumps(index, indent=2) + "\n")


def read_saved_config(folder: Path, generator: str) -> dict[str, Any]:
    """config.json of a saved model folder, refused (naming the folder) unless generator `generator` wrote it."""
    config = read_json_file(folder / "config.json")
    if config.get("generator") != generator:
        raise CheckpointError(f"{folder} holds generator {config.get('generator')!r}, not {generator!r}")
    return config


def load_component(folder: Path, name: str, expected: type | None = None) -> Any:
    """Load component `name` from a model folder by the class model_index.json records, then its adapters.

    `expected` (when given) must be that class or a base of it, so a folder cannot swap in another network; a
    generator defined outside histosynth (a plug-in, the test suite's toy) loads its own components by naming
    their exact class as `expected`.
    """
    index = read_json_file(folder / MODEL_INDEX)
    entry = index.get(name)
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
        raise CheckpointError(f"{folder / MODEL_INDEX}: no [library, class] entry for component {name!r}")
    library, class_name = entry
    asked = expected is not None and (library, class_name) == (expected.__module__, expected.__name__)
    if library != "diffusers" and not library.startswith("histosynth.") and not asked:
        raise CheckpointError(f"{folder / MODEL_INDEX}: component {name!r} names module {library!r}; only diffusers "
                              "and histosynth classes, or the exact class the generator expects, are loaded")
    try:
        module = importlib.import_module(MOVED_MODULES.get(library, library))
    except ImportError as err:
        raise CheckpointError(f"{folder / MODEL_INDEX}: component {name!r} names module {library!r}, which cannot "
                              f"be imported ({err})") from err
    kind = getattr(module, class_name, None)
    if kind is None or (expected is not None and not issubclass(kind, expected)):
        raise CheckpointError(f"{folder / MODEL_INDEX}: component {name!r} is {library}.{class_name}, "
                              f"expected {expected.__name__ if expected else 'a known class'}")
    part = folder / name
    try:
        loaded = kind.from_pretrained(part) if hasattr(kind, "from_pretrained") else kind.from_config(kind.load_config(part))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:  # diffusers wraps most as OSError
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{part}: cannot load the {name} component ({reason})") from err
    if isinstance(loaded, nn.Module):
        _own_allocations(loaded)
        load_adapters(loaded, part)
    return loaded


def _own_allocations(module: nn.Module) -> None:
    """Give every loaded tensor its own allocation.

    diffusers loads safetensors into tensors at unaligned offsets of one buffer; BLAS kernels then take other code
    paths (e.g. a matrix-vector product summing in another order) and a loaded model would differ from the one that
    was saved by a few ulps (seen with SPADE's spectral norm).
    """
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            tensor.data = tensor.data.clone()


@dataclass(frozen=True)
class Component:
    """A component folder a generator loads: the class it must hold (or a subclass of it); `hashed` when the weights
    hash covers it (what makes the outputs), else it is loaded when model_index.json lists it; `optional` when a
    folder may lack it."""

    kind: type
    hashed: bool = True
    optional: bool = False


class SettingsError(InputError):
    """Saved settings the loaded components cannot run with; the load template names config.json in front of it."""


F = TypeVar("F", bound="ComponentFolder")
P = TypeVar("P")


def saved_preset(config: dict[str, Any], preset: Callable[..., P], model: Callable[[Any], Any],
                 train: Callable[[Any], Any], sample: Callable[[Any], Any]) -> P:
    """A (name, model, train, sample) preset from config.json, each part read by its function; a folder saved
    without training settings gets the defaults."""
    return preset(config.get("preset", "custom"), model(config["model"]), train(config.get("train") or {}),
                  sample(config["sample"]))


class ComponentFolder:
    """The model folder of a generator made of components: `save`, `checkpoint_hash` and the one `load`.

    Like diffusers' `from_pretrained`, loading is written once, here, and a generator only declares:

    - `settings_from_config(config)`: its settings (its preset) from config.json;
    - `components` (a class attribute), or `declared_components(settings)` where they depend on the settings:
      name -> `Component`, what it loads and the class each must be;
    - `from_components(settings, components, device)`: itself, from the settings and the loaded components.

    `load` reads config.json (refused unless this generator wrote it), checks model_index.json, verifies every
    hashed component's config and safetensors header and the weights hash before any weights are read, parses the
    settings and the training report, loads the components and records the hash. Saving, a generator lists what it
    writes (`saved_components`: networks and schedulers by folder name), which of those the weights hash covers
    (`hashed_components`) and its own settings (`saved_settings`, merged into config.json after the common keys).
    Mix it in before `Generator`.
    """

    _hash: str | None = None
    components: ClassVar[dict[str, Component]] = {}

    # ------------------------------------------------------------------ what a generator declares

    def saved_components(self) -> dict[str, Any]:
        raise NotImplementedError

    def hashed_components(self) -> list[str]:
        raise NotImplementedError

    def saved_settings(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> Any:
        """The generator's settings from its config.json (KeyError, TypeError, ValueError: invalid settings)."""
        raise NotImplementedError

    @classmethod
    def declared_components(cls, settings: Any) -> dict[str, Component]:
        """The components `load` loads, in loading order (by default the class attribute `components`)."""
        return dict(cls.components)

    @classmethod
    def from_components(cls: type[F], settings: Any, components: dict[str, Any], device: Any = None) -> F:
        """The generator from its settings and loaded components (SettingsError: they do not fit)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the template

    @classmethod
    def load(cls: type[F], path: Path | str, device: Any = None) -> F:
        """Read a folder written by `save`: every file checked before any weights are loaded, weights as saved."""
        folder = Path(path)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{config_file}: missing; {folder} is not a (complete) saved generator folder")
        config = read_saved_config(folder, cls.meta.name)  # type: ignore[attr-defined]
        if not (folder / MODEL_INDEX).is_file():
            raise CheckpointError(f"{folder / MODEL_INDEX}: missing; the folder is incomplete")
        listed = config.get("components")
        if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
            raise CheckpointError(f"{config_file}: no list of 'components'; not written by this version of histosynth")
        recorded = verify_checkpoint(folder, listed, config.get("checkpoint_hash"))
        try:
            settings = cls.settings_from_config(config)
            declared = cls.declared_components(settings)
            report = TrainReport.from_json(config["training"]) if config.get("training") else None
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"{config_file}: invalid generator settings ({type(err).__name__}: {err})") from err
        foreign = sorted(set(listed) - {name for name, part in declared.items() if part.hashed})
        if foreign:
            raise CheckpointError(f"{config_file}: components {foreign} are not hashed components of "
                                  f"{cls.meta.name} ({', '.join(declared)})")  # type: ignore[attr-defined]
        index = read_json_file(folder / MODEL_INDEX)
        loaded = {}
        for name, part in declared.items():
            if name in (listed if part.hashed else index):
                loaded[name] = load_component(folder, name, part.kind)
            elif not part.optional:
                raise CheckpointError(f"{config_file}: no {name!r} among the components; the folder is incomplete")
        try:
            generator = cls.from_components(settings, loaded, device)
        except SettingsError as err:
            raise CheckpointError(f"{config_file}: {err}") from err
        generator.train_report = report  # type: ignore[attr-defined]
        generator._hash = recorded
        return generator

    # ------------------------------------------------------------------ saving

    def write_components(self, folder: Path) -> None:
        """Every component folder (atomically each), then model_index.json."""
        components = self.saved_components()
        for name, component in components.items():
            save_component(component, folder / name)
        write_model_index(folder, self.meta.name, components)  # type: ignore[attr-defined]

    @property
    def checkpoint_hash(self) -> str:
        """sha256 of the weights as saved (computed by saving to a temporary folder if not saved yet)."""
        import tempfile

        from histosynth.generators.base import weights_hash

        if self._hash is None:
            with tempfile.TemporaryDirectory() as tmp:
                self.write_components(Path(tmp))
                self._hash = weights_hash(tmp, self.hashed_components())
        return self._hash

    def save(self, path: Path | str) -> Path:
        """Write the model folder; config.json goes last, so a folder without it is incomplete."""
        from histosynth.atomic import write_text_atomic
        from histosynth.generators.base import weights_hash
        from histosynth.generators.model_card import render_model_card

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").unlink(missing_ok=True)
        self.write_components(folder)
        self._hash = weights_hash(folder, self.hashed_components())
        meta, report = self.meta, self.train_report  # type: ignore[attr-defined]
        config = {"generator": meta.name, "version": meta.version, "preset": self.preset_name,  # type: ignore[attr-defined]
                  "components": self.hashed_components(), "checkpoint_hash": self._hash, **self.saved_settings(),
                  "training": report.to_json() if report is not None else None}
        write_text_atomic(folder / "README.md", render_model_card(self, config))  # type: ignore[arg-type]
        write_text_atomic(folder / "config.json", json.dumps(config, indent=2, default=str) + "\n")
        return folder
