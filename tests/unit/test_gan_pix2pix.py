"""pix2pix (histosynth.baselines.pix2pix) on the shared GAN base (histosynth.baselines.gan).

The generic contract runs in test_generators_contract.py (-k pix2pix). Here: the reference architecture (U-Net
depth and widths, dropout blocks, the 70 x 70 PatchGAN measured by its gradient), the LR schedule, learning and
following the map on held-out simulator maps, the nuclei variant, exact resume after a SIGKILL of
`histosynth train`, the G and D losses on the progress bar, and clear errors for bad input.
"""


import numpy as np
import pytest
import torch
from gan_checks import assert_class_color_order, check_bad_inputs, check_sigkill_resume

from histosynth.baselines.gan.presets import GANTrainConfig
from histosynth.baselines.pix2pix import PatchGAN, UNetGenerator
from histosynth.errors import InputError
from histosynth.generators import build_generator, load_generator
from histosynth.schema import Sample
from histosynth.sources import build_source

NO_RULE = {"heterogeneity": None, "progress": False}


@pytest.fixture(scope="module")
def tiny_data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


def convs(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]


def test_the_paper_generator_is_unet_256_with_dropout_next_to_the_bottleneck(one_thread):
    g = UNetGenerator(in_channels=5)  # the reference unet_256 defaults
    down = [c for c in convs(g) if isinstance(c, torch.nn.Conv2d)]
    assert [c.out_channels for c in down] == [64, 128, 256, 512, 512, 512, 512, 512]
    assert all(c.stride == (2, 2) and c.kernel_size == (4, 4) for c in down)
    assert [d.p for d in g.drop] == [0.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.0]  # levels 5-7 of 8, as the reference
    x = torch.zeros(1, 5, 256, 256)
    x[:, 2] = 1.0
    with torch.no_grad():
        out = g.eval()(x)
    assert out.shape == (1, 3, 256, 256) and out.abs().max() <= 1.0  # tanh
    weights = torch.cat([c.weight.detach().flatten() for c in convs(g)])
    # N(0, 0.02) init: over n = 54M draws the sample mean and sd have standard errors 0.02 / sqrt(n) and
    # 0.02 / sqrt(2n), both below 3e-6; the bounds are 37 and 70 of them
    assert abs(float(weights.std()) - 0.02) < 2e-4 and abs(float(weights.mean())) < 1e-4


def test_the_patchgan_sees_70_by_70_pixels(one_thread):
    d = PatchGAN(in_channels=8).eval()  # eval: batch statistics would spread every output over the whole image
    assert [c.out_channels for c in convs(d)] == [64, 128, 256, 512, 1]
    assert [c.stride[0] for c in convs(d)] == [2, 2, 2, 1, 1]
    x = torch.randn(1, 8, 256, 256, requires_grad=True)
    logits = d(x)
    assert logits.shape == (1, 1, 30, 30)
    logits[0, 0, 15, 15].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0)).T
    assert (int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1) == (70, 70)


def test_lr_is_constant_for_half_the_steps_then_falls_linearly_towards_zero():
    factor = GANTrainConfig(steps=10, decay_start=0.5).lr_factor()
    values = np.array([factor(s) for s in range(10)])
    assert (values[:5] == 1.0).all()
    steps = np.diff(values[4:])
    assert np.allclose(steps, -1 / 6) and values[-1] == pytest.approx(1 / 6)  # the reference's 1 / (n_decay + 1)
    assert GANTrainConfig(steps=10, lr_schedule="constant").lr_factor()(9) == 1.0
    with pytest.raises(InputError, match="lr_schedule"):
        GANTrainConfig(lr_schedule="cosine")


def test_pix2pix_learns_and_follows_held_out_maps(one_thread):
    train = list(build_source("simulator", n=24, size=32, seed=0, mpp=4.0))
    held = list(build_source("simulator", n=12, size=32, seed=1, mpp=4.0))  # maps never trained on
    gen = build_generator("pix2pix", "tiny", num_classes=5)

    def paired_l1() -> float:
        return float(np.mean([np.abs(o.image.astype(float) - h.image.astype(float)).mean()
                              for o, h in zip(gen.sample(held, seed=0), held, strict=True)]))

    untrained = paired_l1()
    gen.train(train, {"steps": 200, **NO_RULE})
    assert paired_l1() < 0.6 * untrained  # measured 69 -> 30 levels

    assert_class_color_order(gen, held)


def test_the_nuclei_variant_reads_centroid_maps_and_copies_the_nuclei_and_the_bar_shows_g_and_d(tiny_data, tmp_path,
                                                                                                   capsys, one_thread):
    gen = build_generator("pix2pix", "tiny-nuclei")
    gen.train(tiny_data, {"steps": 2, "heterogeneity": None, "progress": True}, out=tmp_path / "model")
    bar = capsys.readouterr().err
    assert all(f" {name}=" in bar for name in ("g", "d", "g_gan", "g_l1", "d_fake", "d_real")), bar[-500:]
    assert gen.conditioner.channels == 5 + 6  # simulator-tissue one-hot + pannuke centroid maps
    assert gen.generator_net.config.in_channels == 11 and gen.discriminator_net.config.in_channels == 14
    out = gen.sample(tiny_data[:2], seed=3)
    for o, c in zip(out, tiny_data[:2], strict=True):
        assert np.array_equal(o.nuclei.centroids, c.nuclei.centroids) and o.nuclei.schema == c.nuclei.schema
        assert np.array_equal(o.tissue, c.tissue)
    again = load_generator(tmp_path / "model").sample(tiny_data[:2], seed=3)
    assert all(a.equals(b) for a, b in zip(out, again, strict=True))
    with pytest.raises(InputError, match="no nuclei"):
        gen.sample([Sample(image=c.image, tissue=c.tissue, tissue_schema=c.tissue_schema, provenance=c.provenance)
                    for c in tiny_data[:1]], seed=0)


def test_bad_conditions_and_training_data_are_clear_errors(tiny_data, tmp_path, capsys, one_thread):
    check_bad_inputs("pix2pix", tiny_data, tmp_path, capsys)




def test_a_sigkilled_training_resumes_to_the_uninterrupted_bytes(tmp_path, one_thread, capsys):
    """See gan_checks.check_sigkill_resume (one thread: the thread count changes float sums)."""
    check_sigkill_resume("pix2pix", tmp_path, capsys)


@pytest.mark.slow
def test_the_paper_preset_builds_and_trains_a_step_at_256_px(one_thread):
    data = list(build_source("simulator", n=2, size=256, seed=0, mpp=0.5))
    gen = build_generator("pix2pix", "paper", num_classes=5)
    g, d = gen.generator_net, gen.discriminator_net
    assert g.config.num_downs == 8 and g.config.base_channels == 64 and d.config.channels == 64
    assert sum(p.numel() for p in g.parameters()) > 50e6  # unet_256 with 5 input channels: 54.4M
    report = gen.train(data, {"steps": 1, "batch_size": 1, **NO_RULE})
    assert np.isfinite(report.losses).all()
    out = gen.sample(data[:1], seed=0)
    assert out[0].image.shape == (256, 256, 3) and np.array_equal(out[0].tissue, data[0].tissue)
