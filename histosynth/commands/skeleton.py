"""The files `histosynth new generator NAME` writes: a generator plugin package that works as written.

Each entry of FILES is a path and its text, with `${name}` (the generator's registered name), `${package}` (the
import package: the name with '_' for '-'), `${cls}` (the Generator class) and `${title}` substituted
(string.Template; `$$` is a literal dollar). The generated package passes its own contract test
(`PYTHONPATH=. python -m pytest tests`) and, installed into a folder and trained, `histosynth submit --check`
(tests/unit/test_new_generator.py checks both).
"""

from __future__ import annotations

from string import Template

PYPROJECT = '''\
# The package's metadata. histosynth finds the generator through the entry point below: its name is the
# generator's registered name, its value the GeneratorMeta record in ${package}/meta.py.
[build-system]
requires = ["setuptools>=70.1"]
build-backend = "setuptools.build_meta"

[project]
name = "${name}"
version = "0.1.0"
description = "${title}: a histosynth generator plugin"
readme = "README.md"
requires-python = ">=3.10"
# histosynth, torch and diffusers come from the environment that runs the plugin (the scorer's own), so they are
# not listed: install the plugin with --no-deps.
dependencies = []

[project.entry-points."histosynth.generators"]
${name} = "${package}.meta:META"

[tool.setuptools]
packages = ["${package}"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

README = '''\
# ${name}: a histosynth generator plugin

Written by `histosynth new generator ${name}`. It works as it is: a small convolutional network that paints a
patch from its tissue map (a color and a spread for every pixel, learned from the training patches), trained in
histosynth's shared training loop. Replace the network and the loss with your model; keep the rest.

| file | what it holds |
|---|---|
| `pyproject.toml` | the package, and the entry point `${name} = "${package}.meta:META"` (group `histosynth.generators`) |
| `${package}/meta.py` | what the generator is: name, version, paper, **citation (fill in the BibTeX)**, license, what it reads and writes |
| `${package}/presets.py` | network size and training settings by preset name (`tiny`) |
| `${package}/model.py` | the network (`PainterNet`), one training step (`PainterStep`) and the generator (`${cls}`) |
| `tests/test_contract.py` | the contract: build, train 2 steps, save, load, sample; and that it learns |

## Next

From the folder that holds this one (the submission guide: docs/submitting.md in histosynth):

```bash
(cd ${name} && PYTHONPATH=. python -m pytest -q)                                 # the contract test
python -m pip install --no-deps --no-build-isolation --target plugin ./${name}   # package + .dist-info in plugin/
histosynth data build --source simulator --n 64 --size 32 --mpp 4 --seed 1 --out train   # or your own data
PYTHONPATH=plugin histosynth train ${name} --data train --preset tiny --out model
cat > submission.yaml <<'EOF'
kind: generator
generator: ${name}
checkpoint: model
plugin: plugin
title: ${title}
citation: |
  @misc{${package}2026, title = {${title}}, author = {Lastname, Firstname}, year = {2026}}
license: apache-2.0
contact: you@example.org
EOF
histosynth submit submission.yaml --check
```

`plugin:` may also name a wheel (`python -m pip wheel --no-deps --no-build-isolation -w dist ./${name}`) or this
source folder itself, which the scorer then builds in its sandbox.
'''

GITIGNORE = '''\
build/
dist/
*.egg-info/
__pycache__/
'''

INIT = '''\
"""${title}: a histosynth generator plugin (entry point `${name}` in group histosynth.generators)."""
'''

META = '''\
"""What ${name} is: the record `histosynth ls generators` lists and the leaderboard shows. No model code here:
histosynth reads it without importing torch, and imports `target` only when the generator is used."""

from __future__ import annotations

from histosynth.generators.base import GeneratorMeta

# A complete BibTeX entry: the leaderboard's page and paper tables print it. Replace the placeholders (title,
# author, year) with your paper's entry; keep one entry with a key.
CITATION = """@misc{${package}2026,
  title = {${title}},
  author = {Lastname, Firstname and Lastname, Firstname},
  year = {2026},
  note = {placeholder: replace with the paper's entry}
}"""

META = GeneratorMeta(
    name="${name}",  # the registered name: the same as the entry point's name in pyproject.toml
    version="0.1.0",
    summary="${title}: paints a patch from its tissue map with a small conv net",
    paper="none yet (the paper's title and its arXiv id or DOI)",
    citation=CITATION,
    license="Apache-2.0",  # of this code; trained weights carry the license of their training data
    conditioning=("tissue",),  # what it reads from a condition: the tissue map
    outputs=("image", "tissue"),  # what it writes: an image, labeled with ...
    label_policy="copied",  # ... the tissue map it was given
    family="conv",
    target="${package}.model:${cls}",
)
'''

PRESETS = '''\
"""The presets of ${name}: the network's size and its training settings, by name (`--preset tiny`).

`histosynth train ${name} --preset tiny` builds from PRESETS["tiny"]; its options (--steps, --batch-size, --lr,
--seed, --grad-accum, --mixed-precision, --checkpoint-every) change the TrainSettings fields of the same names.
Add a preset by adding a function to PRESETS.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class TrainSettings:
    """How to train. The first block is what you tune; the second is histosynth's training loop
    (histosynth.generators.training.LoopSettings), fine as it is."""

    steps: int = 200
    batch_size: int = 8
    lr: float = 5e-3
    seed: int = 0
    mixed_precision: str = "no"  # "no": float32 (reproducible on the CPU); "auto": bf16 where it is faster
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: only at the end)

    grad_accum: int = 1
    scale_lr: bool = False
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float | None = 1.0
    ema_decay: float | None = None
    keep_checkpoints: int = 1
    snapshot_steps: tuple[int, ...] = ()
    progress: bool = False


@dataclass
class Preset:
    """A named size of the model plus its training settings."""

    name: str = "tiny"
    resolution: int = 32  # side of the generated patches, pixels
    width: int = 16  # channels of the hidden layers
    train: TrainSettings = field(default_factory=TrainSettings)


def tiny() -> Preset:
    """Seconds on a CPU: what tests and `histosynth submit --check` use."""
    return Preset(name="tiny", resolution=32, width=16, train=TrainSettings(steps=200, batch_size=8))


PRESETS = {"tiny": tiny}


def preset_from_dict(data: dict[str, Any]) -> Preset:
    """A Preset from its saved form (config.json: lists back to tuples; unknown keys ignored)."""
    train = {f.name: data.get("train", {})[f.name] for f in fields(TrainSettings) if f.name in data.get("train", {})}
    train = {k: tuple(v) if isinstance(v, list) else v for k, v in train.items()}
    known = {f.name for f in fields(Preset)} - {"train"}
    return Preset(**{k: v for k, v in data.items() if k in known}, train=TrainSettings(**train))
'''

MODEL = '''\
"""${cls}: the ${name} generator. A small conv net paints a patch from its tissue map: for every pixel it predicts
a color and a spread from the map around it (a Gaussian per pixel, trained by its negative log-likelihood), and
sampling draws from it with each sample's own seed. It learns the color of each tissue class, how much it varies,
and what happens where classes meet. Replace PainterNet and PainterStep with your model; the rest is the histosynth
generator contract (histosynth.generators.base.Generator) and works as it is:
- training runs in histosynth's shared loop (histosynth.generators.training.run_training: optimizer, LR schedule,
  gradient accumulation, resumable checkpoints in OUT/training); PainterStep says what one step computes;
- the model folder is diffusers-style (config.json, model_index.json, net/ with config and safetensors, a README.md
  model card); the sha256 of its weights goes into every generated sample's provenance.
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from histosynth.errors import InputError
from histosynth.generators.arrays import TrainingArrays, condition_batch, load_training_arrays
from histosynth.generators.base import Generator, SampleOptions, TrainReport, derive_seed, verify_checkpoint
from histosynth.generators.checkpoint import ComponentFolder, load_component, read_saved_config
from histosynth.generators.training import (
    TRAINING_DIR,
    Batch,
    SampleStream,
    StepContext,
    TrainStep,
    finish_training,
    run_training,
)
from histosynth.schema import Provenance, Sample
from torch import nn

from ${package}.meta import META
from ${package}.presets import PRESETS, Preset, TrainSettings, preset_from_dict


def one_hot(tissue: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, R, R) class ids -> (N, K, R, R) float one-hot; ids >= K (255: unlabeled) become all zeros."""
    ids = tissue.long().clamp(max=num_classes)
    return F.one_hot(ids, num_classes + 1)[..., :num_classes].permute(0, 3, 1, 2).float()


class PainterNet(ModelMixin, ConfigMixin):
    """One-hot tissue map (K channels) -> per-pixel RGB mean in [-1, 1] and log standard deviation."""

    @register_to_config
    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(num_classes, width, 3, padding=1), nn.SiLU(),
                                    nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
                                    nn.Conv2d(width, 6, 1))

    def forward(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.layers(onehot)
        return torch.tanh(out[:, :3]), out[:, 3:].clamp(-7.0, 2.0)


class PainterStep(TrainStep):
    """One training step: the Gaussian negative log-likelihood of the real pixels under the predicted colors."""

    def __init__(self, net: PainterNet) -> None:
        self.net = net

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        mean, log_sd = ctx.modules["net"](batch["onehot"])
        nll = 0.5 * ((batch["image"] - mean) / log_sd.exp()) ** 2 + log_sd  # per pixel and channel, + a constant
        known = batch["known"]  # pixels with a tissue class
        loss = (nll * known).sum() / (3 * known.sum()).clamp(min=1)
        ctx.apply(loss)  # backward, clip, optimizer step
        return {"loss": loss}


class ${cls}(ComponentFolder, Generator):
    """Tissue map -> a new patch painted from it; the map is copied as the patch's label."""

    meta = META

    def __init__(self, preset: Preset, net: PainterNet | None = None, tissue_schema: str | None = None) -> None:
        """Use `build` or `load`."""
        self.preset = preset
        self.net = net
        self.tissue_schema = tissue_schema  # the class schema of the maps it was trained on
        self.train_report: TrainReport | None = None
        self._hash: str | None = None

    @classmethod
    def presets(cls) -> tuple[str, ...]:
        return tuple(PRESETS)

    @classmethod
    def build(cls, preset: str = "tiny", device: str | None = None, **overrides: Any) -> "${cls}":
        """An untrained generator; `overrides` change Preset fields (e.g. width=32). The network is made when
        training first sees the data (its number of tissue classes); `device` is where training puts it."""
        if preset not in PRESETS:
            raise InputError(f"{META.name}: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        unknown = sorted(set(overrides) - {f.name for f in fields(Preset)})
        if unknown:
            raise InputError(f"{META.name}: no preset field(s) {unknown}")
        return cls(replace(PRESETS[preset](), **overrides))

    @property
    def preset_name(self) -> str:
        return self.preset.name

    @property
    def num_classes(self) -> int:
        return int(self._trained().config.num_classes)

    def training_steps(self) -> int:
        return self.preset.train.steps

    def default_options(self) -> SampleOptions:
        # one forward pass per batch: the iterative-sampler options (steps, guidance, eta) mean nothing here
        return SampleOptions(steps=1, sampler="gaussian", guidance=1.0, eta=0.0, batch_size=64)

    def _trained(self) -> PainterNet:
        if self.net is None:
            raise InputError(f"{META.name}: not trained yet; train it, or load a trained model folder")
        return self.net

    # ------------------------------------------------------------------ training

    def train(self, data: Path | str | Iterable[Sample], config: dict[str, Any] | None = None,
              out: Path | str | None = None, resume: bool = False) -> TrainReport:
        """Train on a dataset folder or Samples with tissue maps. `config` changes TrainSettings fields by name (the
        `histosynth train` options); with `out`, checkpoints go to OUT/training and the model folder to OUT."""
        unknown = sorted(set(config or {}) - {f.name for f in fields(TrainSettings)})
        if unknown:
            raise InputError(f"{META.name}: no training field(s) {unknown}; it has "
                             f"{', '.join(f.name for f in fields(TrainSettings))}")
        settings = replace(self.preset.train, **(config or {}))
        arrays = load_training_arrays(data, self.preset.resolution, META.conditioning, None)
        if self.net is None:
            with torch.random.fork_rng(devices=[]):  # initial weights from the seed alone
                torch.manual_seed(settings.seed)
                self.net = PainterNet(int(arrays.num_classes or 0), self.preset.width)
            self.tissue_schema = arrays.tissue_schema
        elif arrays.tissue_schema != self.tissue_schema:
            raise InputError(f"{META.name}: the data's tissue maps use {arrays.tissue_schema!r}; this model was "
                             f"trained on {self.tissue_schema!r}")
        folder = Path(out) / TRAINING_DIR if out is not None else None
        result = run_training(PainterStep(self.net), self._batch_fn(arrays, settings), settings, folder, resume=resume)
        self.preset = replace(self.preset, train=settings)
        self._hash = None
        return finish_training(self, settings.steps, result, arrays.training_data(), out)

    def _batch_fn(self, arrays: TrainingArrays, settings: TrainSettings):
        """batch_fn(step, micro, rank, world, device): which patches a micro-batch reads depends on its place in
        the run only (SampleStream), so a resumed or multi-process run reads the same data."""
        stream = SampleStream(len(arrays), settings.seed, settings.batch_size, settings.grad_accum)
        k = self.num_classes

        def batch_fn(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
            index = stream.indices(step, micro, rank, world)
            tissue = torch.from_numpy(np.asarray(arrays.tissue[index]))
            image = torch.from_numpy(np.asarray(arrays.images[index])).permute(0, 3, 1, 2).float() / 127.5 - 1
            return {"onehot": one_hot(tissue, k).to(device), "image": image.to(device),
                    "known": (tissue < k).unsqueeze(1).float().to(device)}

        return batch_fn

    # ------------------------------------------------------------------ sampling

    def sample(self, conditions: Sequence[Sample], seed: int | Sequence[int], options: SampleOptions | None = None,
               **fields: Any) -> list[Sample]:
        """One new patch per condition's tissue map, at the model resolution, labeled with that map. An int seed
        gives sample j the seed derive_seed(seed, j); a list gives each its own (sample j redone alone)."""
        opts = self.resolve_options(options, **fields)
        if opts.task not in META.tasks:
            raise InputError(f"{META.name} does only {', '.join(META.tasks)}, not {opts.task!r}")
        net, conditions = self._trained().eval(), list(conditions)
        seeds = [derive_seed(seed, j) for j in range(len(conditions))] if isinstance(seed, int) else [int(s) for s in seed]
        if len(seeds) != len(conditions):
            raise InputError(f"{len(seeds)} seeds for {len(conditions)} conditions")
        res = self.preset.resolution
        batch = condition_batch(conditions, res, META.conditioning)
        if conditions and batch.tissue_schema != self.tissue_schema:
            raise InputError(f"{META.name}: the conditions' tissue maps use {batch.tissue_schema!r}; this model was "
                             f"trained on {self.tissue_schema!r}")
        device, checkpoint, out = next(net.parameters()).device, self.checkpoint_hash, []
        for start in range(0, len(conditions), int(opts.batch_size or 64)):
            part = slice(start, start + int(opts.batch_size or 64))
            with torch.no_grad():
                mean, log_sd = net(one_hot(torch.from_numpy(batch.tissue[part]), self.num_classes).to(device))
            noise = torch.stack([torch.randn((3, res, res), generator=torch.Generator().manual_seed(s))
                                 for s in seeds[part]]).to(device)
            pixels = ((mean + log_sd.exp() * noise).clamp(-1, 1) + 1) * 127.5
            images = pixels.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            for cond, tissue, image, s in zip(conditions[part], batch.tissue[part], images, seeds[part], strict=True):
                mpp = cond.provenance.mpp * cond.width / res if cond.provenance.mpp else None
                prov = Provenance(source=META.name, mpp=mpp, generator=META.name, generator_version=META.version,
                                  checkpoint_hash=checkpoint, seed=s)
                out.append(Sample(image=image, tissue=tissue.copy(), tissue_schema=batch.tissue_schema,
                                  provenance=prov))
        return out

    # ------------------------------------------------------------------ the model folder

    def saved_components(self) -> dict[str, Any]:
        return {"net": self._trained()}

    def hashed_components(self) -> list[str]:
        return ["net"]

    def saved_settings(self) -> dict[str, Any]:
        return {"settings": asdict(self.preset), "tissue_schema": self.tissue_schema}

    @classmethod
    def load(cls, path: Path | str, device: str | None = None) -> "${cls}":
        """Read a folder written by `save` (its weights are checked against the recorded hash first)."""
        folder = Path(path)
        config = read_saved_config(folder, META.name)
        recorded = verify_checkpoint(folder, ["net"], config.get("checkpoint_hash"))
        net = load_component(folder, "net", PainterNet).to(device or "cpu")
        model = cls(preset_from_dict(config["settings"]), net, config.get("tissue_schema"))
        model.train_report = TrainReport.from_json(config["training"]) if config.get("training") else None
        model._hash = recorded
        return model

    def card_details(self) -> list[str]:
        return [f"- A three-layer conv net ({self.preset.width} channels) painting {self.preset.resolution} px "
                "patches: a color and a spread per pixel from the tissue map around it."]
'''

CONTRACT_TEST = '''\
"""The histosynth generator contract for ${name}, on the tiny preset: build, train 2 steps, save, load, sample;
and that it learns. Run it from this folder: `PYTHONPATH=. python -m pytest -q` (nothing to install)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from histosynth.generators.base import derive_seed, weights_hash
from histosynth.sources import build_source

from ${package}.meta import META
from ${package}.model import ${cls}

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    """Eight 32 px simulator patches with tissue maps (use your own dataset folder the same way)."""
    return list(build_source("simulator", n=8, size=32, seed=0, mpp=4.0))


def test_build_train_save_load_sample(data, tmp_path):
    model = ${cls}.build("tiny")
    report = model.train(data, {"steps": 2, "batch_size": 4}, out=tmp_path / "model")
    assert report.steps == 2 and len(report.losses) == 2 and np.isfinite(report.losses).all()
    for name in ("config.json", "model_index.json", "README.md", "net"):
        assert (tmp_path / "model" / name).exists(), name
    assert weights_hash(tmp_path / "model", ["net"]) == model.checkpoint_hash
    loaded = ${cls}.load(tmp_path / "model")
    first, again = model.sample(data[:3], seed=7), loaded.sample(data[:3], seed=7)
    for j, (a, b, condition) in enumerate(zip(first, again, data[:3], strict=True)):
        assert np.array_equal(a.image, b.image)  # the loaded model samples exactly as the saved one
        assert a.image.shape == (32, 32, 3) and a.image.dtype == np.uint8
        assert np.array_equal(a.tissue, condition.tissue)  # label policy "copied"
        prov = a.provenance
        assert (prov.generator, prov.generator_version) == (META.name, META.version)
        assert prov.checkpoint_hash == model.checkpoint_hash and prov.seed == derive_seed(7, j)
    alone = loaded.sample([data[1]], seed=[first[1].provenance.seed])[0]
    assert np.array_equal(alone.image, first[1].image)  # sample j can be redone alone


def test_it_learns_the_colors_of_the_tissue_classes(data):
    model = ${cls}.build("tiny")
    report = model.train(data, {"steps": 150})
    assert np.mean(report.losses[-10:]) < np.mean(report.losses[:10]) - 0.5
    samples = model.sample(data, seed=0)
    errors = []
    for c in np.unique(np.concatenate([d.tissue.ravel() for d in data])):
        real = np.concatenate([d.image[d.tissue == c] for d in data]).mean(axis=0)
        painted = np.concatenate([s.image[s.tissue == c] for s in samples]).mean(axis=0)
        errors.append(np.abs(real - painted).max())
    assert max(errors) < 15, errors  # each class's mean color, within 15 of 255 levels


def test_the_entry_point_names_this_generator():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'{META.name} = "${package}.meta:META"' in text
    assert META.target == f"${package}.model:{${cls}.__name__}"
'''

FILES = {
    "pyproject.toml": PYPROJECT,
    "README.md": README,
    ".gitignore": GITIGNORE,
    "${package}/__init__.py": INIT,
    "${package}/meta.py": META,
    "${package}/presets.py": PRESETS,
    "${package}/model.py": MODEL,
    "tests/test_contract.py": CONTRACT_TEST,
}


def render(name: str, package: str, cls: str, title: str) -> dict[str, str]:
    """Every file of the skeleton: relative path -> text."""
    values = {"name": name, "package": package, "cls": cls, "title": title}
    return {Template(path).substitute(values): Template(text).substitute(values) for path, text in FILES.items()}
