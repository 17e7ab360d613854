"""Encoder weights: missing weights fail fast offline with one clear error (no token leaks), explicit files and
folders load (timm, torch-fidelity and transformers ViT layouts), and the weights fingerprint."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch
from encoder_zoo import images, module_zoo
from numerics import float32_rounding

from histosynth.benchmark.encoders import ENCODERS, EncoderWeightsError, load_encoder, weights_fingerprint
from histosynth.benchmark.encoders.weights import resolve_weights

FAKE_TOKEN = "hf_" + "fakeTOKEN0123456789abcdefghijklmnop"  # two parts: the source holds no token-shaped string


@pytest.fixture(scope="module")
def zoo():
    yield from module_zoo()


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
