"""`Encoder`: a feature network with its metadata and weight provenance, and `load_encoder` to build one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from histosynth.benchmark.encoders.inputs import Layout, preprocess
from histosynth.benchmark.encoders.meta import EncoderMeta, PreprocessSpec
from histosynth.benchmark.encoders.weights import describe_weights, resolve_weights, weights_fingerprint
from histosynth.errors import InputError
from histosynth.registry import import_target


def _contiguous_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for name, param in module.named_parameters(recurse=False):
        if param.dim() == 4:
            state_dict[prefix + name] = state_dict[prefix + name].contiguous()


class Encoder(nn.Module):
    """A frozen feature extractor.

    Contract: `encoder(x)` takes `preprocess(images, encoder.meta.preprocess)` (on the encoder's device) and
    returns float32 features (N, meta.feature_dim). `encoder.encode(uint8_images)` does both steps in batches;
    a feature pipeline serving several encoders preprocesses once per distinct `meta.preprocess` instead.
    """

    def __init__(self, meta: EncoderMeta, network: nn.Module, weights_file: Path | None = None,
                 user_weights: bool = False) -> None:
        super().__init__()
        self.meta = meta
        # NHWC convolution weights: oneDNN then keeps activations NHWC and skips a reorder per layer (1.3-1.8x on
        # 2 CPU cores for InceptionV3, EfficientNet and ResNet-50; features equal to float32 rounding; perf/RESULTS.md)
        # State dicts still hold contiguous (NCHW) tensors, as weight files and safetensors expect.
        self.network = network.eval().requires_grad_(False).to(memory_format=torch.channels_last)
        for module in self.network.modules():
            if any(p.dim() == 4 for p in module.parameters(recurse=False)):
                module.register_state_dict_post_hook(_contiguous_state)
        self.weights_file = weights_file
        self.user_weights = user_weights  # the file was given by the user, not found by the catalog's rules
        self._fingerprint: str | None = None
        self.train(False)

    @property
    def device(self) -> torch.device:
        for tensor in self.network.parameters():
            return tensor.device
        return torch.device("cpu")  # a parameter-free network (test doubles) runs on the CPU

    @property
    def backbone(self) -> nn.Module:
        """The network inside any pooling wrapper: its state dict has the layout a weight file for it has."""
        return getattr(self.network, "core", self.network)

    @property
    def weights_fingerprint(self) -> str:
        """'sha256:<hex>' of the loaded weight file, or 'random-init' (computed on first use, then cached)."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.weights_file)
        return self._fingerprint

    def provenance(self) -> dict[str, str]:
        """What to record next to results computed with this encoder."""
        return {
            "encoder": self.meta.name,
            "arch": self.meta.arch,
            "weights": self.weights_fingerprint,
            "weights_source": describe_weights(self.meta, self.weights_file, self.user_weights, self.weights_fingerprint),
            "preprocess": self.meta.preprocess.key,
            "licence": self.meta.license,  # persisted: the results files' field (schema v2); renaming it changes their bytes
        }

    def train(self, mode: bool = True) -> Encoder:
        """Encoders stay in eval mode (batch-norm statistics and dropout are frozen)."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network(x)
        if features.ndim != 2 or features.shape[1] != self.meta.feature_dim:
            raise RuntimeError(
                f"encoder {self.meta.name!r} returned shape {tuple(features.shape)}, "
                f"expected (N, {self.meta.feature_dim})"
            )
        return features.float()

    def input_spec(self, size: int | None = None, crop: bool = True) -> PreprocessSpec:
        """The preprocessing `encode(..., size=size, crop=crop)` applies: the encoder's own, or with its side set to
        `size` (faster, less accurate; float specs only, since a "uint8" encoder resizes its input itself).
        `crop=False` resizes the whole image to the side instead of center-cropping (for tiles of a larger field,
        whose borders a crop would drop)."""
        spec = self.meta.preprocess
        if size is None and (crop or spec.crop_pct == 1.0):
            return spec
        if spec.kind != "float":
            raise InputError(f"encoder {self.meta.name!r} resizes its input itself; an input size does not apply")
        return replace(spec, size=int(size) if size is not None else spec.size, crop_pct=spec.crop_pct if crop else 1.0)

    @torch.inference_mode()
    def encode(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 32, layout: Layout = "auto",
        size: int | None = None, crop: bool = True,
    ) -> torch.Tensor:
        """Features (N, feature_dim) float32 on CPU for a uint8 RGB batch (NHWC or NCHW), prepared by
        `input_spec(size, crop)`."""
        spec = self.input_spec(size, crop)
        n = images.shape[0] if images.ndim == 4 else 1
        if images.ndim == 3:
            images = images[None]
        chunks = [
            self(preprocess(images[start : start + batch_size], spec, self.device, layout)).cpu()
            for start in range(0, n, batch_size)
        ]
        if not chunks:
            return torch.empty(0, self.meta.feature_dim)
        return torch.cat(chunks)


def load_encoder(
    name: str | EncoderMeta,
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    token: str | None = None,
    pretrained: bool = True,
    seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Encoder:
    """Build encoder `name` (a registry name or an `EncoderMeta`).

    Weights come from `weights` (a local file or folder), else the HF / torch-hub cache or installed package,
    else a download unless HF_HUB_OFFLINE is set; missing weights raise `EncoderWeightsError` before the
    (possibly slow) network is built. `pretrained=False` builds the same architecture with random weights drawn
    from `seed` (the global RNG is left untouched) for tests.
    """
    from histosynth.benchmark.encoders import ENCODERS

    meta = ENCODERS.get(name) if isinstance(name, str) else name
    if not pretrained and weights is not None:
        raise ValueError("pass either pretrained=False or weights=..., not both")
    weights_file = resolve_weights(meta, weights, token=token, cache_dir=cache_dir) if pretrained else None
    build = import_target(meta.loader)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build(meta, weights_file)  # type: ignore[operator]
    return Encoder(meta, network, weights_file, user_weights=weights is not None).to(device)
