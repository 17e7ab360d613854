"""`CentroidMaps`: classed nuclei centroids as K class channels (+ an optional distance channel).

Shared by the centroid-conditioned generators (Dual-LoRA, CoSyn-style, GANs). Per class channel, either
- "gaussian": a heat-map exp(-|p - c|^2 / (2 sigma^2)) per nucleus of that class around its exact (sub-pixel)
  centroid c, max over overlapping nuclei (peak 1 at the centroid), drawn in a square window of +-`window_half`
  pixels around the centroid's pixel, which holds every pixel within 4 sigma (what is cut is below exp(-8) ~ 3e-4); or
- "point": 1 at the centroid's rounded pixel (x, y) -> (row round(y), col round(x)), 0 elsewhere.
Channel index = class id, as in the tissue one-hot (id 0 is background and stays empty for real nuclei); nuclei of
class 255 (ignore) draw in no class channel but still count as nuclei for the distance channel.

sigma is tied to nucleus size: `sigma_um` (default 2.5 um) at the patch's mpp at the model resolution, so a
nucleus covers the same tissue whatever the magnification. Why 2.5 um: H&E nuclei are ~5-10 um across (a
lymphocyte ~7 um, i.e. radius ~3 um); sigma 2.5 um gives a half-maximum width of 2.355 sigma = 5.9 um, about the
smallest nucleus, so a blob stays inside its nucleus and neighbors (centers >= ~6 um apart) stay separate blobs.
At 0.5 mpp sigma is 5 px, at 0.25 mpp 10 px. `sigma_px` fixes it in pixels instead. sigma is never below 0.5 px,
so every nucleus marks its nearest pixel with at least exp(-1).

The optional last channel is the Euclidean distance from each pixel to the nearest centroid pixel (any class;
scipy.ndimage.distance_transform_edt), divided by `distance_scale` sigmas (default 10, i.e. 25 um at the default
sigma: a few nucleus diameters, beyond which a pixel is simply "away from nuclei") and clipped to [0, 1]; it is 0
at the centroids, and 1 everywhere in a patch without nuclei.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.batch import ConditionBatch, NucleiLayout
from histosynth.generators.conditioning.parts import check_class_ids, require

DEFAULT_SIGMA_UM = 2.5
MIN_SIGMA_PX = 0.5
TRUNCATE = 4.0  # a nucleus's window holds every pixel within this many sigmas of it
DEFAULT_DISTANCE_SCALE = 10.0  # distance channel saturates at this many sigmas
MODES = ("gaussian", "point")
_CHUNK = 1 << 22  # window values rendered at once, bounding memory for many nuclei with a large sigma


def centroid_pixels(layout: NucleiLayout, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 of each centroid's rounded pixel (half up), clipped to the R x R patch."""
    xy = np.floor(layout.centroids.astype(np.float64) + 0.5).astype(np.int64).reshape(-1, 2)
    xy = np.clip(xy, 0, resolution - 1)
    return xy[:, 1], xy[:, 0]


def distance_map(layout: NucleiLayout, resolution: int, scale_px: float) -> np.ndarray:
    """(R, R) float32: distance to the nearest centroid pixel / scale_px, clipped to [0, 1] (1 with no nuclei)."""
    if len(layout) == 0:
        return np.ones((resolution, resolution), np.float32)
    free = np.ones((resolution, resolution), bool)
    rows, cols = centroid_pixels(layout, resolution)
    free[rows, cols] = False
    return np.minimum(distance_transform_edt(free) / scale_px, 1.0).astype(np.float32)


def _gaussian_maps(centroids: np.ndarray, class_ids: np.ndarray, num_classes: int, resolution: int, sigma: float,
                   device: torch.device) -> torch.Tensor:
    """(K, R, R) float32 max-over-nuclei Gaussian heat-maps, rendered in square windows around each centroid."""
    out = torch.zeros(num_classes * resolution * resolution, dtype=torch.float32, device=device)
    if len(class_ids) == 0:
        return out.view(num_classes, resolution, resolution)
    offsets = torch.arange(-window_half(sigma), window_half(sigma) + 1, device=device, dtype=torch.int64)
    xy = torch.as_tensor(centroids, dtype=torch.float64, device=device)
    classes = torch.as_tensor(class_ids.astype(np.int64), device=device)
    per_chunk = max(1, _CHUNK // len(offsets) ** 2)
    for start in range(0, len(classes), per_chunk):
        chunk = slice(start, start + per_chunk)
        # exp(-(dx^2 + dy^2) / 2 sigma^2) = g(dx) g(dy): 2w exps per nucleus, one product per pixel
        factors = []
        for coord in (xy[chunk, 1], xy[chunk, 0]):  # rows from y, columns from x
            pixels = torch.floor(coord + 0.5).long()[:, None] + offsets[None, :]  # (n, w)
            weight = torch.exp(-((pixels - coord[:, None]) ** 2) / (2.0 * sigma**2))
            # off-patch pixels get weight 0 and a clamped index: a no-op in amax over a zero-initialized map
            weight = torch.where((pixels >= 0) & (pixels < resolution), weight, 0.0).float()
            factors.append((pixels.clamp(0, resolution - 1), weight))
        (rows, row_w), (cols, col_w) = factors
        values = row_w[:, :, None] * col_w[:, None, :]
        index = ((classes[chunk, None] * resolution + rows) * resolution)[:, :, None] + cols[:, None, :]
        out.scatter_reduce_(0, index.flatten(), values.flatten(), reduce="amax")
    return out.view(num_classes, resolution, resolution)


def window_half(sigma: float) -> int:
    """Half-width in pixels of a nucleus's window around its centroid pixel: every pixel within 4 sigma of the
    (sub-pixel) centroid is inside, so whatever lies outside is below exp(-8)."""
    return math.ceil(TRUNCATE * sigma + 0.5)


class CentroidMaps(Conditioner):
    """Nuclei -> K class channels (Gaussian heat-maps or points), plus a distance channel if asked."""

    parts: ClassVar[tuple[str, ...]] = ("nuclei",)
    name: ClassVar[str] = "centroid-maps"

    def __init__(self, num_classes: int, sigma_px: float | None = None, sigma_um: float | None = None,
                 mpp: float | None = None, mode: str = "gaussian", distance_channel: bool = False,
                 distance_scale: float = DEFAULT_DISTANCE_SCALE) -> None:
        """`mpp` (at the model resolution) is used for items whose batch carries no mpp of its own."""
        if mode not in MODES:
            raise InputError(f"centroid map mode must be one of {', '.join(MODES)}, not {mode!r}")
        if sigma_px is not None and sigma_um is not None:
            raise InputError("give the centroid sigma in pixels (sigma_px) or in microns (sigma_um), not both")
        for label, value in (("sigma_px", sigma_px), ("sigma_um", sigma_um), ("mpp", mpp),
                             ("distance_scale", distance_scale)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise InputError(f"centroid maps: {label} must be a positive number, not {value!r}")
        self.num_classes = int(num_classes)
        self.sigma_px = None if sigma_px is None else float(sigma_px)
        self.sigma_um = None if sigma_px is not None else float(DEFAULT_SIGMA_UM if sigma_um is None else sigma_um)
        self.mpp = None if mpp is None else float(mpp)
        self.mode = mode
        self.distance_channel = bool(distance_channel)
        self.distance_scale = float(distance_scale)

    @property
    def channels(self) -> int:
        return self.num_classes + int(self.distance_channel)

    def sigmas(self, batch: ConditionBatch) -> np.ndarray:
        """(B,) sigma in pixels at the model resolution: sigma_px, or sigma_um / mpp, at least MIN_SIGMA_PX."""
        if self.sigma_px is not None:
            return np.full(len(batch), max(self.sigma_px, MIN_SIGMA_PX))
        mpp = np.full(len(batch), np.nan) if batch.mpp is None else np.asarray(batch.mpp, np.float64).copy()
        if self.mpp is not None:
            mpp[~np.isfinite(mpp)] = self.mpp
        bad = ~(np.isfinite(mpp) & (mpp > 0))
        if bad.any():
            raise InputError(f"centroid maps with sigma_um={self.sigma_um} need each patch's mpp, but condition "
                             f"{int(np.flatnonzero(bad)[0])} has none: give the conditioner an mpp or use sigma_px")
        assert self.sigma_um is not None
        return np.maximum(self.sigma_um / mpp, MIN_SIGMA_PX)

    def __call__(self, batch: ConditionBatch, rngs: Sequence[np.random.Generator],
                 device: torch.device) -> dict[str, torch.Tensor]:
        require(batch, "nuclei", type(self).__name__)
        assert batch.nuclei is not None
        if len(batch.nuclei) != len(batch):
            raise ValueError(f"condition batch has {len(batch)} images but {len(batch.nuclei)} nuclei layouts")
        size, k = batch.resolution, self.num_classes
        needs_sigma = self.mode == "gaussian" or self.distance_channel
        sigmas = self.sigmas(batch) if needs_sigma else np.zeros(len(batch))
        out = torch.zeros(len(batch), self.channels, size, size, dtype=torch.float32, device=device)
        for j, (layout, sigma) in enumerate(zip(batch.nuclei, sigmas, strict=True)):
            check_class_ids(layout.class_ids, k, f"nuclei of condition {j}")
            drawn = layout.class_ids != IGNORE_ID
            if self.mode == "gaussian":
                out[j, :k] = _gaussian_maps(layout.centroids[drawn], layout.class_ids[drawn], k, size, float(sigma),
                                            device)
            else:
                at = [torch.as_tensor(a[drawn], device=device) for a in (layout.class_ids.astype(np.int64),
                                                                        *centroid_pixels(layout, size))]
                out[j, at[0], at[1], at[2]] = 1.0
            if self.distance_channel:
                far = distance_map(layout, size, self.distance_scale * float(sigma))
                out[j, k] = torch.from_numpy(far).to(device)
        return {"condition": out}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "num_classes": self.num_classes, "sigma_px": self.sigma_px,
                "sigma_um": self.sigma_um, "mpp": self.mpp, "mode": self.mode,
                "distance_channel": self.distance_channel, "distance_scale": self.distance_scale}
