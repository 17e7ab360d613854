"""Pseudo nuclei for unannotated H&E: color deconvolution, threshold, watershed, and clustered nuclear classes.

Detection (`segment_nuclei`), all lengths in microns and converted with the patch's mpp:
1. hematoxylin concentration by Ruifrok-Johnston color deconvolution (`skimage.color.rgb2hed`, channel 0),
   smoothed with a Gaussian of `smooth_um`;
2. threshold: Otsu over the patch's tissue pixels (glass excluded, as in histosynth.labels.tissue.glass_mask),
   never below `min_threshold`, with hysteresis (an object must reach `min_peak` somewhere): Otsu adapts to the
   stain strength of each patch, the floors stop it from splitting nucleus-free tissue into "nuclei"; holes are
   filled; connected components smaller than `min_area_um2` or larger than `max_component_um2` (sheets of
   hematoxylin-dense stroma or keratin, not nuclei) are dropped;
3. touching nuclei are split by a watershed on the negated, slightly smoothed Euclidean distance transform,
   seeded by its local maxima (`peak_local_max`, at least `min_distance_um` apart); regions larger than
   `max_area_um2` or less solid than `min_solidity` (ragged fragments of dark stroma) are dropped.
The instance map is relabeled 1..n with exact centroids by `Nuclei.from_instance_map`.

Classes (`fit_nuclei_clusters`): per nucleus log area, eccentricity, solidity, log major axis, mean and
standard deviation of hematoxylin, mean eosin; standardized over the dataset and clustered by k-means (fixed
seed) into `pseudo-nuclei-kN`; clusters are numbered by increasing mean area (id 1 = smallest nuclei), so ids
are reproducible.

Detection F1 against the simulator's exact centroids (`detection_scores`, `measure_simulator_f1()`), the pseudo
classes' agreement with the simulator's true classes, and the speed: see perf/RESULTS.md. The simulator's nuclei
never touch (a 1.5 px gap), so those figures measure the stain separation and thresholding, not how well the
watershed splits clumped nuclei of real tissue (a unit test checks it splits two overlapping discs): expect lower
figures on real data, where hematoxylin-dense stroma also yields false nuclei.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from histosynth.labels.cluster import assign, kmeans
from histosynth.schema import Nuclei

FEATURES: tuple[str, ...] = ("log_area_um2", "eccentricity", "solidity", "log_major_axis_um", "mean_h", "std_h", "mean_e")
"""Per-nucleus features used for the pseudo classes, in column order."""

MATCH_RADIUS_UM = 3.0
"""Centroid matching radius for detection scores: 6 px at 0.5 um/px."""


@dataclass(frozen=True)
class NucleiParams:
    """Detection settings (lengths in microns, thresholds in `rgb2hed` hematoxylin units)."""

    smooth_um: float = 0.5
    min_threshold: float = 0.04
    min_peak: float = 0.06
    min_area_um2: float = 1.5
    max_area_um2: float = 250.0
    max_component_um2: float = 600.0
    min_solidity: float = 0.7
    min_distance_um: float = 2.5
    distance_smooth_um: float = 0.5

    def key(self) -> str:
        """Stable text of the settings (cache keys)."""
        return repr(sorted(asdict(self).items()))


def hematoxylin_eosin(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin concentrations (float32, `rgb2hed` units) of an RGB uint8 image."""
    from skimage.color import rgb2hed

    hed = rgb2hed(image)
    return hed[..., 0].astype(np.float32), hed[..., 1].astype(np.float32)


def segment_nuclei(image: np.ndarray, mpp: float = 0.5, params: NucleiParams = NucleiParams()) -> np.ndarray:
    """Instance map (int32, nuclei numbered 1..n, 0 elsewhere) of the nuclei in an RGB uint8 patch."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.filters import apply_hysteresis_threshold, threshold_otsu
    from skimage.measure import regionprops_table
    from skimage.segmentation import watershed

    from histosynth.labels.tissue import glass_mask

    if mpp <= 0:
        raise ValueError(f"segment_nuclei: mpp must be positive, got {mpp}")
    h = ndimage.gaussian_filter(hematoxylin_eosin(image)[0], params.smooth_um / mpp)
    tissue = h[~glass_mask(image)]
    if tissue.size < 64:
        tissue = h.ravel()
    low = params.min_threshold
    if tissue.max() > tissue.min():
        low = max(float(threshold_otsu(tissue)), low)
    mask = ndimage.binary_fill_holes(apply_hysteresis_threshold(h, low, max(low, params.min_peak)))
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(image.shape[:2], dtype=np.int32)
    sizes = np.bincount(labels.ravel())
    pixel_area = mpp * mpp
    mask = ((sizes >= params.min_area_um2 / pixel_area) & (sizes <= params.max_component_um2 / pixel_area))[labels] & mask
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(image.shape[:2], dtype=np.int32)
    distance = ndimage.distance_transform_edt(mask)
    distance = ndimage.gaussian_filter(distance, params.distance_smooth_um / mpp)
    peaks = peak_local_max(distance, min_distance=max(1, round(params.min_distance_um / mpp)), labels=labels,
                           exclude_border=False)
    markers = np.zeros(mask.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    # A component without a peak (flat distance map) still gets one seed: its first pixel.
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[labels[tuple(peaks.T)]] = True
    for comp in np.flatnonzero(~seeded[1:]) + 1:
        r, c = np.argwhere(labels == comp)[0]
        markers[r, c] = markers.max() + 1
    regions = watershed(-distance, markers, mask=mask)
    areas = np.bincount(regions.ravel())
    drop = (areas > params.max_area_um2 / pixel_area) | (areas < params.min_area_um2 / pixel_area)
    if params.min_solidity > 0 and regions.max() > 0:
        props = regionprops_table(regions, properties=("label", "solidity"))
        drop[props["label"][props["solidity"] < params.min_solidity]] = True
    drop[0] = False
    regions[drop[regions]] = 0
    ids, dense = np.unique(regions, return_inverse=True)
    dense = dense.reshape(regions.shape).astype(np.int32)
    return dense if ids[0] == 0 else dense + 1


def nucleus_features(image: np.ndarray, instances: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """(n, len(FEATURES)) float32 features of instances 1..n (see FEATURES)."""
    from skimage.measure import regionprops_table

    n = int(instances.max()) if instances.size else 0
    if n == 0:
        return np.zeros((0, len(FEATURES)), dtype=np.float32)
    h, e = hematoxylin_eosin(image)
    props = regionprops_table(instances.astype(np.int32), intensity_image=np.stack([h, e], axis=-1),
                              properties=("label", "area", "eccentricity", "solidity", "axis_major_length",
                                          "intensity_mean", "intensity_std"))
    order = np.argsort(props["label"])
    cols = [
        np.log(props["area"] * mpp * mpp),
        props["eccentricity"],
        props["solidity"],
        np.log(np.maximum(props["axis_major_length"], 1.0) * mpp),
        props["intensity_mean-0"],
        props["intensity_std-0"],
        props["intensity_mean-1"],
    ]
    return np.stack(cols, axis=1)[order].astype(np.float32)


@dataclass
class NucleiClusters:
    """Standardization and k-means centroids of nuclear features; `classify` gives pseudo-nuclei ids 1..k."""

    mean: np.ndarray
    scale: np.ndarray
    centroids: np.ndarray  # (k, F) in standardized units, ordered by increasing mean area
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # nuclei per cluster in the fit

    @property
    def k(self) -> int:
        return len(self.centroids)

    @property
    def schema(self) -> str:
        """The class schema of the pseudo nuclei: `pseudo-nuclei-k{k}`."""
        return f"pseudo-nuclei-k{self.k}"

    def classify(self, features: np.ndarray) -> np.ndarray:
        """Class ids (uint8, 1..k) of nuclei with these features."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return (assign(z, self.centroids) + 1).astype(np.uint8)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean, "scale": self.scale, "centroids": self.centroids, "counts": self.counts}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "NucleiClusters":
        return cls(arrays["mean"], arrays["scale"], arrays["centroids"], arrays["counts"])

    def describe(self) -> list[dict]:
        """Per class: id, nuclei in the fit, and the mean features in natural units (for cards and logs)."""
        natural = self.centroids * self.scale + self.mean
        out = []
        for j, row in enumerate(natural):
            d = dict(zip(FEATURES, (round(float(v), 4) for v in row), strict=False))
            out.append({"id": j + 1, "count": int(self.counts[j]) if len(self.counts) > j else 0,
                        "area_um2": round(float(np.exp(d.pop("log_area_um2"))), 2),
                        "major_axis_um": round(float(np.exp(d.pop("log_major_axis_um"))), 2), **d})
        return out


def fit_nuclei_clusters(features: np.ndarray, k: int = 4, seed: int = 0, max_points: int = 50_000) -> NucleiClusters:
    """k-means of standardized nuclear features; k shrinks to the number of distinct nuclei when fewer.

    At most `max_points` nuclei (a seeded random subset) are used for the fit.
    """
    x = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
    if len(x) > max_points:
        x = x[np.sort(np.random.default_rng(seed).choice(len(x), max_points, replace=False))]
    if len(x) == 0:
        zeros = np.zeros(len(FEATURES))
        return NucleiClusters(zeros, np.ones(len(FEATURES)), zeros[None, :], np.zeros(1, dtype=np.int64))
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-8] = 1.0
    z = (x - mean) / scale
    k = max(1, min(k, len(np.unique(z, axis=0))))
    centroids, labels, _ = kmeans(z, k, seed=seed)
    order = np.argsort(centroids[:, FEATURES.index("log_area_um2")], kind="stable")
    counts = np.bincount(labels, minlength=k)[order]
    return NucleiClusters(mean, scale, centroids[order], counts)


def pseudo_nuclei(instances: np.ndarray, features: np.ndarray, clusters: NucleiClusters) -> Nuclei:
    """`Nuclei` of schema `clusters.schema` from an instance map (1..n) and its features."""
    classes = np.concatenate([[0], clusters.classify(features)]).astype(np.int64)
    return Nuclei.from_instance_map(clusters.schema, instances, classes)


@dataclass(frozen=True)
class DetectionScore:
    """Detection counts and scores from centroid matching."""

    true_positives: int
    predicted: int
    actual: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else (1.0 if not self.actual else 0.0)

    @property
    def recall(self) -> float:
        return self.true_positives / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        total = self.predicted + self.actual
        return 2 * self.true_positives / total if total else 1.0

    def __add__(self, other: "DetectionScore") -> "DetectionScore":
        return DetectionScore(self.true_positives + other.true_positives, self.predicted + other.predicted,
                              self.actual + other.actual)


def detection_scores(predicted: np.ndarray, actual: np.ndarray, radius: float) -> DetectionScore:
    """One-to-one matching of (x, y) centroids within `radius` pixels (Hungarian, minimizing total distance)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 2)
    a = np.asarray(actual, dtype=np.float64).reshape(-1, 2)
    if len(p) == 0 or len(a) == 0:
        return DetectionScore(0, len(p), len(a))
    dist = cdist(p, a)
    cost = np.where(dist <= radius, dist, 1e9)
    rows, cols = linear_sum_assignment(cost)
    return DetectionScore(int((dist[rows, cols] <= radius).sum()), len(p), len(a))


def measure_simulator_f1(
    densities: Sequence[float] = (0.5, 1.0, 2.0), n: int = 16, size: int = 256, seed: int = 0, mpp: float = 0.5,
    params: NucleiParams = NucleiParams(),
) -> dict[float, DetectionScore]:
    """Pooled detection scores of `segment_nuclei` on simulator patches at each nuclei density."""
    from histosynth.schema import instance_centroids
    from histosynth.sources.simulator import SimulatorSource

    scores = {}
    for density in densities:
        total = DetectionScore(0, 0, 0)
        for sample in SimulatorSource(n=n, size=size, seed=seed, mpp=mpp, nuclei_density=density):
            instances = segment_nuclei(sample.image, mpp, params)
            predicted = instance_centroids(instances) if instances.max() > 0 else np.zeros((0, 2))
            truth = sample.nuclei.centroids if sample.nuclei is not None else np.zeros((0, 2))
            total = total + detection_scores(predicted, truth, MATCH_RADIUS_UM / mpp)
        scores[float(density)] = total
    return scores
