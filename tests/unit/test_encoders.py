"""Encoder registry: cheap listing, preprocessing, random builds of every encoder, real EfficientNet-Lite0 weights
(weight files and their loading: test_encoder_weights.py)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from encoder_zoo import center_square, images, module_zoo, natural_pair
from numerics import EPS32, float32_rounding

from histosynth.benchmark.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    EncoderMeta,
    PreprocessSpec,
    load_encoder,
    preprocess,
    preprocess_groups,
)
from histosynth.benchmark.encoders.inputs import as_nchw_uint8
from histosynth.benchmark.encoders.weights import read_state_dict

CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def zoo():
    yield from module_zoo()


def encoder_params() -> list:
    return [
        pytest.param(entry.name, marks=[pytest.mark.slow] if entry.target.heavy else [])  # type: ignore[union-attr]
        for entry in ENCODERS.entries()
    ]


# ---- registry and metadata ---------------------------------------------------------------------------------------


def test_listing_the_registry_does_not_import_torch():
    code = (
        "import json, sys\n"
        "from histosynth.benchmark.encoders import ENCODERS\n"
        "rows = [{'name': e.name, 'summary': e.summary, 'meta': e.target.to_dict()} for e in ENCODERS.entries()]\n"
        "heavy = [m for m in ('torch', 'timm', 'huggingface_hub') if m in sys.modules]\n"
        "print(json.dumps({'rows': rows, 'heavy': heavy}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    names = {row["name"] for row in result["rows"]}
    required = {"effnet-lite0", "inception", "uni", "uni2-h", "phikon", "h-optimus-0", "virchow2"}
    required |= {"lunit-bt-rn50", "lunit-dino-vits16"} | {f"dinov2-vit{s}14" for s in "sblg"}
    assert required <= names
    assert all(row["meta"]["license"] and row["meta"]["citation"] for row in result["rows"])


def test_metadata_is_complete_and_consistent():
    assert DEFAULT_ENCODER == "effnet-lite0" and DEFAULT_ENCODER in ENCODERS
    for entry in ENCODERS.entries():
        meta = entry.target
        assert isinstance(meta, EncoderMeta) and meta.name == entry.name
        assert meta.weights_source and meta.loader.startswith("histosynth.benchmark.encoders.")
        hash(meta.preprocess)  # group key
    gated = {e.name for e in ENCODERS.entries() if e.target.gated}  # type: ignore[union-attr]
    assert gated == {"uni", "uni2-h", "virchow2"}
    assert ENCODERS.get("virchow2").feature_dim == 2560
    assert tuple(ENCODERS.get("lunit-bt-rn50").mean) == (0.70322989, 0.53606487, 0.66096631)  # the same literals
    with pytest.raises(ValueError, match="mean and std"):
        EncoderMeta(**{**ENCODERS.get("uni").to_dict(), "name": "bad", "mean": None})


def test_preprocess_groups_share_one_spec():
    groups = preprocess_groups(["uni", "dinov2-vits14", "effnet-lite0", "inception", "phikon", "virchow2"])
    assert groups[ENCODERS.get("virchow2").preprocess] == ["dinov2-vits14", "virchow2"]  # ImageNet, 224, bicubic
    assert groups[ENCODERS.get("uni").preprocess] == ["uni", "phikon"]  # ImageNet, 224, bilinear
    assert groups[PreprocessSpec(kind="uint8")] == ["inception"]
    assert len(groups) == 4


# ---- preprocessing -----------------------------------------------------------------------------------------------


def test_preprocess_layouts_sizes_and_normalization():
    batch = images(3, 64)
    spec = ENCODERS.get("effnet-lite0").preprocess
    nhwc = preprocess(batch, spec)
    nchw = preprocess(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)), spec)
    assert nhwc.shape == (3, 3, 224, 224) and nhwc.dtype == torch.float32
    assert torch.equal(nhwc, nchw)
    assert float(nhwc.min()) >= -1.0 and float(nhwc.max()) <= 1.0  # bicubic overshoot clipped to the uint8 range
    at_size = images(1, 256)  # already at the resize side 224 / 0.875: only the center crop [16, 240)
    expected = torch.from_numpy(at_size[:, 16:240, 16:240]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    # two routes of <= 3 float32 roundings each, of values <= 1 in magnitude: EPS32/2 per rounding
    assert torch.allclose(preprocess(at_size, spec), expected, atol=3 * EPS32, rtol=0)
    raw = preprocess(batch, PreprocessSpec(kind="uint8"))
    assert raw.dtype == torch.uint8 and raw.shape == (3, 3, 64, 64)
    with pytest.raises(TypeError, match="uint8"):
        as_nchw_uint8(batch.astype(np.float32))
    with pytest.raises(ValueError, match="channel axis"):
        as_nchw_uint8(np.zeros((2, 3, 8, 3), np.uint8))


def _config_of(meta: EncoderMeta) -> dict:
    """The preprocessing config an encoder declares it follows: timm's pretrained_cfg where it names one (read from
    the installed timm, which needs no download), else the catalog's own record of its model card."""
    if meta.pretrained_cfg:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(meta.pretrained_cfg)
        assert cfg is not None, meta.pretrained_cfg
        assert cfg.crop_mode == "center"
        return {"interpolation": cfg.interpolation, "crop_pct": cfg.crop_pct, "mean": cfg.mean, "std": cfg.std}
    assert meta.preprocess_source, f"{meta.name}: no pretrained_cfg and no preprocess_source"
    return {"interpolation": meta.resize, "crop_pct": meta.crop_pct, "mean": meta.mean, "std": meta.std}


@pytest.mark.parametrize("name", [e.name for e in ENCODERS.entries()])
def test_preprocess_does_what_the_encoders_own_config_says(name):
    meta = ENCODERS.get(name)
    batch = images(2, 96, seed=3)
    if meta.input_kind == "uint8":
        assert torch.equal(preprocess(batch, meta.preprocess), as_nchw_uint8(batch))
        return
    cfg = _config_of(meta)
    assert (meta.resize, meta.crop_pct, tuple(meta.mean), tuple(meta.std)) == (
        cfg["interpolation"], cfg["crop_pct"], tuple(cfg["mean"]), tuple(cfg["std"]))
    # timm's eval transform: resize the short side to floor(size / crop_pct) with the config's filter, then
    # torchvision's CenterCrop (offset round((side - size) / 2)), ToTensor and Normalize
    side = math.floor(meta.input_size / cfg["crop_pct"])
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(side, side), mode=cfg["interpolation"], antialias=True, align_corners=False)
    top = int(round((side - meta.input_size) / 2.0))
    x = x.round().clamp(0, 255)[..., top : top + meta.input_size, top : top + meta.input_size]
    mean, std = (torch.tensor(cfg[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std"))
    expected = (x / 255.0 - mean) / std
    # the same uint8-grid values, normalized in another order: <= 3 float32 roundings of values <= |expected|
    atol = 3 * EPS32 * float(expected.abs().max())
    assert torch.allclose(preprocess(batch, meta.preprocess), expected, atol=atol, rtol=0)


@pytest.mark.parametrize("name", [e.name for e in ENCODERS.entries() if e.target.pretrained_cfg])  # type: ignore[union-attr]
def test_preprocess_crops_as_timms_own_transform(name):
    """At the resize side neither resizes, so the crop and normalization must equal timm's create_transform."""
    from PIL import Image
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    meta = ENCODERS.get(name)
    cfg = get_pretrained_cfg(meta.pretrained_cfg).to_dict()
    cfg["input_size"] = (3, meta.input_size, meta.input_size)  # DINOv2's config is for 518 px; built here at 224
    transform = create_transform(**resolve_data_config({}, pretrained_cfg=cfg))
    batch = images(2, meta.preprocess.resize_to, seed=5)
    expected = torch.stack([transform(Image.fromarray(image)) for image in batch])
    atol = 3 * EPS32 * float(expected.abs().max())  # ToTensor + Normalize vs one fused step: float32 roundings
    assert torch.allclose(preprocess(batch, meta.preprocess), expected, atol=atol, rtol=0)


def test_crop_pct_enters_the_preprocess_key_only_when_it_crops():
    assert "crop0.875" in ENCODERS.get("effnet-lite0").preprocess.key
    assert "crop" not in ENCODERS.get("uni").preprocess.key  # unchanged keys: cached features stay valid
    assert ENCODERS.get("effnet-lite0").preprocess.resize_to == 256
    with pytest.raises(ValueError, match="crop_pct"):
        EncoderMeta(**{**ENCODERS.get("uni").to_dict(), "name": "bad", "crop_pct": 0.0})


# ---- every encoder builds at random ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", encoder_params())
def test_encoder_builds_at_random_with_the_declared_contract(zoo, name):
    meta = ENCODERS.get(name)
    if meta.heavy:  # not cached: these hold GBs
        encoder = load_encoder(name, pretrained=False)
        features = encoder.encode(natural_pair())
    else:
        encoder, features = zoo.encoder(name), zoo.features_of(name)
    assert encoder.meta is meta and encoder.weights_fingerprint == "random-init"
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
    assert features.shape == (2, meta.feature_dim) and features.dtype == torch.float32
    assert torch.isfinite(features).all()


def test_encode_equals_preprocess_then_forward(zoo):
    encoder = zoo.encoder("effnet-lite0")
    batch = images(3, 64)
    x = preprocess(batch, encoder.meta.preprocess)
    tol = 3 * float32_rounding(encoder, x)  # batch of 3 vs batches of 2 and 1: float32 summation order only
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder.encode(batch, batch_size=2), atol=tol, rtol=0)


def test_encode_at_another_input_size_is_the_resized_spec(zoo):
    """`encode(size=)` (the pseudo-labeler's --input-size) prepares inputs by `input_spec(size)`."""
    from dataclasses import replace

    encoder = zoo.encoder("effnet-lite0")
    spec = encoder.input_spec(64)
    assert spec == replace(encoder.meta.preprocess, size=64) and encoder.input_spec() == encoder.meta.preprocess
    batch = images(2, 48)
    with torch.no_grad():  # one batch either way: the same operations in the same order, so bit-identical
        assert torch.equal(encoder(preprocess(batch, spec)), encoder.encode(batch, size=64))
    with pytest.raises(ValueError, match="resizes its input itself"):
        zoo.encoder("inception").input_spec(64)


def test_encode_without_the_crop_resizes_the_whole_tile(zoo):
    """`crop=False` (tiles of a larger field) keeps the filter, mean and std and resizes the whole image."""
    from dataclasses import replace

    encoder = zoo.encoder("effnet-lite0")
    whole = encoder.input_spec(crop=False)
    assert whole == replace(encoder.meta.preprocess, crop_pct=1.0) and whole.resize_to == 224
    assert encoder.input_spec(64, crop=False) == replace(whole, size=64)
    vits = zoo.encoder("dinov2-vits14")
    assert vits.input_spec(crop=False) == vits.meta.preprocess  # crop_pct 1: nothing to drop
    batch = images(2, 48)
    with torch.no_grad():
        assert torch.equal(encoder(preprocess(batch, whole)), encoder.encode(batch, crop=False))


def test_random_builds_are_seeded_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = load_encoder("lunit-dino-vits16", pretrained=False, seed=5)
    after = torch.rand(1)
    assert torch.equal(before, after)
    second = load_encoder("lunit-dino-vits16", pretrained=False, seed=5)
    for a, b in zip(first.parameters(), second.parameters(), strict=False):
        assert torch.equal(a, b)


def test_random_inception_features_do_not_vanish(zoo):
    features = zoo.features_of("inception").double()  # Kaiming init; PyTorch's default init gives ~1e-8 here
    assert features.std(dim=1).min() > 0.05
    assert (features[0] - features[1]).norm() > 0.05 * features.norm(dim=1).mean()


# ---- real weights: EfficientNet-Lite0 from the installed package -------------------------------------------------


def test_effnet_lite0_real_weights_classify_real_images():
    from skimage import data

    encoder = load_encoder("effnet-lite0")
    assert encoder.weights_fingerprint.startswith("sha256:")
    head = read_state_dict(encoder.weights_file)
    weight, bias = head["_fc.weight"], head["_fc.bias"]  # the package's ImageNet classifier
    batch = np.stack([center_square(data.chelsea()), center_square(data.coffee())[:300, :300]])
    probs = (encoder.encode(batch) @ weight.T + bias).softmax(dim=1)
    cat, coffee = probs.argmax(dim=1).tolist()
    assert cat in CAT_CLASSES and coffee == ESPRESSO
    assert float(probs[0, sorted(CAT_CLASSES)].sum()) > 0.6 and float(probs[1, ESPRESSO]) > 0.6
