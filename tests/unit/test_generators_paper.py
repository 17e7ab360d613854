"""The `paper` preset (HTD's published sizes) runs: random weights, one training step, two sampling steps, on CPU.

Slow (about 1 minute and ~10 GB of RAM on a 2-core machine): `make test-slow` or `pytest -m slow`.
"""

import numpy as np
import pytest

from histosynth.generators import build_generator
from histosynth.generators.diffusion.presets import override
from histosynth.generators.htd.model import HTDGenerator
from histosynth.sources import build_source


@pytest.mark.slow
def test_paper_preset_trains_one_step_and_samples_two_steps():
    data = list(build_source("simulator", n=2, size=256, seed=0, mpp=0.5))
    preset = HTDGenerator.get_preset("paper")
    preset.model.autoencoder = override(preset.model.autoencoder, random_init=True, weights=None)
    gen = build_generator("htd", preset, num_classes=5)
    unet, controlnet = gen.denoiser.unet, gen.denoiser.controlnet
    assert unet.config.block_out_channels == (128, 512, 1024) and unet.config.in_channels == 3  # VQ-f4: 64x64x3
    assert controlnet.config.conditioning_channels == 4 * 5  # simulator-tissue: K = 5 with background
    assert sum(p.numel() for p in unet.parameters()) > 200e6
    report = gen.train(data, {"steps": 1, "batch_size": 1, "heterogeneity": None, "progress": False})
    assert np.isfinite(report.losses).all()
    out = gen.sample(data[:1], seed=0, steps=2, batch_size=1)
    assert out[0].image.shape == (256, 256, 3) and np.array_equal(out[0].tissue, data[0].tissue)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["htd-unconditional", "htd-embedding"])
def test_the_ablations_paper_presets_train_one_step_and_sample_two_steps(name):
    """HTD's ablations at HTD's paper sizes (they inherit its presets): the unconditional one without a ControlNet,
    the embedding one with K + embedding channels into it; random weights, one step, two sampling steps."""
    data = list(build_source("simulator", n=2, size=256, seed=0, mpp=0.5))
    preset = HTDGenerator.get_preset("paper")
    preset.model.autoencoder = override(preset.model.autoencoder, random_init=True, weights=None)
    gen = build_generator(name, preset, num_classes=5)
    assert gen.denoiser.unet.config.block_out_channels == (128, 512, 1024)
    assert (gen.denoiser.controlnet is None) == (name == "htd-unconditional")
    report = gen.train(data, {"steps": 1, "batch_size": 1, "heterogeneity": None, "progress": False})
    assert np.isfinite(report.losses).all()
    out = gen.sample(data[:1], seed=0, steps=2, batch_size=1)
    assert out[0].image.shape == (256, 256, 3)
