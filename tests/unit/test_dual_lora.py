"""Dual-LoRA (histosynth.generators.dual_lora): completion keeps the known pixels exactly and stores its mask, the two
adapters switch, mix and disable (disabled = the base networks alone), save/load keeps both, a short joint run
lowers each task's loss, and `histosynth train` / `generate --task complete` run end to end. The generic contract
(train, folder, load, sample, seeds) is tests/unit/test_generators_contract.py's, which picks dual-lora up."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

import histosynth.cli as cli
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.generators import build_generator, load_generator
from histosynth.generators.arrays import condition_batch
from histosynth.generators.base import SampleOptions, derive_seed
from histosynth.generators.checkpoint import ADAPTERS_DIR, base_state_dict
from histosynth.generators.diffusion.backbones import Denoiser
from histosynth.generators.diffusion.training import diffusion_loss
from histosynth.generators.dual_lora.model import (
    ADAPTERS,
    lora_targets,
    set_adapter_weights,
    task_of_step,
    training_mask_seed,
)
from histosynth.masks import HELDOUT_SETS, heldout_mask, hybrid_mask
from histosynth.sources import build_source

# peft warns whenever a second adapter is injected into one model; two adapters are the point here
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")


@pytest.fixture(scope="module")
def data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny Dual-LoRA trained 6 joint steps (3 per adapter) at a high LR, so both adapters are far from zero."""
    gen = build_generator("dual-lora", "tiny")
    folder = tmp_path_factory.mktemp("dual") / "model"
    gen.train(data, {"steps": 6, "lr": 1e-2}, out=folder)
    return gen, folder


def inputs(gen, n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, 3, 32, 32, generator=g)
    cond = torch.rand(n, gen.conditioner.channels, 32, 32, generator=g)
    return x, torch.tensor([100, 700][:n]), cond


def run(denoiser, weights, x, t, cond) -> torch.Tensor:
    set_adapter_weights(denoiser, weights)
    with torch.no_grad():
        return denoiser(x, t, cond)


def test_schedule_targets_and_training_masks_are_as_documented():
    assert [task_of_step(s) for s in range(4)] == ["synthesis", "completion"] * 2
    net = build_generator("dual-lora", "tiny").denoiser.controlnet
    # the ControlNet's zero-convs (1x1) are LoRA targets; its 3x3 condition-embedding convs are not
    assert {"controlnet_down_blocks.0", "controlnet_mid_block"} <= {n.split(".base_layer")[0] for n in lora_targets(net)}
    assert not any("controlnet_cond_embedding" in n for n in lora_targets(net))
    seeds = {training_mask_seed(0, s, 0, 0) for s in range(50)}
    assert len(seeds) == 50 and not seeds & {h.seed for h in HELDOUT_SETS.values()}


def test_completion_keeps_known_pixels_exactly_and_stores_each_mask(trained, data):
    gen, _ = trained
    conds = data[:2]
    outputs = gen.sample(conds, seed=1, task="completion")  # no masks given: held-out masks 0 and 1
    for j, (out, cond) in enumerate(zip(outputs, conds, strict=True)):
        out.validate()
        mask = heldout_mask(j, 32)
        assert np.array_equal(out.completion_mask, mask) and 0 < mask.mean() < 1
        assert np.array_equal(out.image[~mask], cond.image[~mask])
        assert not np.array_equal(out.image[mask], cond.image[mask])  # the hole was painted, not copied
        assert np.array_equal(out.nuclei.centroids, cond.nuclei.centroids)
    box = np.zeros((32, 32), bool)
    box[8:20, 4:30] = True
    given = gen.sample(conds[:1], seed=1, options=SampleOptions(task="completion", mask=box))[0]
    assert np.array_equal(given.completion_mask, box) and np.array_equal(given.image[~box], conds[0].image[~box])
    with pytest.raises(ValueError, match="completion mask 0 has shape"):
        gen.sample(conds[:1], seed=1, options=SampleOptions(task="completion", mask=box[:16]))


def test_adapters_switch_mix_and_disable_to_the_base(trained):
    gen, _ = trained
    denoiser = gen.denoiser
    x, t, cond = inputs(gen)
    synthesis = run(denoiser, {"synthesis": 1.0}, x, t, cond)
    completion = run(denoiser, {"completion": 1.0}, x, t, cond)
    assert not torch.allclose(synthesis, completion)
    # a zero scale adds exactly 0 * delta: the mix (1, 0) is the completion adapter alone, bit for bit
    assert torch.equal(run(denoiser, {"completion": 1.0, "synthesis": 0.0}, x, t, cond), completion)
    half = run(denoiser, {"completion": 0.5, "synthesis": 0.5}, x, t, cond)
    assert not torch.allclose(half, completion) and not torch.allclose(half, synthesis)

    # disabled adapters = the base weights alone, in plain diffusers networks without any peft layer
    unet = UNet2DConditionModel.from_config(denoiser.unet.config)
    unet.load_state_dict(base_state_dict(denoiser.unet))
    controlnet = ControlNetModel.from_config(denoiser.controlnet.config)
    controlnet.load_state_dict(base_state_dict(denoiser.controlnet))
    base = Denoiser(unet, controlnet).eval()
    with torch.no_grad():
        expected = base(x, t, cond)
    assert torch.equal(run(denoiser, {}, x, t, cond), expected)
    assert not torch.allclose(completion, expected)


def test_mixing_scales_each_adapters_update_linearly(trained):
    """In one LoRA layer, out(a, b) - base = a dW_c x + b dW_s x."""
    gen, _ = trained
    layer = gen.denoiser.unet.time_embedding.linear_1
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(0))

    def out(weights):
        set_adapter_weights(gen.denoiser, weights)
        with torch.no_grad():
            return layer(x)

    base, c, s, mix = out({}), out({"completion": 1.0}), out({"synthesis": 1.0}), out({"completion": 0.3, "synthesis": 0.9})
    assert not torch.allclose(c, s)
    # float32 sums of a few products: error a few ulps (eps 1.2e-7) of values of order 1
    torch.testing.assert_close(mix - base, 0.3 * (c - base) + 0.9 * (s - base), rtol=1e-5, atol=1e-5)


def test_save_and_load_keep_both_adapters(trained, data):
    gen, folder = trained
    for part in ("unet", "controlnet"):
        assert sorted(p.name for p in (folder / part / ADAPTERS_DIR).iterdir()) == sorted(ADAPTERS)
    config = json.loads((folder / "config.json").read_text())
    assert config["generator"] == "dual-lora"
    card = (folder / "README.md").read_text()
    assert "rank 4" in card and "even steps synthesis" in card and "never the held-out set" in card
    loaded = load_generator(folder)
    x, t, cond = inputs(gen)
    for weights in ({"synthesis": 1.0}, {"completion": 1.0}, {"completion": 0.5, "synthesis": 0.5}, {}):
        assert torch.equal(run(loaded.denoiser, weights, x, t, cond), run(gen.denoiser, weights, x, t, cond))
    assert all(a.equals(b) for a, b in zip(loaded.sample(data[:1], seed=2, task="completion"),
                                           gen.sample(data[:1], seed=2, task="completion"), strict=True))


def test_a_short_joint_run_lowers_each_tasks_loss(data):
    gen = build_generator("dual-lora", "tiny")  # networks drawn with the training seed (0), as train() would

    def loss(task: str) -> float:
        """The task's loss on a fixed batch: all 6 patches, fixed noise and timesteps, the task's masks and adapter."""
        masks = (np.ones((6, 32, 32), bool) if task == "synthesis"
                 else np.stack([hybrid_mask(11, j, 32) for j in range(6)]))
        conds = [replace(c, completion_mask=m) for c, m in zip(data, masks, strict=True)]
        cb = condition_batch(conds, 32, gen.parts)
        pixels = torch.from_numpy(cb.images).permute(0, 3, 1, 2).float() / 127.5 - 1
        tensors = {"x0": pixels, **gen.conditioner(cb, [np.random.default_rng(0)] * 6, torch.device("cpu"))}
        set_adapter_weights(gen.denoiser, {task: 1.0})
        with torch.no_grad():
            values = [diffusion_loss(gen.denoiser, gen.scheduler, tensors, torch.Generator().manual_seed(k), 0.0, "l2")
                      for k in range(4)]
        return float(torch.stack(values).mean())

    before = {task: loss(task) for task in ADAPTERS}
    report = gen.train(data, {"steps": 10, "batch_size": 4, "lr": 1e-2})
    after = {task: loss(task) for task in ADAPTERS}
    assert len(report.losses) == 10 and np.isfinite(report.losses).all()
    for task in ADAPTERS:
        # the evaluation batch, its noise and timesteps are fixed, so the change is training's alone; an untrained
        # epsilon-model's loss is ~E[noise^2] = 1, and 5 steps per task at lr 1e-2 must remove a tenth of it at least
        assert after[task] < 0.9 * before[task], (task, before, after)


def test_cli_trains_and_completes_with_heldout_and_given_masks(data, tmp_path, capsys):
    conds, ckpt, out = tmp_path / "data", tmp_path / "ckpt", tmp_path / "completed"
    write_dataset(data, conds, CardInfo("simulator", "six simulator patches with nuclei"))
    assert cli.main(["train", "dual-lora", "--data", str(conds), "--preset", "tiny", "--out", str(ckpt),
                     "--steps", "2"]) == 0
    base = ["generate", "dual-lora", "--checkpoint", str(ckpt), "--conditions", str(conds), "--n", "3",
            "--chunk-size", "2"]
    assert cli.main([*base, "--task", "complete", "--out", str(out)]) == 0
    rows = list(iter_samples(out))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        mask = heldout_mask(i % len(data), 32)
        assert np.array_equal(row.completion_mask, mask)
        assert np.array_equal(row.image[~mask], data[i].image[~mask])
        assert row.provenance.seed == derive_seed(0, i) and row.provenance.generator == "dual-lora"

    box = np.zeros((32, 32), bool)
    box[:, 10:20] = True
    masks = tmp_path / "masks"
    write_dataset([replace(data[0], completion_mask=box)], masks,
                  CardInfo("masks", "one band mask"))
    assert cli.main([*base, "--task", "complete", "--masks", str(masks), "--out", str(tmp_path / "banded")]) == 0
    assert all(np.array_equal(r.completion_mask, box) for r in iter_samples(tmp_path / "banded"))
    capsys.readouterr()
    assert cli.main([*base, "--masks", str(masks), "--out", str(tmp_path / "refused")]) == 2
    assert "masks are for completion" in capsys.readouterr().err and not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_paper_preset_builds_sd_class_with_rank_128_trains_a_step_and_completes():
    """Random weights (no SD download): 512 px, KL f8 latents, LoRA rank 128; batch 1, two sampling steps.
    Slow: 6.9 min and ~8 GB of RAM on the loaded 2-core machine (`pytest -m slow`)."""
    from histosynth.generators.diffusion.presets import override
    from histosynth.generators.dual_lora.model import DualLoraGenerator

    data = list(build_source("simulator", n=2, size=512, seed=0, mpp=0.5))
    preset = DualLoraGenerator.get_preset("paper")
    preset.model.autoencoder = override(preset.model.autoencoder, random_init=True, weights=None)
    gen = build_generator("dual-lora", preset)
    unet, controlnet = gen.denoiser.unet, gen.denoiser.controlnet
    assert unet.config.block_out_channels == (320, 640, 1280, 1280) and unet.config.in_channels == 4
    assert controlnet.config.conditioning_channels == 6 + 4  # PanNuke's 6 centroid channels + masked image + mask
    assert gen.lora_rank == 128 and all(unet.peft_config[a].r == 128 for a in ADAPTERS)
    report = gen.train(data, {"steps": 2, "batch_size": 1, "progress": False})  # one step per adapter
    assert np.isfinite(report.losses).all()
    out = gen.sample(data[:1], seed=0, steps=2, batch_size=1, task="completion")[0]
    mask = heldout_mask(0, 512)
    assert out.image.shape == (512, 512, 3) and np.array_equal(out.image[~mask], data[0].image[~mask])


class Stopped(Exception):
    """Raised from on_step to stop a training run the way a kill does: after a step, before the next checkpoint."""


def test_training_stopped_after_a_checkpoint_resumes_to_byte_identical_adapters(data, tmp_path, one_thread):
    """Checkpoint at step 3 (synthesis has stepped twice, completion once), stopped after step 4, resumed: steps
    3-5 are redone from the checkpoint's weights, three optimizers and their LR schedules (cosine with warmup, so a
    schedule restored at the wrong position would change the weights), and every saved file is the uninterrupted
    run's, byte for byte."""
    from histosynth.generators.training import latest_checkpoint

    config = {"steps": 6, "checkpoint_every": 3, "lr": 1e-2, "lr_schedule": "cosine", "warmup_steps": 2}
    build_generator("dual-lora", "tiny").train(data, config, out=tmp_path / "straight")

    def stop_after_4(step: int) -> None:
        if step == 4:
            raise Stopped

    with pytest.raises(Stopped):
        build_generator("dual-lora", "tiny").train(data, config, out=tmp_path / "split", on_step=stop_after_4)
    assert latest_checkpoint(tmp_path / "split" / "training").name == "step-00000003"
    assert not (tmp_path / "split" / "config.json").exists()
    report = build_generator("dual-lora", "tiny").train(data, config, out=tmp_path / "split", resume=True)
    assert report.resumed_from_step == 3 and len(report.losses) == 3
    for part in ("unet", "controlnet"):
        files = sorted(p.relative_to(tmp_path / "straight") for p in (tmp_path / "straight" / part).rglob("*.safetensors"))
        assert len(files) == 3, files  # the base weights and the two adapters
        for name in files:
            assert (tmp_path / "split" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes(), name
    a, b = (latest_checkpoint(tmp_path / run / "training") for run in ("straight", "split"))
    assert a.name == b.name == "step-00000006"
    optimizers = sorted(p.name for p in a.glob("optimizer*.bin"))
    assert len(optimizers) == 3  # base, synthesis, completion
    assert all((a / o).read_bytes() == (b / o).read_bytes() for o in optimizers)
