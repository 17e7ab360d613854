"""The one load template (histosynth.generators.checkpoint.ComponentFolder): a generator that only declares its
settings and components loads with no load code of its own, every built-in generator loads through it, and a
folder with a missing, damaged or swapped component is refused naming the file before any weights are read."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from histosynth.generators import GENERATORS, generator_class
from histosynth.generators.base import (
    CheckpointError,
    Generator,
    GeneratorMeta,
    SampleOptions,
    TrainReport,
    weights_hash,
)
from histosynth.generators.checkpoint import MODEL_INDEX, Component, ComponentFolder, SettingsError

WEIGHTS = "weights/diffusion_pytorch_model.safetensors"


class Table(ModelMixin, ConfigMixin):
    """A component: one tensor of `size` numbers."""

    @register_to_config
    def __init__(self, size: int = 4) -> None:
        super().__init__()
        self.register_buffer("numbers", torch.zeros(size))


@dataclass
class Settings:
    name: str = "tiny"
    size: int = 4


class Declared(ComponentFolder, Generator):
    """A generator that declares its folder and writes no `load`: the template does the rest."""

    meta = GeneratorMeta(name="declared", version="0.0.1", summary="s", paper="p", citation="c", license="MIT",
                         conditioning=(), outputs=("image",), label_policy="none", family="toy",
                         target=f"{__name__}:Declared")
    components = {"weights": Component(Table), "extra": Component(Table, hashed=False, optional=True)}

    def __init__(self, settings: Settings, table: Table, extra: Table | None = None) -> None:
        self.settings, self.table, self.extra = settings, table, extra

    @classmethod
    def settings_from_config(cls, config: dict[str, Any]) -> Settings:
        return Settings(**config["settings"])

    @classmethod
    def from_components(cls, settings: Settings, components: dict[str, Any], device: Any = None) -> "Declared":
        if components["weights"].config.size != settings.size:
            raise SettingsError(f"size {settings.size} does not fit the saved table")
        return cls(settings, components["weights"], components.get("extra"))

    def saved_components(self) -> dict[str, Any]:
        return {"weights": self.table} | ({"extra": self.extra} if self.extra is not None else {})

    def hashed_components(self) -> list[str]:
        return ["weights"]

    def saved_settings(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings)}

    # the rest of the contract, as small as it can be
    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return ("tiny",)

    @classmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "Declared":
        table = Table(overrides.get("size", 4))
        table.numbers.copy_(torch.arange(table.config.size, dtype=torch.float32))
        return cls(Settings(preset, table.config.size), table, Table(2))

    def train(self, data: Any, config: Any = None, out: Any = None, resume: bool = False) -> TrainReport:
        self.train_report = TrainReport(self.meta.name, steps=1, losses=[0.5])
        return self.train_report

    def sample(self, conditions: Any, seed: Any, options: SampleOptions | None = None, **fields: Any) -> list:
        return []

    @property
    def preset_name(self) -> str:
        return self.settings.name

    def training_steps(self) -> int:
        return 1

    def default_options(self) -> SampleOptions:
        return SampleOptions(steps=1, sampler="none", guidance=1.0, eta=0.0, batch_size=1)


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    gen = Declared.build(size=5)
    gen.train(None)
    return gen.save(tmp_path / "model")


def test_a_declared_generator_loads_with_no_load_code_of_its_own(saved):
    assert "load" not in Declared.__dict__
    loaded = Declared.load(saved)
    assert torch.equal(loaded.table.numbers, torch.arange(5, dtype=torch.float32)) and loaded.settings == Settings("tiny", 5)
    assert loaded.extra is not None and loaded.extra.config.size == 2  # unhashed, loaded because the index lists it
    assert loaded.train_report.steps == 1 and loaded.checkpoint_hash == json.loads((saved / "config.json").read_text())["checkpoint_hash"]


def test_an_optional_unhashed_component_may_be_absent(saved):
    shutil.rmtree(saved / "extra")
    index = json.loads((saved / MODEL_INDEX).read_text())
    del index["extra"]
    (saved / MODEL_INDEX).write_text(json.dumps(index))
    assert Declared.load(saved).extra is None


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_every_builtin_generator_loads_through_the_template(name):
    cls = generator_class(name)
    assert issubclass(cls, ComponentFolder) and cls.load.__func__ is ComponentFolder.load.__func__


def _edit_json(path: Path, change) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _undeclared_component(model: Path) -> None:
    """config.json lists (and hashes) a component the generator does not declare."""
    shutil.copytree(model / "weights", model / "vae")
    _edit_json(model / "config.json", lambda c: c | {"components": ["vae"], "checkpoint_hash": weights_hash(model, ["vae"])})


DAMAGE = {  # name -> (how, the path the message names relative to the folder, what it says)
    "weights-missing": (lambda m: (m / WEIGHTS).unlink(), "weights", "no .safetensors weights file"),
    "weights-truncated": (lambda m: (m / WEIGHTS).write_bytes((m / WEIGHTS).read_bytes()[:40]), WEIGHTS,
                          "damaged safetensors file"),
    "weights-one-byte": (lambda m: (m / WEIGHTS).write_bytes((m / WEIGHTS).read_bytes()[:-1] + b"\x01"), "",
                         "weights hash"),
    "folder-missing": (lambda m: shutil.rmtree(m / "weights"), "weights", "missing component folder"),
    "component-config": (lambda m: (m / "weights/config.json").write_text("{"), "weights/config.json",
                         "not valid JSON"),
    "config-missing": (lambda m: (m / "config.json").unlink(), "config.json", "missing"),
    "index-missing": (lambda m: (m / MODEL_INDEX).unlink(), MODEL_INDEX, "missing"),
    "index-swapped-class": (lambda m: _edit_json(m / MODEL_INDEX, lambda i: i | {"weights": ["diffusers", "UNet2DModel"]}),
                            MODEL_INDEX, "expected Table"),
    "other-generator": (lambda m: _edit_json(m / "config.json", lambda c: c | {"generator": "htd"}), "",
                        "holds generator 'htd'"),
    "components-not-listed": (lambda m: _edit_json(m / "config.json", lambda c: c | {"components": "weights"}),
                              "config.json", "no list of 'components'"),
    "component-not-declared": (_undeclared_component, "config.json", "['vae'] are not hashed components"),
    "settings-invalid": (lambda m: _edit_json(m / "config.json", lambda c: c | {"settings": {"color": 1}}),
                         "config.json", "invalid generator settings"),
    "settings-do-not-fit": (lambda m: _edit_json(m / "config.json", lambda c: c | {"settings": {"size": 6}}),
                            "config.json", "size 6 does not fit"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_folder_is_refused_naming_the_file(saved, kind):
    damage, named, problem = DAMAGE[kind]
    damage(saved)
    with pytest.raises(CheckpointError) as caught:
        Declared.load(saved)
    message = str(caught.value)
    assert message.startswith(str(saved / named)) and problem in message, message


def _small_component(module: str, class_name: str) -> Any:
    """A tiny instance of a baseline's component class (module: where it lives now)."""
    import importlib

    kind = getattr(importlib.import_module(module), class_name)
    arguments = {"SpadeGeneratorNet": {"label_channels": 2, "resolution": 8, "ngf": 4, "upsamplings": 2,
                                       "spade_hidden": 4, "z_dim": 4},
                 "UNetGenerator": {"in_channels": 2, "num_downs": 2, "base_channels": 4},
                 "EmbeddingBroadcast": {"in_dim": 3, "out_dim": 2},
                 "PassThrough": {"resolution": 8}}[class_name]
    return kind(**arguments)


@pytest.mark.parametrize("recorded, module, class_name", [
    ("histosynth.baselines.spade_nets", "histosynth.baselines.spade.nets", "SpadeGeneratorNet"),
    ("histosynth.baselines.pix2pix", "histosynth.baselines.pix2pix.model", "UNetGenerator"),
    ("histosynth.baselines.htd_ablations", "histosynth.baselines.htd_ablations.model", "EmbeddingBroadcast"),
    ("histosynth.baselines.reference", "histosynth.baselines.reference.model", "PassThrough"),
])
def test_a_component_recorded_under_its_earlier_module_still_loads(tmp_path, recorded, module, class_name):
    from histosynth.generators.checkpoint import load_component, save_component

    component = _small_component(module, class_name)
    assert type(component).__module__ == module  # what model_index.json records from now on
    save_component(component, tmp_path / "part")
    (tmp_path / MODEL_INDEX).write_text(json.dumps({"part": [recorded, class_name]}))
    loaded = load_component(tmp_path, "part", type(component))
    assert type(loaded) is type(component)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), component.state_dict().values(), strict=True))


def test_a_component_naming_a_module_that_does_not_exist_is_refused(tmp_path):
    from histosynth.generators.checkpoint import load_component

    (tmp_path / MODEL_INDEX).write_text(json.dumps({"part": ["histosynth.baselines.no_such_module", "Net"]}))
    with pytest.raises(CheckpointError, match=r"model_index.json: component 'part' names module "
                                              r"'histosynth.baselines.no_such_module', which cannot be imported"):
        load_component(tmp_path, "part")
