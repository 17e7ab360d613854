"""SPADE/GauGAN (histosynth.baselines.spade) on the shared GAN base (histosynth.baselines.gan).

The generic contract runs in test_generators_contract.py (-k spade). Here: SPADE modulates by the map where the map
is (and nowhere else), the reference layout (GauGAN "normal" at 256 px, 2-scale 4-layer discriminator), the hinge and
feature-matching losses on known answers, the VGG loss only from a named weights file, learning and following
held-out simulator maps, exact resume after a SIGKILL of `histosynth train`, the G and D losses on the progress bar,
and clear errors for bad input.
"""


import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from gan_checks import assert_class_color_order, check_bad_inputs, check_sigkill_resume

import histosynth.cli as cli
from histosynth.baselines.spade import Spade
from histosynth.baselines.spade.nets import (
    SpadeDiscriminatorNet,
    SpadeGeneratorNet,
    feature_matching,
    hinge_d,
    hinge_g,
)
from histosynth.disk import iter_samples
from histosynth.errors import InputError
from histosynth.generators import build_generator, load_generator
from histosynth.sources import build_source

NO_RULE = {"heterogeneity": None, "progress": False}


@pytest.fixture(scope="module")
def tiny_data():
    return list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))


def test_spade_modulates_the_normalized_features_only_where_the_map_changed():
    torch.manual_seed(0)
    spade = SpadeGeneratorNet(5, 32, 16, 3, 32, 0).head_0.norm_0  # 3x3 shared conv, then 3x3 gamma / beta convs
    for conv in spade.modules():  # default-scale weights, so the modulation is far above float noise
        if isinstance(conv, torch.nn.Conv2d):
            torch.nn.init.normal_(conv.weight, std=0.3)
    x = torch.randn(1, 64, 16, 16)
    a = torch.zeros(1, 5, 16, 16)
    a[:, 1] = 1.0
    b = a.clone()
    b[:, :, 6:10, 6:10] = 0.0
    b[:, 3, 6:10, 6:10] = 1.0  # a 4 x 4 square of class 3 instead of 1
    with torch.no_grad():
        changed = (spade(x, a) - spade(x, b)).abs().amax(dim=(0, 1))
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:12, 4:12] = True  # the square grown by 2 px: two stacked 3x3 convs see 2 px around a pixel
    assert torch.equal(changed[~inside], torch.zeros_like(changed[~inside]))
    assert (changed[6:10, 6:10] > 0.1).all()
    with torch.no_grad():  # and it does modulate: the output is not the plain instance-normalized input
        assert (spade(x, a) - F.instance_norm(x)).abs().mean() > 0.1


def test_the_paper_generator_is_gaugan_normal_from_an_8_by_8_map():
    m = Spade.get_preset("paper").model
    with torch.device("meta"):  # the layout without allocating 94M weights
        g = SpadeGeneratorNet(5, m.resolution, m.ngf, m.upsampling_count, m.spade_hidden, m.z_dim, m.spectral)
    assert g.start == 8 and g.config.ngf == 64 and g.config.spade_hidden == 128
    blocks = [g.head_0, g.middle_0, g.middle_1, *g.ups]
    assert [(b.in_channels, b.out_channels) for b in blocks] == [
        (1024, 1024), (1024, 1024), (1024, 1024), (1024, 512), (512, 256), (256, 128), (128, 64)]  # head, G_middle, up_0..3
    assert all(b.norm_0.shared[0].out_channels == 128 for b in blocks)
    assert all(hasattr(b.conv_0, "parametrizations") and hasattr(b.conv_1, "parametrizations") for b in blocks)
    assert hasattr(g.ups[0].conv_s, "parametrizations") and not hasattr(g.head_0, "conv_s")  # shortcut iff widths change


def test_the_discriminator_has_two_scales_of_four_layers_the_second_on_the_pooled_pair():
    d = SpadeDiscriminatorNet(in_channels=8, ndf=64).eval()
    x = torch.randn(1, 8, 64, 64)
    with torch.no_grad():
        out = d(x)
        second = d.scales[1](F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    assert len(out) == 2 and all(len(scale) == 5 for scale in out)  # 4 hidden layers + the patch logits
    assert [t.shape[1] for t in out[0]] == [64, 128, 256, 512, 1]
    assert torch.equal(out[1][-1], second[-1])
    strides = [m.stride[0] for m in d.scales[0].modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [2, 2, 2, 1, 1]


def test_hinge_and_feature_matching_give_the_reference_values():
    zeros = [[torch.zeros(2, 3, 4, 4), torch.zeros(2, 1, 5, 5)] for _ in range(2)]
    assert hinge_d(zeros, real=True) == 1.0 and hinge_d(zeros, real=False) == 1.0  # relu(1 -+ 0)
    confident = [[torch.zeros(1), torch.full((2, 1, 5, 5), 2.0)], [torch.zeros(1), torch.full((2, 1, 3, 3), 2.0)]]
    assert hinge_d(confident, real=True) == 0.0 and hinge_d(confident, real=False) == 3.0
    assert hinge_g(confident) == -2.0
    ones = [[torch.ones(2, 3, 4, 4), torch.ones(2, 1, 5, 5)] for _ in range(2)]
    # one hidden layer per scale, L1 = 1 each: 2 scales x 1 x 10 / 2
    assert feature_matching(zeros, ones) == pytest.approx(10.0)
    assert feature_matching(zeros, zeros) == 0.0


def test_the_vgg_loss_is_off_by_default_and_loads_only_a_named_file(tiny_data, tmp_path):
    gen = build_generator("spade", "tiny")
    assert gen.model.vgg_weights is None
    gen.train(tiny_data, {"steps": 1, **NO_RULE})
    assert "g_vgg" not in gen.train_report.extra["loss_means"]
    assert any("VGG perceptual loss off" in line for line in gen.card_details())

    missing = build_generator("spade", "tiny", vgg_weights=str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="nowhere.*VGG19 weights file not found"):
        missing.train(tiny_data, {"steps": 1, **NO_RULE}, out=tmp_path / "model")
    assert not (tmp_path / "model").exists()

    torch.manual_seed(0)  # a VGG19 with random weights stands in for the ImageNet file (same layout)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg19-dcbb9e9d.pth")
    gen = build_generator("spade", "tiny", vgg_weights=str(tmp_path))
    gen.train(tiny_data, {"steps": 1, **NO_RULE})
    assert gen.train_report.extra["loss_means"]["g_vgg"] > 0
    assert any("VGG perceptual loss on" in line for line in gen.card_details())


def test_spade_learns_and_follows_held_out_maps(one_thread):
    train = list(build_source("simulator", n=24, size=32, seed=0, mpp=4.0))
    held = list(build_source("simulator", n=12, size=32, seed=1, mpp=4.0))  # maps never trained on
    gen = build_generator("spade", "tiny", num_classes=5)

    def paired_l1() -> float:
        return float(np.mean([np.abs(o.image.astype(float) - h.image.astype(float)).mean()
                              for o, h in zip(gen.sample(held, seed=0), held, strict=True)]))

    untrained = paired_l1()
    # At the presets' TTUR rates (G 1e-4, D 4e-4) SPADE's modulation convs, initialized at xavier gain 0.02 as the
    # reference's, need a few hundred steps to follow the map; this short run takes both rates x10 (same ratio).
    gen.train(train, {"steps": 100, "lr": 1e-3, "lr_d": 4e-3, **NO_RULE})
    assert paired_l1() < 0.7 * untrained  # measured 71 -> 33 levels (36 with training seed 1)

    assert_class_color_order(gen, held)
    # The noise vector matters: two seeds give two images for one map.
    a, b = gen.sample(held[:1], seed=[1]), gen.sample(held[:1], seed=[2])
    assert np.abs(a[0].image.astype(int) - b[0].image.astype(int)).mean() > 0.5


def test_the_progress_bar_shows_the_g_and_d_losses(tiny_data, capsys):
    build_generator("spade", "tiny").train(tiny_data, {"steps": 2, "heterogeneity": None, "progress": True})
    bar = capsys.readouterr().err
    assert all(f" {name}=" in bar for name in ("g", "d", "g_gan", "g_feat", "d_fake", "d_real")), bar[-500:]


def test_bad_conditions_settings_and_training_data_are_clear_errors(tiny_data, tmp_path, capsys):
    with pytest.raises(InputError, match="power of two"):
        build_generator("spade", "tiny", resolution=48)
    with pytest.raises(InputError, match="discriminator needs patches larger than 16 px"):
        build_generator("spade", "tiny", resolution=16)
    check_bad_inputs("spade", tiny_data, tmp_path, capsys)


def test_a_loaded_model_gives_the_bits_of_the_saved_one(tiny_data, tmp_path):
    """Spectral norm's matrix-vector product depends on memory alignment; loading realigns every tensor."""
    gen = build_generator("spade", "tiny")
    gen.train(tiny_data, {"steps": 2, **NO_RULE}, out=tmp_path / "model")
    loaded = load_generator(tmp_path / "model")
    assert all(p.data_ptr() % 64 == 0 for p in loaded.generator_net.parameters())
    seg = torch.zeros(4, 5, 32, 32)
    seg[:, 2] = 1.0
    z = torch.randn(4, gen.model.z_dim)
    with torch.no_grad():
        assert torch.equal(gen.generator_net(seg, z), loaded.generator_net(seg, z))


def test_a_sigkilled_training_resumes_to_the_uninterrupted_bytes(tmp_path, one_thread, capsys):
    """See gan_checks.check_sigkill_resume; spectral-norm vectors are part of D's saved state."""
    killed = check_sigkill_resume("spade", tmp_path, capsys)

    # and the resumed model generates through the CLI: new images, the conditions' maps copied
    out = tmp_path / "generated"
    assert cli.main(["generate", "spade", "--checkpoint", str(killed), "--conditions", str(tmp_path / "data"),
                     "--n", "3", "--out", str(out)]) == 0
    samples, conditions = list(iter_samples(out)), list(iter_samples(tmp_path / "data"))
    assert len(samples) == 3 and all(s.provenance.generator == "spade" for s in samples)
    assert all(np.array_equal(s.tissue, c.tissue) and not np.array_equal(s.image, c.image)
               for s, c in zip(samples, conditions, strict=False))


@pytest.mark.slow
@pytest.mark.parametrize(("preset", "size", "upsamplings", "params"), [("demo", 64, 4, (5e6, 15e6)),
                                                                      ("paper", 256, 5, (85e6, 100e6))])
def test_the_demo_and_paper_presets_build_and_train_a_step(preset, size, upsamplings, params):
    data = list(build_source("simulator", n=2, size=size, seed=0, mpp=0.5))
    gen = build_generator("spade", preset, num_classes=5)
    g, d = gen.generator_net, gen.discriminator_net
    assert g.config.upsamplings == upsamplings and d.config.num_d == 2 and d.config.layers == 4
    assert params[0] < sum(p.numel() for p in g.parameters()) < params[1]  # paper: GauGAN "normal" G, 94.5M with 5 classes and z 256
    report = gen.train(data, {"steps": 1, "batch_size": 1, **NO_RULE})
    assert np.isfinite(report.losses).all() and set(report.extra["loss_means"]) >= {"g_gan", "g_feat", "d_fake"}
    out = gen.sample(data[:1], seed=0)
    assert out[0].image.shape == (size, size, 3) and np.array_equal(out[0].tissue, data[0].tissue)
