"""A damaged model folder is refused before any weights are loaded, with one line naming the file and the problem."""

import json
import shutil

import numpy as np
import pytest

import histosynth.cli as cli
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.generators import build_generator, load_generator
from histosynth.generators.base import CheckpointError
from histosynth.sources import build_source

UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny HTD model trained 1 step, and 3 condition patches."""
    root = tmp_path_factory.mktemp("ckpt")
    samples = list(build_source("simulator", n=3, size=32, seed=0, mpp=4.0))
    build_generator("htd", "tiny").train(samples, {"steps": 1}, out=root / "model")
    write_dataset(samples, root / "conditions", CardInfo("c", "c"))
    return root


def truncate(path):
    path.write_bytes(path.read_bytes()[:80_000])


def random_bytes(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())


def cut_json(path):
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


DAMAGE = {  # name -> (file to damage, how, what the message must say)
    "truncated": (UNET_WEIGHTS, truncate, "damaged safetensors file, 80000 bytes"),
    "empty": (UNET_WEIGHTS, lambda p: p.write_bytes(b""), "damaged safetensors file, 0 bytes"),
    "random": (UNET_WEIGHTS, random_bytes, "damaged safetensors file"),
    "missing": (UNET_WEIGHTS, lambda p: p.unlink(), "no .safetensors weights file"),
    "unet-config": ("unet/config.json", cut_json, "not valid JSON"),
    "unet-config-missing": ("unet/config.json", lambda p: p.unlink(), "missing"),
    "model-config": ("config.json", cut_json, "not valid JSON"),
    "controlnet-folder": ("controlnet", shutil.rmtree, "missing component folder"),
    "one-byte": (UNET_WEIGHTS, lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1])),
                 "weights hash"),
}


@pytest.mark.parametrize("kind", DAMAGE)
def test_generate_on_a_damaged_checkpoint_is_one_line_naming_the_file(saved, tmp_path, capsys, kind):
    relative, damage, problem = DAMAGE[kind]
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    damage(model / relative)
    out = tmp_path / "out"
    code = cli.main(["generate", "htd", "--checkpoint", str(model), "--conditions", str(saved / "conditions"),
                     "--n", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    named = model if kind == "one-byte" else (model / relative).parent if kind == "missing" else model / relative
    assert f"{named}:" in lines[0] and problem in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "nothing is written for a refused checkpoint"


def test_the_intact_checkpoint_loads_and_wrong_settings_name_the_config(saved, tmp_path):
    assert load_generator(saved / "model").checkpoint_hash.startswith("sha256:")
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["sample"]["no_such_option"] = 1
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{model / 'config.json'}: invalid generator settings"):
        load_generator(model)


def test_a_unet_config_that_no_longer_matches_its_weights_names_the_network(saved, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    config = json.loads((model / "unet/config.json").read_text())
    config["block_out_channels"] = [2 * c for c in config["block_out_channels"]]  # valid JSON, wrong shapes
    (model / "unet/config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{model / 'unet'}: cannot load the unet component"):
        load_generator(model)


@pytest.mark.parametrize("resolution", [-32, 0, 33])
def test_a_resolution_the_networks_cannot_run_names_the_config(saved, tmp_path, resolution):
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    config = json.loads((model / "config.json").read_text())
    config["model"]["resolution"] = resolution  # the tiny UNet halves once: sizes must be even
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=f"{model / 'config.json'}: model.resolution is {resolution}; .*multiple of 2"):
        load_generator(model)


def cut_to_1000(path):
    path.write_bytes(path.read_bytes()[:1000])


RESUME_DAMAGE = {  # file of the newest training checkpoint -> (how, what the message names, the problem)
    "model.safetensors": (cut_to_1000, "model.safetensors", "damaged safetensors file, 1000 bytes"),
    "trainer_state.json": (cut_json, "trainer_state.json", "not valid JSON"),
    "optimizer.bin": (cut_to_1000, "", "cannot resume from this training checkpoint"),  # torch names no file
}


@pytest.mark.parametrize("damaged", RESUME_DAMAGE)
def test_resume_from_a_damaged_training_checkpoint_is_one_line_naming_it(saved, tmp_path, capsys, damaged):
    how, named, problem = RESUME_DAMAGE[damaged]
    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    (checkpoint,) = (model / "training").glob("step-*")
    how(checkpoint / damaged)
    before = sorted(p.name for p in model.rglob("*"))
    code = cli.main(["train", "htd", "--data", str(saved / "conditions"), "--preset", "tiny", "--steps", "2",
                     "--resume", "--out", str(model)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {checkpoint / named}".rstrip("/") + ":") and problem in lines[0], lines[0]
    assert sorted(p.name for p in model.rglob("*")) == before, "a refused resume changes nothing"
