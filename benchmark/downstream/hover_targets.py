"""HoVer-Net training targets from an instance map: nuclear pixels (NP), horizontal/vertical distance maps (HV) and
the per-pixel nuclear type (NC), as defined in Graham et al. 2019 (HoVer-Net, Medical Image Analysis), section 3.2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from histosynth.errors import InputError
from histosynth.schema import instance_centroids


@dataclass(frozen=True)
class HoverTargets:
    """np (H, W) uint8 in {0, 1}; hv (2, H, W) float32 [x-map, y-map] in [-1, 1]; nc (H, W) uint8 type ids (0 outside)."""

    np: np.ndarray
    hv: np.ndarray
    nc: np.ndarray


def hover_targets(instances: np.ndarray, instance_types: np.ndarray | None = None) -> HoverTargets:
    """Targets for one patch whose instance map numbers nuclei 1..n (0 background).

    `instance_types[k]` is the type id (1..K) of instance k + 1; None gives every nucleus type 1 (no NC branch).
    Within each instance the x-map is the column distance to the instance's center of mass and the y-map the row
    distance, each divided by the largest magnitude on its own side of the center, so both span [-1, 1] with -1 at the
    left / top extreme and +1 at the right / bottom extreme.
    """
    labels = _check_instances(instances)
    n = int(labels.max()) if labels.size else 0
    types = _check_types(instance_types, n)
    nuclear = labels > 0
    hv = np.zeros((2, *labels.shape), dtype=np.float32)
    if n:
        # The paper's center of mass, not rounded: vqdang/hover_net rounds it and then measures from a 1-based grid,
        # which moves the zero crossing one pixel right/down of the center.
        centers = instance_centroids(labels, n).astype(np.float64)  # (n, 2) x, y
        rows, cols = np.nonzero(nuclear)
        ids = labels[rows, cols].astype(np.intp)
        for axis, coord in enumerate((cols, rows)):  # 0: x-map (columns), 1: y-map (rows)
            dist = coord - centers[ids - 1, axis]
            hv[axis, rows, cols] = _scale_per_side(dist, ids, n)
    lut = np.concatenate([[0], types]).astype(np.uint8)
    return HoverTargets(np=nuclear.astype(np.uint8), hv=hv, nc=lut[labels])


def _scale_per_side(dist: np.ndarray, ids: np.ndarray, n: int) -> np.ndarray:
    """Divide negative distances by -min and positive ones by max, per instance (HoVer-Net's [-1, 1] scaling)."""
    index = np.arange(1, n + 1)
    lowest = np.asarray(ndimage.minimum(np.minimum(dist, 0.0), ids, index), dtype=np.float64)
    highest = np.asarray(ndimage.maximum(np.maximum(dist, 0.0), ids, index), dtype=np.float64)
    low, high = lowest[ids - 1], highest[ids - 1]
    out = np.zeros_like(dist)
    neg, pos = dist < 0, dist > 0  # a side with pixels has a nonzero extreme, so neither division is by zero
    out[neg] = dist[neg] / -low[neg]
    out[pos] = dist[pos] / high[pos]
    return out.astype(np.float32)


def _check_instances(instances: np.ndarray) -> np.ndarray:
    labels = np.asarray(instances)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"hover targets: instance map must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and labels.min() < 0:
        raise InputError("hover targets: instance map has negative ids")
    n = int(labels.max()) if labels.size else 0
    present = np.bincount(labels.ravel().astype(np.intp), minlength=n + 1)[1:] > 0
    if not present.all():
        missing = (np.flatnonzero(~present) + 1)[:5].tolist()
        raise InputError(f"hover targets: instance ids must be 1..n without gaps; ids {missing} have no pixels")
    return labels


def _check_types(instance_types: np.ndarray | None, n: int) -> np.ndarray:
    if instance_types is None:
        return np.ones(n, dtype=np.uint8)
    types = np.asarray(instance_types)
    if types.shape != (n,) or (n and not np.issubdtype(types.dtype, np.integer)):
        raise InputError(
            f"hover targets: instance_types must be {n} integer type ids (one per instance), got {types.dtype} {types.shape}"
        )
    if n and (types.min() < 1 or types.max() > 255):  # 0 is background; 255 (ignore) stays ignorable in the NC loss
        raise InputError(f"hover targets: instance type ids must be 1..255, got {int(types.min())}..{int(types.max())}")
    return types.astype(np.uint8)
