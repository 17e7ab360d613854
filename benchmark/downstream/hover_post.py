"""HoVer-Net post-processing: NP probability + HV maps (+ NC probabilities) -> numbered, typed nuclei with centroids.

A port of the marker-controlled watershed of Graham et al. 2019 (section 3.4) as released in vqdang/hover_net
(models/hovernet/post_proc.py) with tiatoolbox's resolution scaling, written with scipy/skimage instead of OpenCV.
Each OpenCV call is replaced by the same operation (kernel, border rule) and marked where it is ported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.special import comb
from skimage.morphology import remove_small_objects
from skimage.segmentation import relabel_sequential, watershed

from histosynth.benchmark.downstream.nuclei_metrics import MPP_40X
from histosynth.errors import InputError
from histosynth.schema import instance_centroids

REFERENCE_MPP = MPP_40X  # the resolution at which HoVer-Net's sizes below were chosen
SOBEL_SIZE_40X = 21
MIN_BLOB_PX = 10  # connected NP components smaller than this are dropped (not scaled, as in tiatoolbox)
MIN_MARKER_PX_40X = 10
ENERGY_THRESHOLD = 0.4
NP_THRESHOLD = 0.5
# cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)); skimage's disk(2) differs in its corners
ELLIPSE_5X5 = np.array(
    [
        [0, 0, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
    ],
    dtype=bool,
)


@dataclass(frozen=True)
class NucleiPrediction:
    """instances (H, W) uint16 numbered 1..n; types (n,) uint8 (instance k + 1 has types[k]); centroids (n, 2) x, y."""

    instances: np.ndarray
    types: np.ndarray
    centroids: np.ndarray

    def __len__(self) -> int:
        return len(self.types)


def sobel_size(mpp: float) -> int:
    """HoVer-Net's 21 px Sobel at 40x, scaled with the magnification: tiatoolbox's int(20 s + 1), s = 0.25 / mpp,
    rounded to the nearest odd size (OpenCV only has odd Sobel kernels) and at least 3."""
    scale = REFERENCE_MPP / _check_mpp(mpp)
    return max(3, 2 * round((SOBEL_SIZE_40X - 1) / 2 * scale) + 1)


def min_marker_size(mpp: float) -> int:
    """Markers below 10 px at 40x are dropped; tiatoolbox scales that area as ceil(10 s^2), s = 0.25 / mpp."""
    scale = REFERENCE_MPP / _check_mpp(mpp)
    return max(1, math.ceil(MIN_MARKER_PX_40X * scale**2))


def hover_postprocess(np_prob: np.ndarray, hv: np.ndarray, nc_prob: np.ndarray | None, mpp: float) -> NucleiPrediction:
    """Instances from the NP probability (H, W), the HV maps (2, H, W) [x-map, y-map] and optional NC
    probabilities (K, H, W) whose channel index is the type id (0 background); `mpp` is microns per pixel.

    Without NC every nucleus gets type 1. Types are the majority vote of argmax(NC) inside each instance (background
    loses to any nuclear type present); centroids are first image moments over zeroth, (x, y).
    """
    prob, hv_maps, nc = _check_inputs(np_prob, hv, nc_prob)
    labels = _instances(prob, hv_maps, mpp)
    n = int(labels.max())
    centroids = instance_centroids(labels, n) if n else np.zeros((0, 2), dtype=np.float32)
    types = _majority_types(labels, n, nc) if nc is not None else np.ones(n, dtype=np.uint8)
    return NucleiPrediction(instances=labels.astype(np.uint16), types=types, centroids=centroids)


def _instances(prob: np.ndarray, hv: np.ndarray, mpp: float) -> np.ndarray:
    """The marker-controlled watershed (post_proc.__proc_np_hv), relabeled 1..n."""
    # remove_small_objects on a boolean labels 4-connected components, as ndimage.label does before it in the original
    blob = remove_small_objects(prob >= NP_THRESHOLD, max_size=MIN_BLOB_PX - 1, connectivity=1)
    size = sobel_size(mpp)
    h_dir, v_dir = _minmax(hv[0]), _minmax(hv[1])
    # cv2.Sobel(h_dir, CV_64F, 1, 0, ksize) / (v_dir, 0, 1): d x-map / dx and d y-map / dy
    sobel_h = 1.0 - _minmax(_sobel(h_dir, axis=1, size=size))
    sobel_v = 1.0 - _minmax(_sobel(v_dir, axis=0, size=size))
    energy = np.maximum(sobel_h, sobel_v) - (1.0 - blob)
    energy[energy < 0] = 0
    # cv2.GaussianBlur(dist, (3, 3), 0): sigma 0 at size 3 is OpenCV's fixed [1, 2, 1] / 4 kernel, reflect-101 border
    dist = (1.0 - energy) * blob
    for axis in (0, 1):
        dist = ndimage.correlate1d(dist, np.array([0.25, 0.5, 0.25]), axis=axis, mode="mirror")
    marker = blob & ~(energy >= ENERGY_THRESHOLD)
    marker = ndimage.binary_fill_holes(marker)
    # cv2.morphologyEx(MORPH_OPEN): erosion treats pixels beyond the border as set, dilation as unset
    marker = ndimage.binary_erosion(marker, ELLIPSE_5X5, border_value=1)
    marker = ndimage.binary_dilation(marker, ELLIPSE_5X5, border_value=0)
    marker = remove_small_objects(marker, max_size=min_marker_size(mpp) - 1, connectivity=1)
    marker = ndimage.label(marker)[0]
    labels = watershed(-dist, marker, mask=blob)  # nuclei are mountains of dist; watershed floods basins
    return relabel_sequential(labels)[0]


def _sobel(image: np.ndarray, axis: int, size: int) -> np.ndarray:
    """First derivative along `axis` with OpenCV's separable Sobel kernel of odd `size` (getSobelKernels):
    derivative = binomial(size - 2) convolved with [-1, 1], smoothing = binomial(size - 1); reflect-101 border."""
    smooth = comb(size - 1, np.arange(size))
    deriv = np.convolve(comb(size - 2, np.arange(size - 1)), [-1.0, 1.0])
    out = ndimage.correlate1d(image.astype(np.float64), deriv, axis=axis, mode="mirror")
    return ndimage.correlate1d(out, smooth, axis=1 - axis, mode="mirror")


def _minmax(image: np.ndarray) -> np.ndarray:
    """cv2.normalize(NORM_MINMAX, 0, 1): a constant image maps to 0, as OpenCV does."""
    lo, hi = float(image.min()), float(image.max())
    if hi - lo <= np.finfo(np.float64).eps:
        return np.zeros(image.shape, dtype=np.float64)
    return (image.astype(np.float64) - lo) / (hi - lo)


def _majority_types(labels: np.ndarray, n: int, nc_prob: np.ndarray) -> np.ndarray:
    """Most frequent argmax type per instance; ties go to the lower id; background only if nothing else is there."""
    k = nc_prob.shape[0]
    pixel_type = np.argmax(nc_prob, axis=0)
    votes = np.bincount((labels.astype(np.intp) * k + pixel_type).ravel(), minlength=(n + 1) * k).reshape(n + 1, k)[1:]
    best = np.argmax(votes, axis=1)
    if k > 1:
        nuclear = votes[:, 1:]
        use_nuclear = (best == 0) & (nuclear.sum(axis=1) > 0)
        best[use_nuclear] = np.argmax(nuclear[use_nuclear], axis=1) + 1
    return best.astype(np.uint8)


def _check_mpp(mpp: float) -> float:
    if not (isinstance(mpp, (int, float)) and math.isfinite(mpp) and mpp > 0):
        raise InputError(f"hover post-processing: mpp must be a positive number of microns per pixel, got {mpp!r}")
    return float(mpp)


def _check_inputs(
    np_prob: np.ndarray, hv: np.ndarray, nc_prob: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    prob = np.asarray(np_prob, dtype=np.float64)
    maps = np.asarray(hv, dtype=np.float64)
    if prob.ndim != 2:
        raise InputError(f"hover post-processing: NP probability must be (H, W), got shape {prob.shape}")
    if maps.shape != (2, *prob.shape):
        raise InputError(
            f"hover post-processing: HV maps must be (2, {prob.shape[0]}, {prob.shape[1]}), got {maps.shape}"
        )
    nc = None
    if nc_prob is not None:
        nc = np.asarray(nc_prob)
        if nc.ndim != 3 or nc.shape[1:] != prob.shape or not 1 <= nc.shape[0] <= 256:
            raise InputError(
                f"hover post-processing: NC probabilities must be (K, {prob.shape[0]}, {prob.shape[1]}) with K <= 256, got {nc.shape}"
            )
    return prob, maps, nc
