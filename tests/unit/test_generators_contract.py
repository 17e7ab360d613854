"""The generator contract, checked for every registered generator with its `tiny` preset.

A new generator is tested here the moment it is registered: build, train 2 steps, save, load, sample, Samples
validate, labels are the conditions, provenance is complete, output is seed-deterministic.
"""

import json

import numpy as np
import pytest

from histosynth.commands.ls import list_kind
from histosynth.generators import GENERATORS, build_generator, generator_meta, load_generator, weights_hash
from histosynth.resize import resize_map
from histosynth.schema import Sample
from histosynth.sources import build_source

NAMES = list(GENERATORS)


@pytest.fixture(scope="module")
def tiny_data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


def test_registry_lists_htd_and_its_ablations_without_model_code():
    assert {"htd", "htd-unconditional", "htd-embedding"} <= set(NAMES)
    text = "\n".join(list_kind("generators"))
    assert "htd-embedding" in text and "visual crops" in text
    assert all(e.is_lazy for e in GENERATORS.entries())


@pytest.mark.parametrize("name", NAMES)
def test_generator_contract(name, tiny_data, tmp_path):
    meta = generator_meta(name)
    assert GENERATORS.get(name).meta == meta
    gen = build_generator(name, "tiny")
    report = gen.train(tiny_data, {"steps": 2}, out=tmp_path / "model")
    assert len(report["losses"]) == 2 and np.isfinite(report["losses"]).all()

    folder = tmp_path / "model"
    config = json.loads((folder / "config.json").read_text())
    assert config["generator"] == name and config["version"] == meta.version
    assert (folder / "README.md").read_text().startswith("---\n")
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (folder / "controlnet").is_dir() == ("tissue" in meta.conditioning)
    assert gen.checkpoint_hash == weights_hash(folder, config["components"]) == config["checkpoint_hash"]

    loaded = load_generator(folder)
    assert type(loaded) is type(gen) and loaded.checkpoint_hash == gen.checkpoint_hash
    conditions = tiny_data[:3]
    first = loaded.sample(conditions, seed=7)
    again = loaded.sample(conditions, seed=7)
    other = loaded.sample(conditions, seed=8)
    in_memory = gen.sample(conditions, seed=7)
    assert len(first) == 3
    for out, cond in zip(first, conditions, strict=False):
        assert isinstance(out, Sample)
        out.validate()
        assert out.image.shape == (32, 32, 3) and out.image.dtype == np.uint8
        prov = out.provenance
        assert (prov.generator, prov.generator_version, prov.checkpoint_hash) == (name, meta.version, gen.checkpoint_hash)
        assert isinstance(prov.seed, int) and prov.mpp == cond.provenance.mpp
        if meta.provides_tissue:
            assert out.tissue_schema == cond.tissue_schema
            assert np.array_equal(out.tissue, resize_map(cond.tissue, 32))
        else:
            assert out.tissue is None and out.tissue_schema is None
    assert all(a.equals(b) for a, b in zip(first, again, strict=False))
    assert all(a.equals(b) for a, b in zip(first, in_memory, strict=False))
    assert not any(np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=False))
    assert len({s.provenance.seed for s in first}) == 3

    # a sample can be redone alone from the seed in its provenance
    alone = loaded.sample([conditions[1]], seed=[first[1].provenance.seed])[0]
    assert np.abs(alone.image.astype(int) - first[1].image.astype(int)).max() <= 1

    # saving again writes byte-identical weights
    loaded.save(tmp_path / "again")
    assert weights_hash(tmp_path / "again", config["components"]) == gen.checkpoint_hash


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
