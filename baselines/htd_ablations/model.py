"""HTD's two ablations (the paper's first and middle rows): the same DiffusionGenerator with another conditioner.

- `htd-unconditional`: no condition (no ControlNet); outputs carry no labels.
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

from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch
from histosynth.generators.conditioning.crops import crop_pixels
from histosynth.generators.conditioning.parts import require
from histosynth.generators.conditioning.tissue import one_hot
from histosynth.generators.diffusion.presets import CropConfig, EmbeddingConfig
from histosynth.generators.htd.model import HTDGenerator
from histosynth.generators.registry import generator_meta


@functools.lru_cache(maxsize=4)
def _frozen_encoder(name: str, weights: str | None, pretrained: bool, device: str) -> Any:
    """One frozen encoder per (name, weights, device), shared by every generator in the process."""
    from histosynth.benchmark.encoders import load_encoder

    return load_encoder(name, weights=weights, pretrained=pretrained, device=device)


class HTDUnconditional(HTDGenerator):
    """The unconditional ablation: conditions only say how many patches to make (and their mpp)."""

    meta = generator_meta("htd-unconditional")

    def make_conditioner(self, num_classes: int) -> Conditioner | None:
        return None


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


class CropEmbeddings(Conditioner):
    """{"condition": one-hot (B, K, R, R), "embeddings": (B, K, D)}: each class crop's frozen-encoder feature
    (absent classes have zero embeddings); EmbeddingBroadcast (the model's head) paints them over the map."""

    parts: ClassVar[tuple[str, ...]] = ("tissue", "crops")
    name: ClassVar[str] = "crop-embeddings"

    def __init__(self, num_classes: int, crops: CropConfig, embedding: EmbeddingConfig, device: str) -> None:
        self.num_classes, self.crops, self.embedding = int(num_classes), crops, embedding
        self.encoder = _frozen_encoder(embedding.encoder, embedding.weights, embedding.pretrained, device)

    @property
    def channels(self) -> int:
        return self.num_classes + self.embedding.dim

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        require(batch, "crops", type(self).__name__)
        assert batch.tissue is not None
        k, encoder = self.num_classes, self.encoder
        crops = [crop_pixels(m, im, rng, self.crops) for m, im, rng in zip(batch.tissue, batch.images, rngs, strict=True)]
        embeddings = torch.zeros(len(crops), k, encoder.meta.feature_dim)
        by_size: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for b, per_class in enumerate(crops):
            for class_id, pixels in per_class.items():
                by_size.setdefault(pixels.shape[0], []).append((b, class_id, pixels))
        for items in by_size.values():  # the encoder takes same-size batches; its preprocessing resizes them
            features = encoder.encode(np.stack([p for _, _, p in items]), layout="nhwc")
            for (b, class_id, _), feature in zip(items, features, strict=True):
                embeddings[b, class_id] = feature
        onehot = torch.from_numpy(np.stack([one_hot(m, k) for m in batch.tissue]))
        return {"condition": onehot.to(device), "embeddings": embeddings.to(device)}

    def config(self) -> dict[str, Any]:
        import dataclasses

        return {"name": self.name, "num_classes": self.num_classes, "crops": dataclasses.asdict(self.crops),
                "embedding": dataclasses.asdict(self.embedding)}


class HTDEmbedding(HTDGenerator):
    """The embedding-conditioned ablation."""

    meta = generator_meta("htd-embedding")

    def make_conditioner(self, num_classes: int) -> Conditioner | None:
        return CropEmbeddings(num_classes, self.preset.model.crops, self.preset.model.embedding, str(self.device))

    def make_head(self, num_classes: int) -> nn.Module | None:
        assert isinstance(self.conditioner, CropEmbeddings)
        return EmbeddingBroadcast(self.conditioner.encoder.meta.feature_dim, self.preset.model.embedding.dim)
