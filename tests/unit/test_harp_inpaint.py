"""The HARP-like inpainting baseline (baselines/harp_inpaint/). The generic contract (train, save, load, seeded
sampling) is checked for it by test_generators_contract.py; here: what makes it Palette. Known pixels are exactly
the condition's, the loss sees only the hole, training lowers it, RePaint jumps run and keep the known pixels."""

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from histosynth.baselines.harp_inpaint.model import MASK_STREAM, HarpInpaint, palette_loss
from histosynth.errors import InputError
from histosynth.generators import build_generator, generator_class, generator_meta
from histosynth.generators.base import derive_seed
from histosynth.masks import heldout_mask, hybrid_mask, with_heldout_masks
from histosynth.sources import build_source


@pytest.fixture(scope="module")
def data():
    return list(build_source("simulator", n=8, size=32, seed=5, mpp=2.0))


@pytest.fixture(scope="module")
def model():
    return build_generator("harp-inpaint", "tiny")


def test_registered_as_a_completion_only_diffusion_model_without_labels():
    meta = generator_meta("harp-inpaint")
    assert generator_class("harp-inpaint") is HarpInpaint and HarpInpaint.meta == meta
    assert (meta.tasks, meta.conditioning, meta.outputs, meta.label_policy, meta.family) == (
        ("completion",), ("mask",), ("image",), "none", "diffusion")
    import histosynth.baselines.harp_inpaint.model as module

    assert "pins torch 2.0.1" in module.__doc__


def test_known_pixels_are_the_conditions_exactly_at_any_patch_size(model, data):
    big = list(build_source("simulator", n=2, size=48, seed=6, mpp=2.0))  # resized to 32 px and back
    for conditions in (list(with_heldout_masks(data[:3])), big):
        out = model.sample(conditions, seed=3, task="completion")
        for j, (o, c) in enumerate(zip(out, conditions, strict=True)):
            mask = c.completion_mask if c.completion_mask is not None else heldout_mask(j, c.image.shape[:2])
            assert np.array_equal(o.completion_mask, mask) and o.image.shape == c.image.shape
            assert np.array_equal(o.image[~mask], c.image[~mask])
            assert not np.array_equal(o.image[mask], c.image[mask])  # the hole was repainted
            assert o.tissue is None and o.nuclei is None
    given = np.zeros((32, 32), bool)
    given[8:20, 4:28] = True
    out = model.sample(data[:2], seed=0, task="completion", mask=given)
    assert all(np.array_equal(o.completion_mask, given) for o in out)
    default = model.sample(data[:1], seed=0)  # a completion-only model completes without being told
    assert default[0].completion_mask is not None and np.array_equal(default[0].image, model.sample(
        data[:1], seed=0, task="completion")[0].image)
    with pytest.raises(InputError, match="does only completion"):
        model.sample(data[:1], seed=0, task="synthesis")
    with pytest.raises(InputError, match="mask 0 is empty"):
        model.sample(data[:1], seed=0, task="completion", mask=np.zeros((32, 32), bool))


def test_the_loss_sees_the_noise_inside_the_hole_only(model):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    mask = torch.from_numpy(np.stack([hybrid_mask(1, j, 32) for j in range(2)])[:, None].astype(np.float32))
    noise, cond_noise = torch.randn(2, 2, 3, 32, 32, generator=g)
    t = torch.tensor([100, 700])
    with torch.no_grad():
        base = palette_loss(model.unet, image, mask, noise, cond_noise, t, model.scheduler)
        outside = torch.randn(noise.shape, generator=g) * (1 - mask)
        same = palette_loss(model.unet, image, mask, noise * mask + outside, cond_noise * mask + outside, t, model.scheduler)
        inside = palette_loss(model.unet, image, mask, noise + torch.randn(noise.shape, generator=g) * mask, cond_noise,
                              t, model.scheduler)
    assert torch.equal(base, same)  # the composite and the masked error never read them: bit for bit
    assert not torch.equal(base, inside)


def test_a_short_training_run_lowers_the_loss_on_a_fixed_batch(data):
    gen = build_generator("harp-inpaint", "tiny")
    images = torch.from_numpy(np.stack([s.image for s in data])).permute(0, 3, 1, 2).float() / 127.5 - 1
    g = torch.Generator().manual_seed(1)
    mask = torch.from_numpy(np.stack([hybrid_mask(9, j, 32) for j in range(len(data))])[:, None].astype(np.float32))
    noise, cond_noise = torch.randn(2, *images.shape, generator=g)
    t = torch.linspace(0, 999, len(data)).long()  # the whole schedule, so one lucky timestep cannot decide

    def loss() -> float:
        with torch.no_grad():
            return float(palette_loss(gen.unet, images, mask, noise, cond_noise, t, gen.scheduler))

    before = loss()
    report = gen.train(data, {"steps": 25, "progress": False})
    assert len(report.losses) == 25
    assert loss() < before


def test_training_masks_come_from_the_training_seed_stream_not_the_heldout_set():
    seed = derive_seed(0, MASK_STREAM)
    assert not any(np.array_equal(hybrid_mask(seed, j, 32), heldout_mask(j, 32)) for j in range(8))


def test_repaint_jumps_run_more_model_calls_and_keep_known_pixels(data):
    gen = build_generator("harp-inpaint", "tiny")
    gen.preset.sample = replace(gen.preset.sample, jump_length=2, jump_n_sample=2)
    calls = []
    hook = gen.unet.register_forward_hook(lambda *_: calls.append(1))
    conditions = list(with_heldout_masks(data[:2]))
    out = gen.sample(conditions, seed=0, task="completion", sampler="repaint", steps=6)
    repaint_calls = len(calls)
    calls.clear()
    gen.sample(conditions, seed=0, task="completion", sampler="ddim", steps=6)
    hook.remove()
    assert len(calls) == 6 and repaint_calls > 6  # every jump back is denoised again
    for o, c in zip(out, conditions, strict=True):
        assert np.array_equal(o.image[~c.completion_mask], c.image[~c.completion_mask])
    again = gen.sample(conditions, seed=0, task="completion", sampler="repaint", steps=6)
    assert all(np.array_equal(a.image, b.image) for a, b in zip(out, again, strict=True))


def test_trains_and_completes_through_the_cli(data, tmp_path, capsys):
    import histosynth.cli as cli
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset

    write_dataset(data, tmp_path / "data", CardInfo("data", "simulator patches"))
    model = tmp_path / "model"
    assert cli.main(["train", "harp-inpaint", "--data", str(tmp_path / "data"), "--preset", "tiny", "--steps", "2",
                     "--out", str(model)]) == 0
    assert "--task complete" in (model / "README.md").read_text()
    base = ["generate", "harp-inpaint", "--checkpoint", str(model), "--conditions", str(tmp_path / "data"), "--n", "3"]
    assert cli.main([*base, "--out", str(tmp_path / "synth")]) == 2
    assert "does only completion" in capsys.readouterr().err
    assert cli.main([*base, "--task", "complete", "--steps", "2", "--out", str(tmp_path / "done")]) == 0
    rows = list(iter_samples(tmp_path / "done"))
    assert len(rows) == 3
    for j, (row, cond) in enumerate(zip(rows, data, strict=False)):
        assert np.array_equal(row.completion_mask, heldout_mask(j, 32))
        assert np.array_equal(row.image[~row.completion_mask], cond.image[~row.completion_mask])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_with_an_oracle_noise_predictor_the_sampler_returns_the_true_hole(data, sampler):
    """The reverse process is exact: given the true noise at every step (x0 is known), DDIM and DDPM end at x0, so
    the completed hole equals the real pixels up to uint8 rounding (1 level)."""
    gen = build_generator("harp-inpaint", "tiny")
    x0 = torch.from_numpy(np.stack([s.image for s in data[:4]])).permute(0, 3, 1, 2).float() / 127.5 - 1
    alphas = gen.scheduler.alphas_cumprod

    class Oracle(torch.nn.Module):
        def forward(self, inputs, t):
            x_t, a = inputs[:, 3:], alphas[int(t)]
            return SimpleNamespace(sample=(x_t - a.sqrt() * x0) / (1 - a).sqrt())

    gen.unet, gen._hash = Oracle(), "sha256:oracle"
    out = gen.sample(data[:4], seed=0, sampler=sampler, steps=10)
    for j, (o, real) in enumerate(zip(out, data[:4], strict=True)):
        hole = heldout_mask(j, real.image.shape[:2])
        assert np.abs(o.image.astype(int) - real.image.astype(int))[hole].max() <= 1


@pytest.mark.slow
def test_paper_preset_builds_harps_restoration_unet_trains_a_step_and_completes():
    """Random weights at HARP's sizes (256 px, widths 64-128-256-512, two res blocks, middle attention, dropout 0.2);
    batch 1, one training step in the machine's precision, two sampling steps. Slow (`pytest -m slow`)."""
    data = list(build_source("simulator", n=2, size=256, seed=0, mpp=0.5))
    gen = build_generator("harp-inpaint", "paper")
    assert gen.unet.config.block_out_channels == (64, 128, 256, 512) and gen.unet.config.in_channels == 6
    assert gen.unet.config.sample_size == 256 and gen.unet.config.add_attention
    report = gen.train(data, {"steps": 1, "batch_size": 1, "progress": False})
    assert np.isfinite(report.losses).all()
    out = gen.sample(data[:1], seed=0, steps=2, batch_size=1)[0]
    mask = heldout_mask(0, 256)
    assert out.image.shape == (256, 256, 3) and np.array_equal(out.image[~mask], data[0].image[~mask])
    assert mask.any() and np.array_equal(out.completion_mask, mask)
