"""Masked LPIPS: checked against the lpips package itself (same random backbone), per mode."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
import torch
from numerics import float32_rounding

from histosynth.benchmark.lpips_masked import (
    BACKBONE_FILES,
    MIN_SIZE,
    MODES,
    LPIPSWeightsError,
    MaskedLPIPS,
    grow_span,
    masked_lpips,
)

SIZE = 64


@cache
def metric(net: str = "alex") -> MaskedLPIPS:
    torch.manual_seed(0)
    return MaskedLPIPS(net=net, pnet_rand=True)


def _inputs(a: np.ndarray, b: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(v).permute(0, 3, 1, 2).float() / 127.5 - 1.0 for v in (a, b))


def rounding(a: np.ndarray, b: np.ndarray, net: str = "alex", spatial: bool = False) -> float:
    """3x the lpips network's measured float32 rounding on these images: the tolerance between two float32 routes
    that differ in summation order (masking, batching, cropping); see numerics.float32_rounding."""
    model = metric(net).lpips
    model.spatial = spatial
    try:
        return 3 * float32_rounding(model, *_inputs(a, b))
    finally:
        model.spatial = False


def plain(a: np.ndarray, b: np.ndarray, net: str = "alex", spatial: bool = False) -> torch.Tensor:
    """The lpips package's own forward on the same network (spatial=True: the mean of its distance map)."""
    model = metric(net).lpips
    x0, x1 = _inputs(a, b)
    model.spatial = spatial
    try:
        with torch.no_grad():
            out = model(x0, x1)
    finally:
        model.spatial = False
    return out.mean(dim=(1, 2, 3))


def pair(n: int = 3, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    noise = rng.integers(-60, 61, a.shape)
    return a, np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)


def full(n: int, size: int = SIZE) -> np.ndarray:
    return np.ones((n, size, size), bool)


def test_full_mask_layer_masked_and_bbox_crop_equal_plain_lpips():
    a, b = pair()
    expected, tol = plain(a, b), rounding(a, b)
    for mode in ("layer-masked", "bbox-crop"):
        assert torch.allclose(metric()(a, b, full(3), mode=mode), expected, atol=tol, rtol=0), mode
    metric().layer_mask = "nearest"  # public MaskedLPIPS code's mask resize; same value on a full mask
    try:
        assert torch.allclose(metric()(a, b, full(3), mode="layer-masked"), expected, atol=tol, rtol=0)
    finally:
        metric().layer_mask = "area"


def test_full_mask_spatial_mean_is_the_mean_of_lpips_spatial_map():
    a, b = pair()
    value = metric()(a, b, full(3), mode="spatial-mean")
    tol = rounding(a, b, spatial=True)  # the map's rounding bounds its mean's
    assert torch.allclose(value, plain(a, b, spatial=True), atol=tol, rtol=0)
    # AlexNet's 15x15 conv1 map is upsampled to 64 px by a non-integer factor, so this is close to plain LPIPS,
    # not equal; with VGG (64/32/16/8/4 px maps: integer factors) it is equal, checked below. Bound: the upsampled
    # mean weights input pixel i by w_i (Σ w_i = 1), and the layer maps are >= 0, so each layer's mean moves by at
    # most max_i |n·w_i - 1| of itself; the weights come from upsampling each basis map.
    model = metric().lpips
    x0, x1 = _inputs(a, b)
    with torch.no_grad():
        _, per_layer = model(x0, x1, retPerLayer=True)
        sizes = [f.shape[-1] for f in model.net.forward(model.scaling_layer(x0))]
    skew = []
    for s in sizes:
        basis = torch.eye(s * s, dtype=torch.float64).reshape(s * s, 1, s, s)
        weights = torch.nn.functional.interpolate(basis, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
        skew.append(float((weights.mean(dim=(1, 2, 3)) * s * s - 1).abs().max()))
    bound = sum(k * layer.flatten() for k, layer in zip(skew, per_layer, strict=False)) + tol
    assert torch.all((value - plain(a, b)).abs() <= bound)


def test_full_mask_spatial_mean_equals_plain_lpips_for_vgg():
    a, b = pair(2, size=32)  # VGG maps are 32/16/8/4/2 px: integer upsampling factors preserve the mean
    value = metric("vgg")(a, b, full(2, size=32), mode="spatial-mean")
    tol = rounding(a, b, net="vgg", spatial=True)
    assert torch.allclose(value, plain(a, b, net="vgg"), atol=tol, rtol=0)


@pytest.mark.parametrize("mode", MODES)
def test_values_are_per_sample_and_independent_of_batch_size(mode):
    a, b = pair(5, seed=1)
    rng = np.random.default_rng(2)
    masks = np.zeros((5, SIZE, SIZE), bool)
    for i in range(5):
        r, c = rng.integers(0, SIZE - 40, 2)
        masks[i, r : r + 20 + 4 * i, c : c + 40] = True
    whole = metric()(a, b, masks, mode=mode, batch_size=5)
    assert whole.shape == (5,) and whole.dtype == torch.float32
    tol = rounding(a, b, spatial=True)  # on the whole map: a bound for any masked mean of it
    for batch_size in (1, 2):
        assert torch.allclose(metric()(a, b, masks, mode=mode, batch_size=batch_size), whole, atol=tol, rtol=0)
    order = [3, 0, 4, 1, 2]
    assert torch.allclose(metric()(a[order], b[order], masks[order], mode=mode), whole[order], atol=tol, rtol=0)
    single = torch.cat([metric()(a[i : i + 1], b[i : i + 1], masks[i : i + 1], mode=mode) for i in range(5)])
    assert torch.allclose(single, whole, atol=tol, rtol=0)


def test_differences_outside_the_mask():
    """bbox-crop ignores them exactly; the other modes see them only through receptive fields (attenuated)."""
    a, other = pair(3, seed=3)
    b = a.copy()
    b[:, :, SIZE // 2 :] = other[:, :, SIZE // 2 :]  # identical on the left half, different on the right
    left = np.zeros((3, SIZE, SIZE), bool)
    left[:, :, : SIZE // 2] = True
    crop = (slice(None), slice(None), slice(0, SIZE // 2))
    assert torch.all(metric()(a, b, left, mode="bbox-crop").abs() <= rounding(a[crop], b[crop]))  # identical crops
    for mode in ("layer-masked", "spatial-mean"):
        leaked = metric()(a, b, left, mode=mode)
        seen = metric()(a, b, ~left, mode=mode)
        assert torch.all(leaked > 0), mode  # deep AlexNet features at the left see the right half
        assert torch.all(leaked < 0.5 * seen), mode


def test_bbox_crop_of_a_small_mask_grows_to_the_backbones_minimum():
    assert grow_span(5, 8, 31, 64) == (0, 31)
    assert grow_span(60, 63, 31, 64) == (33, 64)
    assert grow_span(10, 50, 31, 64) == (10, 50)
    a, b = pair(1, seed=4)
    mask = np.zeros((1, SIZE, SIZE), bool)
    mask[0, 40:43, 60:63] = True
    value = metric()(a, b, mask, mode="bbox-crop")
    crop = (slice(None), slice(26, 57), slice(33, 64))
    assert torch.allclose(value, plain(a[crop], b[crop]), atol=rounding(a[crop], b[crop]), rtol=0)
    assert MIN_SIZE["alex"] == 31
    with pytest.raises(ValueError, match="at least 31x31"):
        metric()(a[:, :30, :30], b[:, :30, :30], mask[:, :30, :30] | True, mode="bbox-crop")


def test_bad_inputs_give_clear_errors():
    a, b = pair(3)
    masks = full(3)
    masks[1] = False
    with pytest.raises(ValueError, match=r"empty mask for sample\(s\) \[1\]"):
        metric()(a, b, masks)
    with pytest.raises(ValueError, match="unknown masked-LPIPS mode"):
        metric()(a, b, full(3), mode="gap")
    with pytest.raises(ValueError, match="shapes differ"):
        metric()(a, b, full(2))


def test_missing_backbone_weights_name_the_file(monkeypatch, tmp_path, network_attempts):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(LPIPSWeightsError) as caught:
        MaskedLPIPS("alex")
    assert network_attempts == []  # fails at once: no download was tried, so no retry loop can run
    name, url = BACKBONE_FILES["alex"]
    assert name in str(caught.value) and url in str(caught.value) and "backbone=" in str(caught.value)
    with pytest.raises(LPIPSWeightsError, match="vgg16-397923af.pth"):
        MaskedLPIPS("vgg", backbone=tmp_path)


def test_local_backbone_file_and_torch_hub_cache_are_used(monkeypatch, tmp_path):
    from torchvision.models import alexnet

    torch.manual_seed(1)
    features = alexnet().features.state_dict()
    file = tmp_path / "hub" / "checkpoints" / BACKBONE_FILES["alex"][0]
    file.parent.mkdir(parents=True)
    torch.save({f"features.{k}": v for k, v in features.items()}, file)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from_cache = MaskedLPIPS("alex")
    assert from_cache.backbone_file == file
    own = from_cache.lpips.net.state_dict()
    assert torch.equal(own["slice1.0.weight"], features["0.weight"])
    assert torch.equal(own["slice5.10.bias"], features["10.bias"])
    a, b = pair(1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    from_path = masked_lpips(a, b, full(1), backbone=file)  # an explicit file needs no cache
    # the same weights and computation; any kernel nondeterminism stays within the float32 rounding (numerics)
    tol = 3 * float32_rounding(from_cache.lpips, *_inputs(a, b))
    assert np.allclose(from_path, from_cache(a, b, full(1)).numpy(), atol=tol, rtol=0)
