"""HoVer-Net models and loss: output contract of each preset, the loss terms against hand-computed values (MSGE in
the paper's and the legacy direction), and a tiny model learning exact disc targets on CPU."""

import math

import numpy as np
import pytest
import torch
from numerics import EPS64, gamma

from histosynth.benchmark.downstream.hovernet import (
    HOVER_PRESETS,
    build_hovernet,
    gradient_kernels,
    hover_loss,
    msge_loss,
)
from histosynth.benchmark.segmenter import build_segmenter, to_input
from histosynth.errors import InputError, UnknownNameError

K = 4  # background + 3 nucleus types


@pytest.mark.parametrize("preset", ["tiny", "demo"])
def test_unet_presets_split_their_channels_into_three_heads_at_input_size(preset):
    model = build_hovernet(preset, K, pretrained=False).eval()
    with torch.inference_mode():
        out = model(torch.zeros(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"np": (2, 2, 64, 96), "hv": (2, 2, 64, 96),
                                                          "nc": (2, K, 64, 96)}
    assert sorted(HOVER_PRESETS) == ["demo", "paper", "tiny"]


def test_tiny_preset_encoder_carries_the_offline_lite0_weights():
    mine = build_hovernet("tiny", K).net.encoder.model.state_dict()
    reference = build_segmenter(3).encoder.model.state_dict()  # the 288/288 strict load, tested in test_segmenter
    assert len(mine) == len(reference) == 288
    assert all(torch.equal(mine[name], reference[name]) for name in reference)
    random = build_hovernet("tiny", K, pretrained=False).net.encoder.model.state_dict()
    assert not torch.equal(random["conv_stem.weight"], reference["conv_stem.weight"])


def test_bad_presets_and_arguments_are_refused():
    with pytest.raises(UnknownNameError, match="did you mean 'tiny'"):
        build_hovernet("tinny", K)
    with pytest.raises(InputError, match="num_types=1"):
        build_hovernet("tiny", 1, pretrained=False)
    with pytest.raises(InputError, match="no offline encoder weights"):
        build_hovernet("paper", K, weights="resnet50.pth")
    hv = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="'paper' or 'legacy'"):
        msge_loss(hv, hv, torch.ones(1, 8, 8), msge="transposed")
    outputs = {"np": torch.zeros(1, 2, 8, 8), "hv": hv, "nc": torch.zeros(1, K, 8, 8)}
    targets = {"np": torch.zeros(1, 8, 8), "hv": hv, "nc": torch.full((1, 8, 8), K)}
    with pytest.raises(ValueError, match=f"NC targets hold ids {K}..{K}, outside 0..{K - 1}"):
        hover_loss(outputs, targets)


def test_gradient_kernel_has_the_hand_counted_gain_of_12_on_a_ramp():
    kx, ky = (k[0, 0] for k in gradient_kernels(dtype=torch.float64))
    d = torch.arange(-2, 3, dtype=torch.float64)
    # Σ dx²/(dx²+dy²) over the 5x5 window: columns dx=±1 give 1 + 2/2 + 2/5 = 2.4, dx=±2 give 1 + 2·4/5 + 2/2 = 3.6;
    # 2·2.4 + 2·3.6 = 12. A 25-term float64 sum of once-rounded entries: γ_50.
    assert float((kx * d[None, :]).sum()) == pytest.approx(12.0, rel=gamma(50))
    assert torch.equal(ky, kx.T)
    assert float((kx * d[:, None]).sum()) == pytest.approx(0.0, abs=gamma(50) * 12)  # no response across


def _ramp_pair(size: int, radius: float, swapped: bool) -> torch.Tensor:
    """[x-map, y-map] of one nucleus centered mid-image with slope 1/radius: (x - c)/R and (y - c)/R, or the two
    coordinates swapped (x-map varying along y only), in float64 so the bound below is plain summation."""
    c = (size - 1) / 2
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    a, b = (x - c) / radius, (y - c) / radius
    return torch.stack([b, a] if swapped else [a, b])[None]


@pytest.mark.parametrize("swapped", [False, True])
def test_msge_paper_and_legacy_directions_on_a_radial_target(swapped):
    size, radius = 16, 6.0
    target = _ramp_pair(size, radius, swapped)
    focus = torch.zeros(1, size, size)
    focus[:, 2:-2, 2:-2] = 1  # the 5x5 window stays inside the image: no zero padding in the sums
    pred = torch.zeros_like(target)
    paper = float(msge_loss(pred, target, focus, "paper"))
    legacy = float(msge_loss(pred, target, focus, "legacy"))
    # Paper's eq. 3 by hand: each map's own-direction gradient is 12/R at every focus pixel, the cross one 0, so
    # (1/m)Σ(12/R)² + (1/m)Σ(12/R)² = 2·144/R² where the map varies along its own axis, 0 where it does not.
    g = 12 / radius
    expected_paper, expected_legacy = (0.0, 2 * g * g) if swapped else (2 * g * g, 0.0)
    assert paper != legacy
    # Rounding: a 25-term float64 correlation with kernel entries rounded once errs by ε <= γ_27 Σ|k| max|f|;
    # a square then moves by <= (2g + ε)ε, and the focus mean of 2m squares adds γ_2m of (g + ε)².
    m = int(focus.sum())
    kx = gradient_kernels(dtype=torch.float64)[0]
    eps = gamma(27) * float(kx.abs().sum()) * float(target.abs().max())
    bound = 2 * ((2 * g + eps) * eps + gamma(2 * m) * (g + eps) ** 2)
    assert paper == pytest.approx(expected_paper, abs=bound)
    assert legacy == pytest.approx(expected_legacy, abs=bound)


def test_msge_is_zero_without_nuclei_and_for_a_perfect_prediction():
    target = _ramp_pair(12, 4.0, False)
    assert float(msge_loss(torch.zeros_like(target), target, torch.zeros(1, 12, 12))) == 0.0
    assert float(msge_loss(target.clone(), target, torch.ones(1, 12, 12))) == 0.0


def test_loss_terms_of_uniform_logits_match_hand_computed_values():
    rng = np.random.default_rng(0)
    b, h, w = 2, 12, 10
    nc = torch.from_numpy(rng.integers(0, K, (b, h, w)))
    nc[..., :3] = 0
    np_t = (nc > 0).long()
    hv_t = torch.from_numpy(rng.uniform(-1, 1, (b, 2, h, w)))
    outputs = {"np": torch.zeros(b, 2, h, w, dtype=torch.float64), "hv": hv_t.clone(),
               "nc": torch.zeros(b, K, h, w, dtype=torch.float64)}
    terms = hover_loss(outputs, {"np": np_t, "hv": hv_t, "nc": nc})

    def dice(labels: torch.Tensor, k: int) -> float:
        # Softmax of equal logits is 1/k everywhere: class c has |P∩T| = n_c/k, |P| = N/k, |T| = n_c; s = 1e-3.
        n, s = labels.numel(), 1e-3
        return sum(1 - (2 * int((labels == c).sum()) / k + s) / (n / k + int((labels == c).sum()) + s)
                   for c in range(k))

    n = b * h * w
    tol = gamma(4 * n)  # float64 sums over the N pixels (log-softmax, one-hot products), a few ops per pixel
    assert float(terms["np_ce"]) == pytest.approx(math.log(2), rel=tol)
    assert float(terms["nc_ce"]) == pytest.approx(math.log(K), rel=tol)
    assert float(terms["np_dice"]) == pytest.approx(dice(np_t, 2), abs=2 * tol)
    assert float(terms["nc_dice"]) == pytest.approx(dice(nc, K), abs=K * tol)
    assert float(terms["hv_mse"]) == 0.0 and float(terms["hv_msge"]) == 0.0
    weighted = (terms["np_ce"] + terms["np_dice"] + terms["hv_mse"] + 2 * terms["hv_msge"] + terms["nc_ce"]
                + terms["nc_dice"])  # the paper's λ: 2 on the MSGE, 1 elsewhere
    assert float(terms["loss"]) == pytest.approx(float(weighted), rel=gamma(6, EPS64))


def _disc_sample(rng: np.random.Generator, size: int = 64, count: int = 5):
    """An image of non-touching discs colored by type on a pink background, with its exact HoVer-Net targets:
    NP the disc pixels, NC the type, HV the distance to the disc's center of mass scaled to [-1, 1] per side."""
    colors = {1: (90, 40, 140), 2: (40, 40, 90), 3: (150, 60, 120)}
    yy, xx = np.mgrid[:size, :size]
    instances = np.zeros((size, size), np.int32)
    types: list[int] = []
    while len(types) < count:
        r = int(rng.integers(4, 8))
        cx, cy = rng.integers(r + 1, size - r - 1, 2)
        if (instances[(xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 2) ** 2] > 0).any():
            continue  # keep a 2 px gap: no touching discs
        types.append(int(rng.integers(1, K)))
        instances[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = len(types)
    image = np.full((size, size, 3), (230, 180, 210), np.float64)
    nc = np.zeros((size, size), np.int64)
    hv = np.zeros((2, size, size), np.float32)
    for k, kind in enumerate(types, start=1):
        ys, xs = np.nonzero(instances == k)
        image[ys, xs] = colors[kind]
        nc[ys, xs] = kind
        for channel, offset in enumerate((xs - xs.mean(), ys - ys.mean())):
            scaled = np.zeros_like(offset)
            scaled[offset < 0] = offset[offset < 0] / -offset.min()
            scaled[offset > 0] = offset[offset > 0] / offset.max()
            hv[channel, ys, xs] = scaled
    image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
    return image, (nc > 0).astype(np.int64), hv, nc


def _constant_prediction(targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image-blind prediction matched to the batch: class priors as logits, the mean HV everywhere."""
    b, h, w = targets["np"].shape

    def prior(labels: torch.Tensor, k: int) -> torch.Tensor:
        counts = torch.bincount(labels.flatten(), minlength=k).double()
        return (counts / counts.sum()).clamp_min(1e-6).log().view(1, k, 1, 1).expand(b, k, h, w)

    hv = targets["hv"].double().mean((0, 2, 3)).view(1, 2, 1, 1).expand(b, 2, h, w)
    return {"np": prior(targets["np"], 2), "hv": hv, "nc": prior(targets["nc"], K)}


def test_tiny_preset_learns_exact_disc_targets_on_cpu():
    rng = np.random.default_rng(0)
    samples = [_disc_sample(rng) for _ in range(4)]
    x = to_input(np.stack([s[0] for s in samples]))
    targets = {name: torch.from_numpy(np.stack([s[i] for s in samples])) for i, name in
               enumerate(("np", "hv", "nc"), start=1)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_hovernet("tiny", K).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(20):
        loss = hover_loss(model(x), targets)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.inference_mode():
        final = hover_loss(model.eval()(x), targets)["loss"].item()
    blind = hover_loss(_constant_prediction(targets), targets)["loss"].item()
    # Learning, not luck: the loss falls to a quarter of its start within 20 steps, and below what the best-fitting
    # constant prediction scores (its MSGE is the targets' own gradient energy: no constant map has gradients).
    assert final <= 0.25 * losses[0]
    assert final < blind


@pytest.mark.slow
def test_paper_preset_runs_at_256_px_and_answers_164_px():
    model = build_hovernet("paper", K).eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 256, 256))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"np": (1, 2, 164, 164), "hv": (1, 2, 164, 164),
                                                          "nc": (1, K, 164, 164)}
    spec = HOVER_PRESETS.get("paper")
    assert (spec.input_px, spec.output_px) == (256, 164)
    # 256 px targets are center-cropped to the outputs by the loss.
    targets = {"np": torch.zeros(1, 256, 256, dtype=torch.long), "hv": torch.zeros(1, 2, 256, 256),
               "nc": torch.zeros(1, 256, 256, dtype=torch.long)}
    assert torch.isfinite(hover_loss(out, targets)["loss"])
