"""HTD's two ablations (the paper's first and middle rows) as registered generators.

- `htd-unconditional`: the same diffusion backbone with no condition (no ControlNet); outputs carry no labels.
- `htd-embedding`: each class crop is replaced by a frozen encoder's embedding of that crop (effnet-lite0 by
  default, histosynth.benchmark.encoders), projected by a learned linear layer to a few channels and broadcast
  over the class region; the ControlNet sees concat(one-hot M, broadcast embeddings): K + dim channels.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from histosynth.generators.htd.conditions import crop_pixels, one_hot
from histosynth.generators.htd.model import HTDGenerator
from histosynth.generators.registry import GENERATOR_META


@functools.lru_cache(maxsize=4)
def _frozen_encoder(name: str, weights: str | None, pretrained: bool, device: str) -> Any:
    """One frozen encoder per (name, weights, device), shared by every generator in the process."""
    from histosynth.benchmark.encoders import load_encoder

    return load_encoder(name, weights=weights, pretrained=pretrained, device=device)


class HTDUnconditional(HTDGenerator):
    """The unconditional ablation: conditions only say how many patches to make (and their mpp)."""

    meta = GENERATOR_META["htd-unconditional"]
    condition: ClassVar[str] = "none"


class EmbeddingBroadcast(ModelMixin, ConfigMixin):
    """Projects per-class embeddings (B, K, D) to `out_dim` and paints them over their class regions.

    Output: concat(one-hot (B, K, H, W), sum_k one-hot_k * W e_k) -> (B, K + out_dim, H, W). A ModelMixin so it
    saves and loads like the diffusers networks beside it.
    """

    @register_to_config
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, one_hot_maps: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        projected = self.proj(embeddings.to(self.proj.weight.dtype))
        painted = torch.einsum("bkhw,bkp->bphw", one_hot_maps.to(projected.dtype), projected)
        return torch.cat([one_hot_maps.to(projected.dtype), painted], dim=1)


class HTDEmbedding(HTDGenerator):
    """The embedding-conditioned ablation."""

    meta = GENERATOR_META["htd-embedding"]
    condition: ClassVar[str] = "embedding"
    head_class: ClassVar[type | None] = EmbeddingBroadcast

    def condition_channels(self, num_classes: int) -> int | None:
        return num_classes + self.preset.model.embedding.dim

    def make_head(self, num_classes: int) -> nn.Module | None:
        return EmbeddingBroadcast(self._encoder().meta.feature_dim, self.preset.model.embedding.dim)

    def _encoder(self) -> Any:
        if self._encoder_cache is None:
            cfg = self.preset.model.embedding
            self._encoder_cache = _frozen_encoder(cfg.encoder, cfg.weights, cfg.pretrained, str(self.device))
        return self._encoder_cache

    def condition_tensors(self, maps: np.ndarray | None, images: np.ndarray, rngs: Sequence[np.random.Generator],
                          device: torch.device) -> dict[str, torch.Tensor]:
        """{"condition": one-hot (B, K, H, W), "embeddings": (B, K, D)} (absent classes have zero embeddings)."""
        if maps is None:
            return {}
        k, encoder = self.num_classes, self._encoder()
        crops = [crop_pixels(m, im, rng, self.preset.model.crops) for m, im, rng in zip(maps, images, rngs, strict=False)]
        embeddings = torch.zeros(len(crops), k, encoder.meta.feature_dim)
        by_size: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for b, per_class in enumerate(crops):
            for class_id, pixels in per_class.items():
                by_size.setdefault(pixels.shape[0], []).append((b, class_id, pixels))
        for items in by_size.values():  # the encoder takes same-size batches; its preprocessing resizes them
            features = encoder.encode(np.stack([p for _, _, p in items]), layout="nhwc")
            for (b, class_id, _), feature in zip(items, features, strict=False):
                embeddings[b, class_id] = feature
        onehot = torch.from_numpy(np.stack([one_hot(m, k) for m in maps]))
        return {"condition": onehot.to(device), "embeddings": embeddings.to(device)}
