"""Training loop (exact resume, accumulation, EMA) and samplers of the shared diffusion core, on the tiny preset."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from histosynth.errors import UnknownNameError
from histosynth.generators import GENERATORS, build_generator, load_generator, weights_hash
from histosynth.generators.diffusion.presets import override
from histosynth.generators.diffusion.sampling import SAMPLERS
from histosynth.generators.htd.model import HTDGenerator
from histosynth.generators.htd.presets import PRESETS
from histosynth.generators.training import latest_checkpoint
from histosynth.sources import build_source

COMPONENTS = ["controlnet", "unet"]


@pytest.fixture(scope="module")
def tiny_data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    build_generator("htd", "tiny").train(tiny_data, {"steps": 2}, out=folder)
    return folder


def test_resumed_training_equals_uninterrupted_training(tiny_data, tmp_path):
    config = {"steps": 4, "checkpoint_every": 2, "keep_checkpoints": 3}
    build_generator("htd", "tiny").train(tiny_data, config, out=tmp_path / "straight")
    build_generator("htd", "tiny").train(tiny_data, dict(config, steps=2), out=tmp_path / "split")
    assert latest_checkpoint(tmp_path / "split" / "training").name == "step-00000002"
    report = build_generator("htd", "tiny").train(tiny_data, config, out=tmp_path / "split", resume=True)
    assert report.resumed_from_step == 2 and len(report.losses) == 2
    # the EMA weights saved as the model, and the raw weights, optimizer and EMA of the last checkpoint
    assert weights_hash(tmp_path / "straight", COMPONENTS) == weights_hash(tmp_path / "split", COMPONENTS)
    a = latest_checkpoint(tmp_path / "straight" / "training")
    b = latest_checkpoint(tmp_path / "split" / "training")
    assert a.name == b.name == "step-00000004"
    raw_a, raw_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert raw_a.keys() == raw_b.keys() and all(np.array_equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert (a / "optimizer.bin").read_bytes() == (b / "optimizer.bin").read_bytes()
    assert json.loads((b / "trainer_state.json").read_text())["step"] == 4
    # the EMA differs from the raw weights (it is what the model folder holds)
    saved = load_file(tmp_path / "split" / "unet" / "diffusion_pytorch_model.safetensors")
    assert not np.array_equal(saved["conv_in.weight"], raw_b["unet.conv_in.weight"])


def test_snapshots_of_one_run_make_a_learning_curve(tiny_data, tmp_path):
    """Snapshots are the run's model (EMA weights) at those steps, saving them leaves training unchanged, and a run
    stopped and resumed writes the same snapshots."""
    config = {"steps": 4, "checkpoint_every": 1, "keep_checkpoints": 5}
    build_generator("htd", "tiny").train(tiny_data, config, out=tmp_path / "plain")
    build_generator("htd", "tiny").train(tiny_data, dict(config, snapshot_steps=(2, 4)), out=tmp_path / "curve")
    snapshots = tmp_path / "curve" / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["step-00000002", "step-00000004"]
    final = weights_hash(tmp_path / "plain", COMPONENTS)
    assert weights_hash(tmp_path / "curve", COMPONENTS) == final == weights_hash(snapshots / "step-00000004", COMPONENTS)
    assert weights_hash(snapshots / "step-00000002", COMPONENTS) != final
    early = load_generator(snapshots / "step-00000002")
    assert early.train_report.steps == 2 and len(early.train_report.losses) == 0  # a saved folder keeps the summary
    # tiny's LR is constant, so a 3-step run is the first 3 steps of the 4-step one: a run stopped after step 3
    build_generator("htd", "tiny").train(tiny_data, dict(config, steps=3, snapshot_steps=(2, 4)), out=tmp_path / "split")
    build_generator("htd", "tiny").train(tiny_data, dict(config, snapshot_steps=(2, 4)), out=tmp_path / "split",
                                         resume=True)
    for name in ("step-00000002", "step-00000004"):
        assert weights_hash(tmp_path / "split" / "snapshots" / name, COMPONENTS) == \
            weights_hash(snapshots / name, COMPONENTS)


def _weights(gen) -> dict:
    return {k: v.detach().clone() for k, v in gen.denoiser.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _built(name: str, seed: int, **overrides):
    preset = HTDGenerator.get_preset("tiny")
    preset.train.seed = seed
    return GENERATORS.get(name).build(preset, **overrides)


@pytest.mark.parametrize("name, eager", [("htd", True), ("htd", False), ("htd-unconditional", True)])
def test_the_training_seed_fixes_the_initial_weights(tiny_data, name, eager):
    sized = {"num_classes": 5} if name == "htd" else {}  # the simulator's 5 tissue classes
    assert _same(_weights(_built(name, 1, **sized)), _weights(_built(name, 1, **sized)))
    assert not _same(_weights(_built(name, 1, **sized)), _weights(_built(name, 2, **sized)))
    # train --seed 5 on a generator whose networks were built under the preset's seed 0 (eager) or are built by
    # train() (HTD without num_classes): either way it starts from the seed-5 networks.
    # lr 0 leaves them as they start (AdamW adds 0 * m / (sqrt(v) + eps) and scales by 1 - 0 * wd: exact; the
    # EMA moves by (1 - decay) * 0), so the result is exactly the seed-5 initial network.
    gen = build_generator(name, "tiny", **(sized if eager else {}))
    zero = {"steps": 1, "lr": 0.0, "augment": False}
    gen.train(tiny_data, dict(zero, seed=5))
    fresh = _built(name, 5, **sized)
    assert _same(_weights(gen), _weights(fresh)) and not _same(_weights(gen), _weights(_built(name, 0, **sized)))
    # trained networks are never redrawn: another seed continues from them
    gen.train(tiny_data, dict(zero, seed=6))
    assert _same(_weights(gen), _weights(fresh))


def test_gradient_accumulation_and_l1_loss_run(tiny_data):
    gen = build_generator("htd-unconditional", "tiny")
    report = gen.train(tiny_data, {"steps": 2, "grad_accum": 2, "loss": "l1", "ema_decay": None, "augment": False})
    assert len(report.losses) == 2 and np.isfinite(report.losses).all()


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
def test_x0_and_v_prediction_train_and_sample(tiny_data, prediction):
    gen = build_generator("htd", "tiny", prediction_type=prediction)
    assert np.isfinite(gen.train(tiny_data, {"steps": 1}).losses).all()
    assert gen.sample(tiny_data[:1], seed=0, sampler="dpm++")[0].image.shape == (32, 32, 3)


def test_curriculum_training_on_pseudo_maps_pads_to_the_finest_k(tiny_data, tmp_path):
    import dataclasses

    from histosynth.commands.train import curriculum_config

    pseudo = [dataclasses.replace(s, tissue_schema="pseudo-tissue-k4") for s in tiny_data]  # ids 0..4 fit k=4
    spec = tmp_path / "curriculum.json"
    spec.write_text(json.dumps({"ks": [2, 4], "luts": {"2": [0, 1, 1, 2, 2]}}))
    config = curriculum_config(spec, None, steps=4)
    assert config.ks == (2, 4) and config.warmup_steps == 2
    gen = build_generator("htd", "tiny")
    gen.train(pseudo, {"steps": 4, "curriculum": config}, out=tmp_path / "model")
    assert gen.num_classes == 5 and gen.denoiser.controlnet.config.conditioning_channels == 20
    assert gen.sample(pseudo[:1], seed=0)[0].tissue_schema == "pseudo-tissue-k4"
    # the curriculum is part of the saved training settings: a resumed run continues with it, not without it
    loaded = load_generator(tmp_path / "model")
    assert loaded.preset.train.curriculum == config


def test_heterogeneity_rule_drops_homogeneous_patches(tiny_data):
    gen = build_generator("htd", "tiny")
    report = gen.train(tiny_data, {"steps": 1, "heterogeneity": (0.2, 0.8)})
    assert 0 < report.data.dropped < len(tiny_data) and report.data.patches == len(tiny_data) - report.data.dropped
    with pytest.raises(ValueError, match="heterogeneity rule"):
        gen.train(tiny_data[:1], {"steps": 1, "heterogeneity": (0.45, 0.55)})


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_deterministically(trained, tiny_data, sampler):
    gen = load_generator(trained)
    a = gen.sample(tiny_data[:2], seed=3, sampler=sampler, steps=3)
    b = gen.sample(tiny_data[:2], seed=3, sampler=sampler, steps=3)
    assert all(x.equals(y) for x, y in zip(a, b, strict=False))


def test_classifier_free_guidance(trained, tiny_data):
    import torch

    from histosynth.generators.diffusion.sampling import guided

    calls = []

    def model_fn(x, t, conditional):
        calls.append(conditional)
        return x + (1.0 if conditional else 0.0)

    x = torch.zeros(1, 3, 2, 2)
    assert torch.equal(guided(model_fn, 1.0)(x, 0), x + 1) and calls == [True]
    assert torch.equal(guided(model_fn, 3.0)(x, 0), x + 3)  # uncond + w (cond - uncond)
    out = load_generator(trained).sample(tiny_data[:2], seed=3, guidance=3.0)
    assert len(out) == 2 and all(s.provenance.seed for s in out)


def test_presets_exist_and_overrides_refuse_typos():
    assert set(PRESETS) == {"tiny", "demo", "paper"}
    paper = HTDGenerator.get_preset("paper")
    assert paper.model.resolution == 256 and paper.model.block_out_channels == (128, 512, 1024)
    assert paper.model.autoencoder.downsample == 4 and paper.model.latent_stride == 4
    assert (paper.model.beta_start, paper.model.beta_end, paper.train.loss, paper.sample.steps) == (0.0015, 0.0205, "l1", 200)
    demo = HTDGenerator.get_preset("demo")
    assert demo.model.autoencoder is None and demo.model.resolution == 64 and not demo.model.mid_attention
    with pytest.raises(ValueError, match="no field"):
        override(demo.train, step=3)
    with pytest.raises(UnknownNameError, match="unknown preset"):
        HTDGenerator.get_preset("huge")


def test_missing_paper_autoencoder_is_a_clear_error(tmp_path, monkeypatch):
    from histosynth.generators.diffusion.backbones import BaseWeightsMissing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(BaseWeightsMissing, match="neither a local folder nor in the Hugging Face cache"):
        build_generator("htd", "paper", num_classes=3)
