"""Builders: `build_x(meta, weights_file) -> torch.nn.Module`, one per architecture family.

Each returns a network that maps `preprocess(images, meta.preprocess)` to (N, meta.feature_dim) features. With
`weights_file=None` the architecture is built with random weights (the caller seeds the RNG); otherwise the file's
tensors are loaded strictly, after the family's key conversion. Networks are returned in eval mode.
"""

from __future__ import annotations

import io
import json
import re
from functools import partial
from pathlib import Path

import torch
from torch import nn

from histosynth.benchmark.encoders.meta import EncoderMeta
from histosynth.benchmark.encoders.weights import EncoderWeightsError, read_state_dict

# ---- shared pieces ---------------------------------------------------------------------------------------------


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], meta: EncoderMeta, source: Path) -> None:
    """Load `state` into `model`, turning any name or shape mismatch into one `EncoderWeightsError`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{label} {names[:5]}{' ...' if len(names) > 5 else ''} ({len(names)})"
            for label, names in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if names
        )
        raise EncoderWeightsError(f"encoder {meta.name!r}: {source} does not fit {meta.arch}: {detail}")
    model.load_state_dict(state, strict=True)


def kaiming_init_(model: nn.Module) -> nn.Module:
    """Re-initialize every convolution with Kaiming-normal (fan-in, ReLU) and zero bias; batch norms to identity.

    Random InceptionV3 with PyTorch's default init gives vanishing pool3 features (FID ~1e-16 for any pair);
    this keeps activations O(1) so random-weight tests see distinct, non-degenerate features.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_parameters()
            module.reset_running_stats()
    return model


class FirstOutput(nn.Module):
    """Wraps a network returning a tuple of features and returns the first one.

    Wrappers keep the wrapped network as `core`: its state dict has the weight file's layout.
    """

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core(x)[0]


class ClsMeanPatchTokens(nn.Module):
    """concat(CLS token, mean of patch tokens) from a timm ViT's final-norm tokens; register tokens excluded."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.core.forward_features(x)
        patches = tokens[:, self.core.num_prefix_tokens :]
        return torch.cat([tokens[:, 0], patches.mean(dim=1)], dim=-1)


def _vit_init(weights_file: Path | None) -> str:
    """timm ViT `weight_init`: "skip" before a strict load (every tensor is overwritten), else "reset": PyTorch's
    per-layer default init plus timm's token init. timm's default trunc-normal pass costs seconds per ViT-B on CPU
    and buys nothing for random-weight tests."""
    return "skip" if weights_file is not None else "reset"


def _timm_vit(meta: EncoderMeta, weights_file: Path | None, **kwargs: object) -> nn.Module:
    """A timm ViT without classifier, loading a timm-format (or original DINOv2) checkpoint through timm's filter."""
    import timm
    from timm.models.vision_transformer import checkpoint_filter_fn

    kwargs["weight_init"] = _vit_init(weights_file)
    model = timm.create_model(meta.arch_id, pretrained=False, num_classes=0, **kwargs)
    if weights_file is not None:
        state = read_state_dict(weights_file, meta)
        state = checkpoint_filter_fn(state, model)  # resamples pos_embed to the model's grid, converts DINOv2 names
        if isinstance(getattr(model, "head", None), nn.Identity):
            state = {k: v for k, v in state.items() if not k.startswith("head.")}
        load_strict(model, state, meta, weights_file)
    return model.eval()


# ---- EfficientNet-Lite0 ----------------------------------------------------------------------------------------


def load_in_order(model: nn.Module, state: dict[str, torch.Tensor], meta: EncoderMeta, source: Path) -> None:
    """Load tensors by position (names differ between implementations), checking count and every shape."""
    own = model.state_dict()
    if len(own) != len(state):
        raise EncoderWeightsError(
            f"encoder {meta.name!r}: {source} has {len(state)} tensors, {meta.arch} has {len(own)}"
        )
    mapped = {}
    for (name, mine), (theirs_name, theirs) in zip(own.items(), state.items(), strict=False):
        if mine.shape != theirs.shape:
            raise EncoderWeightsError(
                f"encoder {meta.name!r}: tensor {theirs_name} {tuple(theirs.shape)} of {source} does not fit "
                f"{name} {tuple(mine.shape)}"
            )
        mapped[name] = theirs
    model.load_state_dict(mapped, strict=True)


def build_effnet_lite0(meta: EncoderMeta, weights_file: Path | None, with_classifier: bool = False) -> nn.Module:
    """timm tf_efficientnet_lite0 (1280-d pooled features; the 1000-class head only with `with_classifier`).

    The package's file (its own tensor names) loads tensor-for-tensor in order, classifier included; a file
    with timm's names (e.g. a saved `Encoder.backbone.state_dict()`) loads by name, with or without classifier.
    """
    import timm

    model = timm.create_model(meta.arch_id, pretrained=False, num_classes=1000)
    if weights_file is not None:
        state = read_state_dict(weights_file, meta)
        if "conv_stem.weight" in state:
            if "classifier.weight" not in state:
                if with_classifier:
                    raise EncoderWeightsError(f"encoder {meta.name!r}: {weights_file} has no classifier")
                model.reset_classifier(0)
            load_strict(model, state, meta, weights_file)
        else:
            load_in_order(model, state, meta, weights_file)
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval()


# ---- InceptionV3 (torch-fidelity) -------------------------------------------------------------------------------


def _random_inception(features: list[str]) -> nn.Module:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class RandomInceptionV3(FeatureExtractorInceptionV3):
        """torch-fidelity's network; its constructor's load of an empty state dict is skipped (no download)."""

        def load_state_dict(self, state_dict, strict=True, assign=False):  # type: ignore[no-untyped-def, override]
            if not state_dict:
                return None
            return super().load_state_dict(state_dict, strict=strict, assign=assign)

    empty = io.BytesIO()
    torch.save({}, empty)
    empty.seek(0)
    return RandomInceptionV3("inception-v3-compat", features, feature_extractor_weights_path=empty)


def build_inception(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """torch-fidelity's FID InceptionV3 returning pool3 (2048); takes uint8 NCHW and resizes to 299 itself.

    With a weights file it is built exactly as torch-fidelity builds it for FID (`feature_extractor_weights_path`),
    so features equal torch-fidelity's; at random, convolutions are Kaiming-initialized (see `kaiming_init_`).
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    if weights_file is None:
        network = kaiming_init_(_random_inception(["2048"]))
    else:
        read_state_dict(weights_file, meta)  # torch-fidelity unpickles with weights_only=False: vet the file first
        try:
            network = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_file)
            )
        except Exception as error:
            raise EncoderWeightsError(
                f"encoder {meta.name!r}: {weights_file} is not torch-fidelity's InceptionV3 state dict "
                f"({type(error).__name__}: {error})"
            ) from None
    return FirstOutput(network).eval()


# ---- ViTs --------------------------------------------------------------------------------------------------------


def build_dinov2(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """timm DINOv2 ViT at meta.input_size (the 518 px position embedding is resampled once at load)."""
    return _timm_vit(meta, weights_file, img_size=meta.input_size)


def build_uni(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """UNI: timm vit_large_patch16_224 with LayerScale (init_values=1e-5), as its model card."""
    return _timm_vit(meta, weights_file, img_size=224, init_values=1e-5, dynamic_img_size=True)


UNI2_H_KWARGS: dict[str, object] = {
    "img_size": 224,
    "patch_size": 14,
    "depth": 24,
    "num_heads": 24,
    "init_values": 1e-5,
    "embed_dim": 1536,
    "mlp_ratio": 2.66667 * 2,
    "no_embed_class": True,
    "reg_tokens": 8,
    "dynamic_img_size": True,
}


def build_uni2_h(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """UNI2-h: the model card's timm kwargs (SwiGLUPacked MLP, SiLU, 8 register tokens, no_embed_class)."""
    from timm.layers import SwiGLUPacked

    return _timm_vit(meta, weights_file, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, **UNI2_H_KWARGS)


def build_h_optimus_0(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """H-optimus-0: timm vit_giant_patch14_reg4_dinov2 at 224 px with init_values=1e-5."""
    return _timm_vit(meta, weights_file, img_size=224, init_values=1e-5, dynamic_img_size=False)


VIRCHOW2_KWARGS: dict[str, object] = {
    "img_size": 224,
    "init_values": 1e-5,
    "reg_tokens": 4,
    "mlp_ratio": 5.3375,
    "global_pool": "",
    "dynamic_img_size": True,
}


def build_virchow2(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """Virchow2 (config.json args + SwiGLUPacked/SiLU); embedding = concat(CLS, mean patch tokens) -> 2560."""
    from timm.layers import SwiGLUPacked

    vit = _timm_vit(meta, weights_file, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU, **VIRCHOW2_KWARGS)
    return ClsMeanPatchTokens(vit).eval()


def build_lunit_vit_small(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """Lunit DINO ViT-S/16: Lunit's checkpoint is a timm VisionTransformer(num_classes=0) state dict."""
    return _timm_vit(meta, weights_file)


def build_lunit_resnet50(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """Lunit Barlow Twins ResNet-50: torchvision's ResNet-50 with the fc removed (Lunit's `ResNetTrunk`)."""
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    model.fc = nn.Identity()
    if weights_file is not None:
        load_strict(model, read_state_dict(weights_file, meta), meta, weights_file)
    return model.eval()


# ---- Phikon (transformers ViTModel checkpoint -> timm) ----------------------------------------------------------

# Block tensors of a transformers ViTModel, in the layout of checkpoints on the Hub (transformers 4:
# "encoder.layer.{i}.attention.attention.query") and of transformers 5 ("layers.{i}.attention.q_proj").
_HF_VIT_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "attention.o_proj": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_HF_VIT_QKV = {
    "attention.attention.query": "q",
    "attention.attention.key": "k",
    "attention.attention.value": "v",
    "attention.q_proj": "q",
    "attention.k_proj": "k",
    "attention.v_proj": "v",
}
_HF_VIT_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_VIT_LAYER = re.compile(r"^(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$")


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers `ViTModel` state dict (either layout) to timm `VisionTransformer` names.

    q, k, v are concatenated into timm's qkv; the pooler and mask token are dropped (the CLS token of
    last_hidden_state is the feature). An unknown name raises, so a different layout cannot load silently wrong.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for name, tensor in state.items():
        key = name[len("vit.") :] if name.startswith("vit.") else name
        if key.startswith("pooler.") or key == "embeddings.mask_token":
            continue
        if key in _HF_VIT_TOP:
            out[_HF_VIT_TOP[key]] = tensor
            continue
        match = _HF_VIT_LAYER.match(key)
        if match is None or (match[2] not in _HF_VIT_BLOCK and match[2] not in _HF_VIT_QKV):
            raise ValueError(f"unexpected transformers ViT tensor {name!r}")
        index, part, leaf = int(match[1]), match[2], match[3]
        if part in _HF_VIT_QKV:
            qkv.setdefault((index, leaf), {})[_HF_VIT_QKV[part]] = tensor
        else:
            out[f"blocks.{index}.{_HF_VIT_BLOCK[part]}.{leaf}"] = tensor
    for (index, leaf), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"block {index}: incomplete q/k/v {leaf} tensors")
        out[f"blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def _layer_norm_eps(weights_file: Path | None, default: float = 1e-12) -> float:
    """`layer_norm_eps` from the config.json beside the weights (HF snapshot or local folder), else `default`."""
    if weights_file is None:
        return default
    config = weights_file.parent / "config.json"
    try:
        return float(json.loads(config.read_text(encoding="utf-8")).get("layer_norm_eps", default))
    except (OSError, ValueError):
        return default


def build_phikon(meta: EncoderMeta, weights_file: Path | None) -> nn.Module:
    """Phikon (iBOT ViT-B/16) as timm vit_base_patch16_224; the HF ViTModel checkpoint is renamed on load.

    transformers is not needed (it is only an indirect dependency here, through peft).
    """
    import timm

    eps = _layer_norm_eps(weights_file)
    model = timm.create_model(
        meta.arch_id,
        pretrained=False,
        num_classes=0,
        img_size=224,
        norm_layer=partial(nn.LayerNorm, eps=eps),
        weight_init=_vit_init(weights_file),
    )
    if weights_file is not None:
        state = read_state_dict(weights_file, meta)
        try:
            if "pos_embed" not in state:  # a transformers checkpoint; a timm-format one loads as is
                state = hf_vit_to_timm(state)
        except ValueError as error:
            raise EncoderWeightsError(f"encoder {meta.name!r}: {weights_file}: {error}") from None
        load_strict(model, state, meta, weights_file)
    return model.eval()
