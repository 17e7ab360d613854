"""What the encoder tests share: smooth random images, two real photographs and `Zoo`, a cache of seeded random
encoders and their features that a module's `zoo` fixture holds (`yield from module_zoo()`)."""

from __future__ import annotations

from functools import cache
from typing import Iterator

import numpy as np
import torch

from histosynth.benchmark.encoders import load_encoder


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


def module_zoo() -> Iterator[Zoo]:
    """The body of a module's `zoo` fixture: shared across the module's tests, then released (ViT-B encoders hold
    hundreds of MB)."""
    shared = Zoo()
    yield shared
    shared.encoders.clear()
    shared.features.clear()
