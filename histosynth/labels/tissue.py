"""Tissue phenotypes (HTD's TCGA extension): embed sub-patch cells, sample them for diversity, cluster hierarchically.

Pipeline, per patch then per dataset:
1. the patch is cut into a grid of `cell` x `cell` windows (`CellGrid`; the strip left over when the size is not
   a multiple of `cell` takes the label of the last cell); a cell that is mostly glass (`glass_mask`: bright and
   unsaturated after a small blur) is background and is not embedded;
2. tissue cells are embedded with any feature encoder the caller passes in (`CellEmbedder` takes a
   `FeatureEncoder`; the commands load EfficientNet-Lite0 by default, with its own preprocessing, i.e. each cell
   resized to 224 px), the embeddings cached on disk by content hash;
3. diversity-aware sampling: per slide, farthest-point (k-center greedy) selection of at most `per_slide` cells
   (HTD: ~1,000 patches per WSI), so rare appearances are kept and repeated ones thinned;
4. hierarchical k-means (`fit_phenotypes`): k-means at the finest granularity K, then Ward agglomeration of the
   K centroids weighted by their cluster sizes; cutting that tree gives the coarser levels, so every coarse
   phenotype is a union of fine ones and a fine map converts to any coarser k by a lookup table
   (`Hierarchy.coarsen`). Fine ids follow the dendrogram's leaf order, so each coarse phenotype is a contiguous
   range of fine ids, and coarse ids are numbered in the same order;
5. each patch's map holds the fine phenotype id + 1 of every tissue cell (nearest-neighbor upsampling), 0 on
   glass pixels (`pseudo-tissue-kK`; 255 is never used).

Granularities: the requested k (HTD: 5, 10, 20, 50, 100) that the sample allows, i.e. k <= distinct sampled
cells / `min_cells_per_cluster`; the others are reported as skipped.

On the simulator (its tissue classes are known), cutting k from the Ward tree over finer phenotypes agrees
better with the true classes than k-means at k directly, cells fed at the encoder's own 224 px beat smaller
inputs, and encoder features beat per-cell color statistics: the figures are in perf/RESULTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, Sequence

import numpy as np

from histosynth.classes import remap_table
from histosynth.errors import InputError
from histosynth.labels.cache import ArrayCache, content_key
from histosynth.labels.cluster import assign, cut_linkage, kmeans, ward_linkage

if TYPE_CHECKING:
    import torch

GRANULARITIES: tuple[int, ...] = (5, 10, 20, 50, 100)
"""HTD's multi-scale pseudo-map granularities."""

GLASS_LUMINANCE = 210.0
GLASS_SATURATION = 0.10
GLASS_BLUR_PX = 2.0
MAX_GLASS = 0.5
"""A cell with more than this fraction of glass pixels is background."""

EMBED_VERSION = "cells-v1"
FIT_VERSION = "phenotypes-v1"


def glass_mask(image: np.ndarray) -> np.ndarray:
    """True where the slide shows bare glass: luminance >= 210 and saturation <= 0.1 after a 2 px Gaussian blur.

    Measured: simulator glass has luminance ~246, saturation ~0.03; its palest tissue (stroma) stays above 0.12
    saturation; glass of the embedded CC0 region has saturation ~0.01.
    """
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(image.astype(np.float32), (GLASS_BLUR_PX, GLASS_BLUR_PX, 0))
    luminance = smooth @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    high, low = smooth.max(axis=-1), smooth.min(axis=-1)
    saturation = (high - low) / np.maximum(high, 1.0)
    return (luminance >= GLASS_LUMINANCE) & (saturation <= GLASS_SATURATION)


@dataclass(frozen=True)
class CellGrid:
    """The grid of `cell`-pixel windows of an H x W patch (rows x cols cells, top-left aligned)."""

    height: int
    width: int
    cell: int

    def __post_init__(self) -> None:
        if self.cell < 4:
            raise InputError(f"cell size must be at least 4 px, got {self.cell}")
        if self.height < self.cell or self.width < self.cell:
            raise InputError(f"a {self.width}x{self.height} patch is smaller than one {self.cell} px cell")

    @property
    def rows(self) -> int:
        return self.height // self.cell

    @property
    def cols(self) -> int:
        return self.width // self.cell

    def windows(self, image: np.ndarray) -> np.ndarray:
        """(rows * cols, cell, cell, C) row-major cell windows of `image`."""
        c = self.cell
        core = image[: self.rows * c, : self.cols * c]
        tiles = core.reshape(self.rows, c, self.cols, c, *image.shape[2:]).swapaxes(1, 2)
        return np.ascontiguousarray(tiles.reshape(self.rows * self.cols, c, c, *image.shape[2:]))

    def fractions(self, mask: np.ndarray) -> np.ndarray:
        """(rows, cols) fraction of True pixels of `mask` in each cell window."""
        return self.windows(mask.astype(np.float32)).reshape(self.rows, self.cols, -1).mean(axis=-1)

    def upsample(self, values: np.ndarray) -> np.ndarray:
        """(H, W) map of per-cell `values` (rows, cols), nearest cell for the leftover strip."""
        r = np.minimum(np.arange(self.height) // self.cell, self.rows - 1)
        c = np.minimum(np.arange(self.width) // self.cell, self.cols - 1)
        return values[r[:, None], c[None, :]]


class EncoderInfo(Protocol):
    """The metadata of a feature encoder that pseudo-labeling reads."""

    @property
    def name(self) -> str: ...

    @property
    def feature_dim(self) -> int: ...


class InputSpec(Protocol):
    """An encoder's input preparation; its `key` enters the cache keys and the sidecar."""

    @property
    def key(self) -> str: ...


class FeatureEncoder(Protocol):
    """What the labels layer needs from a feature encoder; the caller loads one and passes it in.

    `histosynth.benchmark.encoders.Encoder` is one. `input_spec(size, crop)` is the preparation that `encode(...,
    size=size, crop=crop)` applies (None: the encoder's own; an int overrides the side and raises ValueError when
    the encoder resizes its input itself; crop=False resizes the whole cell instead of center-cropping it, since a
    cell's border is tissue the phenotype must see). `encode` returns (N, meta.feature_dim) float32 features.
    """

    @property
    def meta(self) -> EncoderInfo: ...

    @property
    def weights_fingerprint(self) -> str: ...

    def state_dict(self) -> Mapping[str, Any]: ...

    def provenance(self) -> dict[str, str]: ...

    def input_spec(self, size: int | None = None, crop: bool = True) -> InputSpec: ...

    def encode(self, images: np.ndarray, batch_size: int = ..., layout: Literal["auto", "nhwc", "nchw"] = ...,
               size: int | None = None, crop: bool = True) -> "torch.Tensor": ...


@dataclass
class CellEmbedding:
    """Embeddings of a patch's tissue cells: `features` (m, d) float32 for the True cells of `tissue` (rows, cols)."""

    features: np.ndarray
    tissue: np.ndarray
    cell: int
    key: str = ""


class CellEmbedder:
    """Embeds the tissue cells of patches with an encoder, through a content-addressed cache.

    `input_size` overrides the encoder's input side (convolutional encoders only; faster, less accurate); None
    keeps the encoder's own preprocessing. Embeddings are stored as float16 (float32 if they would overflow it)
    and always returned as read back from the cache, so a fresh run and a resumed one compute with identical
    values. `encoded_patches` counts the patches that really went through the encoder.
    """

    def __init__(self, encoder: FeatureEncoder, cell: int = 32, cache: ArrayCache | None = None,
                 input_size: int | None = None, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.cell = cell
        self.cache = cache
        self.input_size = input_size
        self.batch_size = batch_size
        self.encoded_patches = 0
        self.spec = encoder.input_spec(input_size, crop=False)
        self._weights: str | None = None

    @property
    def weights_id(self) -> str:
        """The encoder's weights fingerprint; for random weights ("random-init") a hash of the parameters, so
        two random encoders never share cache entries."""
        if self._weights is None:
            fingerprint = self.encoder.weights_fingerprint
            if fingerprint == "random-init":
                import hashlib

                digest = hashlib.sha256()
                for tensor in self.encoder.state_dict().values():
                    digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
                fingerprint = f"random-init:sha256:{digest.hexdigest()}"
            self._weights = fingerprint
        return self._weights

    def settings(self) -> dict[str, Any]:
        """What determines the embeddings (recorded in the sidecar, hashed into cache keys)."""
        return {
            "encoder": self.encoder.meta.name,
            "weights": self.weights_id,
            "preprocess": self.spec.key,
            "cell": self.cell,
            "glass": [GLASS_LUMINANCE, GLASS_SATURATION, GLASS_BLUR_PX, MAX_GLASS],
        }

    def key(self, image: np.ndarray) -> str:
        s = self.settings()
        return content_key(EMBED_VERSION, image, s["encoder"], s["weights"], s["preprocess"], s["cell"], repr(s["glass"]))

    def _compute(self, image: np.ndarray) -> dict[str, np.ndarray]:
        grid = CellGrid(image.shape[0], image.shape[1], self.cell)
        tissue = grid.fractions(glass_mask(image)) <= MAX_GLASS
        cells = grid.windows(image)[tissue.ravel()]
        features = np.zeros((0, self.encoder.meta.feature_dim), dtype=np.float32)
        if len(cells):
            try:
                features = self.encoder.encode(cells, self.batch_size, "nhwc", self.input_size, crop=False).numpy()
            except RuntimeError as err:
                if self.input_size is None:
                    raise
                raise InputError(f"encoder {self.encoder.meta.name!r} cannot take {self.input_size} px inputs "
                                 f"({err}); leave input_size unset") from err
        self.encoded_patches += 1
        small = np.abs(features).max(initial=0.0) < 6e4  # float16 halves the cache; keep float32 if it would overflow
        return {"features": features.astype(np.float16 if small else np.float32), "tissue": tissue}

    def embed(self, image: np.ndarray) -> CellEmbedding:
        """The cached (or freshly computed and cached) embedding of `image`'s tissue cells."""
        key = self.key(image)
        if self.cache is None:
            arrays = self._compute(image)
        else:
            arrays = self.cache.get_or_compute(key, lambda: self._compute(image))
        return CellEmbedding(arrays["features"].astype(np.float32), arrays["tissue"].astype(bool), self.cell, key)


@dataclass
class Hierarchy:
    """Nested granularities: `parents[k][j]` is the level-k id (1..k) of fine id j + 1 (fine ids 1..fine_k)."""

    levels: tuple[int, ...]
    parents: dict[int, np.ndarray]

    @property
    def fine_k(self) -> int:
        return self.levels[-1]

    def schema(self, k: int | None = None) -> str:
        """`pseudo-tissue-k{k}` (finest level by default)."""
        return f"pseudo-tissue-k{self.fine_k if k is None else k}"

    def lut(self, k: int) -> np.ndarray:
        """(256,) uint8 lookup table from fine ids to level-k ids (0 and 255 map to themselves)."""
        if k not in self.parents:
            raise KeyError(f"granularity k={k} is not in this hierarchy (levels: {list(self.levels)})")
        return remap_table({j + 1: parent for j, parent in enumerate(self.parents[k].tolist())}, "keep")

    def coarsen(self, tissue_map: np.ndarray, k: int) -> np.ndarray:
        """The level-k map of a fine pseudo tissue map (union of the fine phenotypes under each coarse one)."""
        return self.lut(k)[tissue_map]

    def to_json(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "fine_k": self.fine_k,
                "parents": {str(k): self.parents[k].tolist() for k in self.levels}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Hierarchy":
        levels = tuple(int(k) for k in data["levels"])
        parents = {int(k): np.asarray(v, dtype=np.uint8) for k, v in data["parents"].items()}
        if sorted(parents) != sorted(levels) or any(len(v) != levels[-1] for v in parents.values()):
            raise InputError(f"inconsistent hierarchy: levels {levels}, parents for {sorted(parents)}")
        return cls(levels, parents)


@dataclass
class PhenotypeModel:
    """Fine centroids (in leaf order), their sizes, and the nested hierarchy of coarser levels."""

    centroids: np.ndarray  # (fine_k, d) float64
    counts: np.ndarray  # sampled cells per fine phenotype
    hierarchy: Hierarchy
    skipped: tuple[int, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def fine_k(self) -> int:
        return len(self.centroids)

    def assign(self, features: np.ndarray) -> np.ndarray:
        """Fine phenotype ids (1..fine_k) of embeddings."""
        return assign(features, self.centroids) + 1

    def tissue_map(self, embedding: CellEmbedding, image: np.ndarray) -> np.ndarray:
        """The patch's fine pseudo tissue map: phenotype id per tissue cell, 0 on glass."""
        grid = CellGrid(image.shape[0], image.shape[1], embedding.cell)
        if embedding.tissue.shape != (grid.rows, grid.cols):
            raise ValueError(f"embedding grid {embedding.tissue.shape} does not fit a {image.shape[1]}x{image.shape[0]} "
                             f"patch in {embedding.cell} px cells")
        ids = np.zeros(embedding.tissue.shape, dtype=np.uint8)
        ids[embedding.tissue] = self.assign(embedding.features).astype(np.uint8)
        out = grid.upsample(ids)
        out[glass_mask(image)] = 0
        return out

    def to_arrays(self) -> dict[str, np.ndarray]:
        levels = np.asarray(self.hierarchy.levels, dtype=np.int64)
        return {"centroids": self.centroids, "counts": self.counts, "levels": levels,
                "parents": np.stack([self.hierarchy.parents[int(k)] for k in levels]),
                "skipped": np.asarray(self.skipped, dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], info: dict[str, Any] | None = None) -> "PhenotypeModel":
        levels = tuple(int(k) for k in arrays["levels"])
        hierarchy = Hierarchy(levels, {k: arrays["parents"][i].astype(np.uint8) for i, k in enumerate(levels)})
        return cls(arrays["centroids"], arrays["counts"], hierarchy, tuple(int(k) for k in arrays["skipped"]), info or {})


def feasible_levels(ks: Sequence[int], distinct: int, min_cells_per_cluster: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(kept, skipped) granularities: k is kept when 2 <= k <= 254 and k * min_cells_per_cluster <= distinct."""
    wanted = sorted({int(k) for k in ks})
    if not wanted or wanted[0] < 1:
        raise InputError(f"granularities must be positive integers, got {list(ks)}")
    kept = tuple(k for k in wanted if 2 <= k <= 254 and k * max(1, min_cells_per_cluster) <= distinct)
    return kept, tuple(k for k in wanted if k not in kept)


def fit_phenotypes(
    embeddings: np.ndarray, ks: Sequence[int] = GRANULARITIES, seed: int = 0, min_cells_per_cluster: int = 1,
    n_init: int = 4,
) -> PhenotypeModel:
    """Hierarchical k-means of sampled cell embeddings: k-means at the finest feasible k, Ward above it.

    Raises ValueError when no requested k is feasible (too few distinct cells).
    """
    from scipy.cluster.hierarchy import leaves_list

    x = np.asarray(embeddings, dtype=np.float64)
    distinct = len(np.unique(x, axis=0)) if len(x) else 0
    levels, skipped = feasible_levels(ks, distinct, min_cells_per_cluster)
    if not levels:
        raise InputError(f"too few distinct tissue cells ({distinct}) for any of k={sorted(set(ks))} "
                         f"(with at least {min_cells_per_cluster} cell(s) per phenotype); label more patches or "
                         "use smaller cells / smaller k")
    fine_k = levels[-1]
    centroids, labels, _ = kmeans(x, fine_k, seed=seed, n_init=n_init)
    counts = np.bincount(labels, minlength=fine_k)
    z = ward_linkage(centroids, counts.astype(np.float64))
    order = leaves_list(z)  # fine id i + 1 <- old cluster order[i]
    parents: dict[int, np.ndarray] = {}
    for k in levels:
        cut = cut_linkage(z, fine_k, k)[order]
        first_seen: dict[int, int] = {}
        for c in cut:
            first_seen.setdefault(int(c), len(first_seen) + 1)
        parents[k] = np.array([first_seen[int(c)] for c in cut], dtype=np.uint8)
    info = {"sampled_cells": int(len(x)), "distinct_cells": distinct, "seed": seed, "n_init": n_init,
            "min_cells_per_cluster": min_cells_per_cluster}
    return PhenotypeModel(centroids[order], counts[order], Hierarchy(levels, parents), skipped, info)


def fit_key(embedding_keys_digest: str, ks: Sequence[int], per_slide: int, seed: int, min_cells_per_cluster: int,
            n_init: int) -> str:
    """Cache key of a phenotype fit: the ordered embedding keys (and slides) plus every fit setting."""
    return content_key(FIT_VERSION, embedding_keys_digest, repr(sorted(set(int(k) for k in ks))), per_slide, seed,
                       min_cells_per_cluster, n_init)
