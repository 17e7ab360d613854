"""Encoder registry: cheap listing, random builds of every encoder, real EfficientNet-Lite0 weights, weight files."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from functools import cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numerics import EPS32, float32_rounding

from histosynth.benchmark.encoders import (
    DEFAULT_ENCODER,
    ENCODERS,
    EncoderMeta,
    EncoderWeightsError,
    PreprocessSpec,
    load_encoder,
    preprocess,
    preprocess_groups,
    weights_fingerprint,
)
from histosynth.benchmark.encoders.inputs import as_nchw_uint8
from histosynth.benchmark.encoders.weights import read_state_dict, resolve_weights

FAKE_TOKEN = "hf_" + "fakeTOKEN0123456789abcdefghijklmnop"  # two parts: the source holds no token-shaped string
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
ESPRESSO = 967


def images(n: int = 2, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random uint8 NHWC images (distinct per index)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, size // 8, size // 8, 3)).astype(np.uint8)
    return np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)


def center_square(image: np.ndarray) -> np.ndarray:
    h, w, _ = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


@cache
def natural_pair() -> np.ndarray:
    """Two real photographs (skimage's chelsea and coffee): center squares resized to 96 px, NHWC uint8."""
    from skimage import data
    from skimage.transform import resize

    crops = [center_square(data.chelsea()), center_square(data.coffee())]
    return np.stack([(resize(c, (96, 96), anti_aliasing=True) * 255).round().astype(np.uint8) for c in crops])


class Zoo:
    """Seeded random encoders and their features on `natural_pair()`, built once per module."""

    def __init__(self) -> None:
        self.encoders: dict[str, torch.nn.Module] = {}
        self.features: dict[str, torch.Tensor] = {}

    def encoder(self, name: str):
        if name not in self.encoders:
            self.encoders[name] = load_encoder(name, pretrained=False, seed=0)
        return self.encoders[name]

    def features_of(self, name: str) -> torch.Tensor:
        if name not in self.features:
            self.features[name] = self.encoder(name).encode(natural_pair())
        return self.features[name]


@pytest.fixture(scope="module")
def zoo():
    """Shared across this module's tests, then released (ViT-B encoders hold hundreds of MB)."""
    shared = Zoo()
    yield shared
    shared.encoders.clear()
    shared.features.clear()


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


# ---- weight resolution -------------------------------------------------------------------------------------------


@pytest.fixture
def offline_empty_caches(monkeypatch, tmp_path):
    """Offline, a fake token in the environment, and empty HF / torch hub caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "hf"


@pytest.mark.parametrize(
    "name, names_source",
    [
        ("uni", "MahmoodLab/UNI"),
        ("virchow2", "paige-ai/Virchow2"),
        ("dinov2-vits14", "timm/vit_small_patch14_dinov2.lvd142m"),
        ("inception", "weights-inception-2015-12-05-6726825d.pth"),
        ("lunit-bt-rn50", "bt_rn50_ep200.torch"),
    ],
)
def test_missing_weights_fail_fast_offline_with_one_clear_error(offline_empty_caches, capsys, network_attempts, name,
                                                              names_source):
    meta = ENCODERS.get(name)
    with pytest.raises(EncoderWeightsError) as caught:
        load_encoder(name, cache_dir=offline_empty_caches)
    assert network_attempts == []  # fails at once: no download was tried, so no retry loop can run
    message = str(caught.value)
    assert names_source in message and meta.license in message and "HF_HUB_OFFLINE" in message
    assert "weights=" in message  # the local-path way out
    if meta.gated:
        assert "gated" in message and "huggingface-cli login" in message
    assert FAKE_TOKEN not in message and FAKE_TOKEN not in "".join(capsys.readouterr())
    assert caught.value.__cause__ is None


def test_token_is_scrubbed_from_download_errors(monkeypatch, tmp_path, capsys, caplog):
    import huggingface_hub

    def failing_download(repo_id, filename, **kwargs):
        raise RuntimeError(f"401 for {repo_id}/{filename} with Authorization: Bearer {kwargs.get('token')}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing_download)
    with pytest.raises(EncoderWeightsError) as caught:
        resolve_weights(ENCODERS.get("uni"), cache_dir=tmp_path)
    message = str(caught.value)
    assert "MahmoodLab/UNI" in message and "download failed" in message and "***" in message
    assert FAKE_TOKEN not in message and caught.value.__cause__ is None
    assert FAKE_TOKEN not in "".join(capsys.readouterr()) + caplog.text


def test_explicit_path_that_does_not_exist_names_it(tmp_path):
    with pytest.raises(EncoderWeightsError, match="does not exist"):
        load_encoder("phikon", weights=tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="not both"):
        load_encoder("phikon", weights=tmp_path, pretrained=False)


@pytest.mark.parametrize("name, file_name", [("effnet-lite0", "w.pth"), ("lunit-dino-vits16", "w.torch")])
def test_local_weight_file_round_trips(zoo, tmp_path, name, file_name):
    source = zoo.encoder(name)
    path = tmp_path / file_name
    torch.save(source.backbone.state_dict(), path)
    loaded = load_encoder(name, weights=path)
    batch = images(2, 64, seed=1)
    assert torch.equal(loaded.encode(batch), source.encode(batch))
    assert loaded.weights_fingerprint == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_local_folder_with_safetensors_loads_through_timms_filter(zoo, tmp_path):
    from safetensors.torch import save_file

    source = zoo.encoder("dinov2-vits14")
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, tmp_path / "model.safetensors")
    loaded = load_encoder("dinov2-vits14", weights=tmp_path)  # a folder: the candidate file name is found
    assert loaded.weights_file == tmp_path / "model.safetensors"
    assert_same_weights(loaded.backbone, source.backbone)


def test_dinov2_checkpoint_at_518_px_is_resampled_to_224(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    native = timm.create_model("vit_small_patch14_dinov2", img_size=518, num_classes=0, weight_init="reset")
    state = {k: v.contiguous() for k, v in native.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors")
    loaded = load_encoder("dinov2-vits14", weights=tmp_path / "model.safetensors").backbone.state_dict()
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384) and loaded["pos_embed"].shape == (1, 1 + 16 * 16, 384)
    assert torch.equal(loaded["pos_embed"][:, 0], state["pos_embed"][:, 0])  # the class-token slot is kept
    assert all(torch.equal(loaded[k], state[k]) for k in state if k != "pos_embed")


def test_local_inception_file_is_loaded_the_torch_fidelity_way(zoo, tmp_path):
    source = zoo.encoder("inception")
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(source.backbone.state_dict(), path)
    loaded = load_encoder("inception", weights=tmp_path)  # built by FeatureExtractorInceptionV3(weights_path=...)
    assert type(loaded.backbone).__name__ == "FeatureExtractorInceptionV3"
    assert_same_weights(loaded.backbone, source.backbone)


def test_weights_that_do_not_fit_give_a_clear_error(zoo, tmp_path):
    state = dict(zoo.encoder("lunit-dino-vits16").backbone.state_dict())
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(EncoderWeightsError, match=r"missing \['norm.weight'\].*unexpected \['extra.weight'\]"):
        load_encoder("lunit-dino-vits16", weights=tmp_path / "w.pth")


def test_weights_fingerprint(tmp_path):
    assert weights_fingerprint(None) == "random-init"
    path = tmp_path / "w.bin"
    path.write_bytes(b"abc")
    assert weights_fingerprint(path) == "sha256:" + hashlib.sha256(b"abc").hexdigest()
    blob = tmp_path / "blobs" / ("0" * 64)  # HF cache blobs are named by their sha256: not re-read
    blob.parent.mkdir()
    blob.write_bytes(b"not hashed")
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    assert weights_fingerprint(link) == "sha256:" + "0" * 64


# ---- Phikon: transformers ViTModel checkpoints map onto timm ------------------------------------------------------


LEGACY_RENAMES = [  # transformers-5 ViTModel names -> the transformers-4 names that checkpoints on the Hub use
    ("attention.q_proj", "attention.attention.query"),
    ("attention.k_proj", "attention.attention.key"),
    ("attention.v_proj", "attention.attention.value"),
    ("attention.o_proj", "attention.output.dense"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
]


def legacy_hf_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers-5 ViTModel state dict under transformers-4 (Hub checkpoint) names."""
    out = {}
    for key, value in state.items():
        if key.startswith("layers."):
            key = "encoder.layer." + key[len("layers.") :]
            for new, old in LEGACY_RENAMES:
                key = key.replace(new, old)
        out[key] = value
    return out


def timm_to_legacy_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of the loader's mapping, written independently (split qkv), for a Hub-layout Phikon file."""
    top = {"cls_token": "embeddings.cls_token", "pos_embed": "embeddings.position_embeddings",
           "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
           "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
           "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias"}
    block = {"norm1": "layernorm_before", "norm2": "layernorm_after", "attn.proj": "attention.output.dense",
             "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    out = {"pooler.dense.weight": torch.zeros(768, 768), "pooler.dense.bias": torch.zeros(768)}
    for key, value in state.items():
        if key in top:
            out[top[key]] = value
            continue
        _, index, rest = key.split(".", 2)
        part, leaf = rest.rsplit(".", 1)
        prefix = f"encoder.layer.{index}."
        if part == "attn.qkv":
            for name, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=False):
                out[f"{prefix}attention.attention.{name}.{leaf}"] = chunk.clone()
        else:
            out[f"{prefix}{block[part]}.{leaf}"] = value
    return out


def test_transformers_vit_checkpoint_maps_onto_timm():
    from functools import partial

    import timm

    transformers = pytest.importorskip("transformers")  # present through peft; only this test needs it
    from histosynth.benchmark.encoders.loaders import hf_vit_to_timm

    config = transformers.ViTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32, patch_size=16
    )
    torch.manual_seed(0)
    reference = transformers.ViTModel(config).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state[:, 0]

    class ClassToken(torch.nn.Module):
        def __init__(self, vit: torch.nn.Module) -> None:
            super().__init__()
            self.vit = vit

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.vit(pixel_values=pixels).last_hidden_state[:, 0]

    reference_rounding = float32_rounding(ClassToken(reference), x)
    for state in (reference.state_dict(), legacy_hf_names(reference.state_dict())):
        model = timm.create_model(
            "vit_base_patch16_224", pretrained=False, num_classes=0, img_size=32, embed_dim=64, depth=2,
            num_heads=4, mlp_ratio=2, norm_layer=partial(torch.nn.LayerNorm, eps=config.layer_norm_eps),
        ).eval()
        model.load_state_dict(hf_vit_to_timm(state), strict=True)
        # two float32 implementations of the same math, each within its measured float32 rounding (numerics)
        tol = 3 * max(reference_rounding, float32_rounding(model, x))
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=tol, rtol=0)


def test_phikon_loads_a_hub_layout_folder_with_its_config(zoo, tmp_path):
    from safetensors.torch import save_file

    source = zoo.encoder("phikon")
    save_file(timm_to_legacy_hf(source.backbone.state_dict()), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"layer_norm_eps": 1e-6}))
    loaded = load_encoder("phikon", weights=tmp_path)
    assert_same_weights(loaded.backbone, source.backbone)
    assert {m.eps for m in loaded.backbone.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    assert {m.eps for m in source.backbone.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-12}


def test_hf_vit_mapping_rejects_unknown_names():
    from histosynth.benchmark.encoders.loaders import hf_vit_to_timm

    with pytest.raises(ValueError, match="unexpected"):
        hf_vit_to_timm({"encoder.layer.0.attention.attention.rotary.weight": torch.zeros(1)})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["uni", "uni2-h", "h-optimus-0", "virchow2", "dinov2-vitg14"])
def test_heavy_timm_checkpoints_load_by_name(monkeypatch, tmp_path, name):
    """A timm-layout checkpoint of each big ViT (register tokens, no_embed_class, SwiGLU) passes timm's filter and
    the strict load; the file read is replaced by the in-memory state dict to spare GBs of disk."""
    from histosynth.benchmark.encoders import loaders

    source = load_encoder(name, pretrained=False, seed=1)
    state = source.backbone.state_dict()
    monkeypatch.setattr(loaders, "read_state_dict", lambda path, meta=None: state)
    dummy = tmp_path / "pytorch_model.bin"
    dummy.write_bytes(b"")
    loaded = load_encoder(name, weights=dummy)
    assert_same_weights(loaded.backbone, source.backbone)


@pytest.mark.skipif(not os.environ.get("HISTOSYNTH_REAL_ENCODERS"), reason="needs real gated weights in the HF cache")
@pytest.mark.slow
@pytest.mark.parametrize("name", ["uni", "uni2-h", "virchow2", "h-optimus-0", "phikon", "dinov2-vitl14"])
def test_real_weights_from_the_hf_cache(name):
    encoder = load_encoder(name)
    features = encoder.encode(images(2, 224))
    assert features.shape == (2, encoder.meta.feature_dim) and torch.isfinite(features).all()
