"""The generator contract, checked for every registered generator, and for a toy non-diffusion one, on `tiny` presets.

A new generator is tested here the moment it is registered. The generic checks assume nothing about how a
generator works: build from one of its presets, train 2 steps into a TrainReport, save a complete folder
(config.json, model_index.json, README.md model card, weights hash), load, sample validated Samples whose labels
follow the label policy, with complete provenance, seed-deterministic and redoable one sample at a time.
Diffusion-only checks (UNet weights, ControlNet iff conditioned) are in TestDiffusionFolder. The toy painter
(tests/plugins/toy_dist/toy_generator.py, also the test plugin) is registered only while this module runs; it also trains and generates
through the CLI and is shown to learn its class colors.
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from plugin_paths import load_toy_module

import histosynth.cli as cli
from histosynth.commands.ls import list_kind
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.generators import (
    GENERATORS,
    build_generator,
    generator_class,
    generator_meta,
    load_generator,
    weights_hash,
)
from histosynth.generators.base import Generator, TrainReport, derive_seed
from histosynth.generators.checkpoint import MODEL_INDEX
from histosynth.generators.registry import register_generator
from histosynth.masks import with_heldout_masks
from histosynth.resize import resize_map
from histosynth.schema import Sample
from histosynth.sources import build_source

TOY_META = load_toy_module().META
TOY = TOY_META.name
BUILTIN = list(GENERATORS)
NAMES = [*BUILTIN, TOY]
DIFFUSION = [n for n in BUILTIN if generator_meta(n).family == "diffusion"]


def task_of(name: str) -> dict[str, str]:
    """Sampling options for the contract checks: a completion-only generator completes."""
    return {} if "synthesis" in generator_meta(name).tasks else {"task": "completion"}


def conditions_for(name: str, samples: list[Sample]) -> list[Sample]:
    """The conditions, carrying held-out masks 0.. when `name` reads masks (so a sample redone alone keeps its mask)."""
    return list(with_heldout_masks(samples)) if "mask" in generator_meta(name).conditioning else samples


@pytest.fixture(scope="module", autouse=True)
def toy_registered():
    """The toy painter in the registry for this module only; other test modules see the built-in list."""
    register_generator(TOY_META)
    yield
    GENERATORS.unregister(TOY)
    assert list(GENERATORS) == BUILTIN


@pytest.fixture(scope="module")
def tiny_data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


@dataclass
class Trained:
    name: str
    gen: Generator
    report: TrainReport
    folder: Path
    config: dict[str, Any]


@pytest.fixture(scope="module")
def trained(request, tiny_data, tmp_path_factory, toy_registered) -> Trained:
    """Generator `request.param` from its tiny preset, trained 2 steps into a model folder (once per module)."""
    name = request.param
    assert "tiny" in generator_class(name).presets()
    gen = build_generator(name, "tiny")
    folder = tmp_path_factory.mktemp(name) / "model"
    report = gen.train(tiny_data, {"steps": 2}, out=folder)
    return Trained(name, gen, report, folder, json.loads((folder / "config.json").read_text()))


def test_registry_lists_htd_and_its_ablations_without_model_code():
    assert {"htd", "htd-unconditional", "htd-embedding"} <= set(BUILTIN)
    text = "\n".join(list_kind("generators"))
    assert "htd-embedding" in text and "visual crops" in text
    assert all(e.target is generator_meta(e.name) for e in GENERATORS.entries())  # records, not classes


@pytest.mark.parametrize("trained", NAMES, indirect=True)
def test_training_reports_and_saves_a_complete_model_folder(trained, tiny_data):
    name, gen, report, folder, config = trained.name, trained.gen, trained.report, trained.folder, trained.config
    meta = generator_meta(name)
    assert generator_class(name).meta == meta and gen.preset_name == "tiny"
    assert isinstance(report, TrainReport) and gen.train_report is report and report.generator == name
    assert report.steps == 2 and len(report.losses) == 2 and np.isfinite(report.losses).all()
    assert report.data.patches + report.data.dropped == len(tiny_data)

    assert (config["generator"], config["version"], config["preset"]) == (name, meta.version, "tiny")
    index = json.loads((folder / MODEL_INDEX).read_text())
    assert index["_class_name"] == name and set(config["components"]) <= set(index)
    assert all((folder / c / "config.json").is_file() for c in config["components"])
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert meta.family in front["tags"] and name in front["tags"]
    assert f"{report.steps} optimizer steps" in card
    assert gen.checkpoint_hash == weights_hash(folder, config["components"]) == config["checkpoint_hash"]


@pytest.mark.parametrize("trained", NAMES, indirect=True)
def test_a_loaded_model_samples_valid_samples_labeled_by_its_policy(trained, tiny_data):
    name, gen = trained.name, trained.gen
    meta = generator_meta(name)
    loaded = load_generator(trained.folder)
    assert type(loaded) is type(gen) and loaded.checkpoint_hash == gen.checkpoint_hash
    assert loaded.train_report is not None and loaded.train_report.steps == 2
    assert all(v is not None for v in loaded.resolve_options().job_fields().values())
    conditions = conditions_for(name, tiny_data[:3])
    outputs = loaded.sample(conditions, seed=7, **task_of(name))
    assert len(outputs) == 3
    assert [s.provenance.seed for s in outputs] == [derive_seed(7, j) for j in range(3)]
    for out, cond in zip(outputs, conditions, strict=True):
        assert isinstance(out, Sample)
        out.validate()
        assert out.image.dtype == np.uint8 and out.image.shape == (out.width, out.width, 3)
        prov = out.provenance
        assert (prov.generator, prov.generator_version) == (name, meta.version)
        assert prov.checkpoint_hash == gen.checkpoint_hash
        assert prov.mpp == pytest.approx(cond.provenance.mpp * cond.width / out.width)
        if meta.label_policy == "copied" and "tissue" in meta.outputs:
            assert out.tissue_schema == cond.tissue_schema
            assert np.array_equal(out.tissue, resize_map(cond.tissue, out.width))
        if meta.label_policy == "copied" and "nuclei" in meta.outputs:
            assert out.nuclei.schema == cond.nuclei.schema and np.array_equal(out.nuclei.class_ids, cond.nuclei.class_ids)
        assert (out.tissue is not None) == ("tissue" in meta.outputs)
        assert (out.nuclei is not None) == ("nuclei" in meta.outputs)


@pytest.mark.parametrize("trained", NAMES, indirect=True)
def test_sampling_is_seed_deterministic_redoable_and_resaves_the_same_weights(trained, tiny_data, tmp_path):
    gen, config, task = trained.gen, trained.config, task_of(trained.name)
    loaded = load_generator(trained.folder)
    conditions = conditions_for(trained.name, tiny_data[:3])
    first = loaded.sample(conditions, seed=7, **task)
    again = loaded.sample(conditions, seed=7, **task)
    other = loaded.sample(conditions, seed=8, **task)
    in_memory = gen.sample(conditions, seed=7, **task)
    assert all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert all(a.equals(b) for a, b in zip(first, in_memory, strict=True))
    if generator_meta(trained.name).family == "reference":  # real or copied patches: the seed picks nothing given a map
        assert all(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    else:
        assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    assert len({s.provenance.seed for s in first}) == 3

    # Sample j redone alone from the seed in its provenance. A batch of 1 instead of 3 may change the float
    # summation order of batched kernels (ulps), which can move a rounded uint8 value across one level at most.
    alone = loaded.sample([conditions[1]], seed=[first[1].provenance.seed], **task)[0]
    assert np.abs(alone.image.astype(int) - first[1].image.astype(int)).max() <= 1

    loaded.save(tmp_path / "again")
    assert weights_hash(tmp_path / "again", config["components"]) == gen.checkpoint_hash


class TestDiffusionFolder:
    """Checks only diffusion generators owe: their networks' folders (the generic contract above needs no UNet)."""

    @pytest.mark.parametrize("trained", DIFFUSION, indirect=True)
    def test_unet_weights_and_a_controlnet_iff_conditioned(self, trained):
        meta, folder = generator_meta(trained.name), trained.folder
        assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
        assert (folder / "scheduler" / "scheduler_config.json").is_file()
        # a model whose UNet takes more channels than it returns (Palette's masked image, CoSyn's centroid map) reads
        # its condition through those input channels, not a ControlNet
        unet = json.loads((folder / "unet" / "config.json").read_text())
        controlled = bool(meta.conditioning) and unet["in_channels"] == unet["out_channels"]
        assert (folder / "controlnet").is_dir() == controlled
        assert ("controlnet" in trained.config["components"]) == controlled


def test_the_toy_learns_each_class_mean_color(tiny_data):
    painter = build_generator(TOY, "tiny", noise=0.0)
    painter.train(tiny_data, {"steps": 3, "batch_size": 2})  # 3 steps x 2 patches: each of the 6 patches once
    pixels = np.concatenate([s.image.reshape(-1, 3) for s in tiny_data]).astype(np.float64)
    ids = np.concatenate([s.tissue.reshape(-1) for s in tiny_data])
    painted = painter.sample(tiny_data, seed=0)
    painted_pixels = np.concatenate([s.image.reshape(-1, 3) for s in painted]).astype(np.float64)
    classes = np.unique(ids)
    assert len(classes) >= 4
    for c in classes:
        # without noise every pixel of class c is the fitted mean rounded to the nearest level (error <= 0.5)
        assert np.abs(painted_pixels[ids == c] - pixels[ids == c].mean(axis=0)).max() <= 0.5
    means = np.array([pixels[ids == c].mean(axis=0) for c in classes])
    assert np.abs(means[:, None] - means[None]).max() > 10  # the classes differ, so matching them is learning


def test_the_toy_trains_and_generates_through_the_cli_with_a_model_card(tiny_data, tmp_path, capsys):
    data, ckpt, out = tmp_path / "data", tmp_path / "ckpt", tmp_path / "generated"
    write_dataset(tiny_data, data, CardInfo("toy data", "six simulator patches"))
    base = ["train", TOY, "--data", str(data), "--preset", "tiny", "--out", str(ckpt)]
    assert cli.main([*base, "--lr", "0.1"]) == 2
    assert "no training field(s) ['lr']" in capsys.readouterr().err and not ckpt.exists()

    assert cli.main([*base, "--steps", "3", "--batch-size", "2"]) == 0
    card = (ckpt / "README.md").read_text()
    assert card.startswith("---\n") and "# toy 0.0.1 (tiny preset)" in card and "3 optimizer steps" in card
    assert "6 patches" in card and "Paints each of 5 tissue classes" in card
    checkpoint_hash = load_generator(ckpt).checkpoint_hash

    assert cli.main(["generate", TOY, "--checkpoint", str(ckpt), "--conditions", str(data), "--n", "8",
                     "--chunk-size", "3", "--out", str(out)]) == 0
    samples = list(iter_samples(out))
    assert len(samples) == 8
    for i, s in enumerate(samples):
        assert (s.provenance.generator, s.provenance.checkpoint_hash) == (TOY, checkpoint_hash)
        assert s.provenance.seed == derive_seed(0, i)
        assert np.array_equal(s.tissue, tiny_data[i % 6].tissue)
    assert "toy" in (out / "README.md").read_text()


def test_bigger_conditions_are_resized_and_schema_width_checked(tiny_data, tmp_path):
    gen = build_generator("htd", "tiny", num_classes=5)
    big = build_source("simulator", n=1, size=64, seed=3, mpp=2.0).sample(0)
    out = gen.sample([big], seed=0)[0]
    assert out.image.shape == (32, 32, 3) and out.provenance.mpp == 4.0
    assert np.array_equal(out.tissue, resize_map(big.tissue, 32))
    small = build_generator("htd", "tiny", num_classes=2)
    with pytest.raises(ValueError, match="5 classes; this model holds 2"):
        small.sample([big], seed=0)
    with pytest.raises(ValueError, match="no tissue map"):
        gen.sample([Sample(image=big.image, provenance=big.provenance)], seed=0)


def test_conditional_generator_needs_classes_before_sampling(tiny_data):
    with pytest.raises(RuntimeError, match="train first, or build with num_classes"):
        build_generator("htd", "tiny").sample(tiny_data[:1], seed=0)
