"""From generated label channels to nuclei: class map + HoVer distance maps -> instances -> classed centroids, and
the check that the generated nuclei sit at their conditioning centroids.

Decoding shares the downstream HoVer-Net's marker-controlled watershed (histosynth.benchmark.downstream.hover_post):
the nuclear probability is 1 - p(background), the HV maps are the two distance channels, and each instance's class
is the majority vote of the per-pixel argmax over the nuclear classes (background excluded, so every decoded
nucleus has a real class). Class probabilities are the one-hot channels mapped from [-1, 1] to [0, 1], clipped at
0 and normalized per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from histosynth.benchmark.downstream.hover_post import hover_postprocess
from histosynth.classes import IGNORE_ID
from histosynth.deprecated import renamed_field
from histosynth.generators.arrays import scale_centroids
from histosynth.schema import Nuclei, Sample


def class_probabilities(onehot: np.ndarray) -> np.ndarray:
    """(K, R, R) channels in [-1, 1] -> per-pixel class probabilities (uniform where every channel is <= -1)."""
    p = np.clip((np.asarray(onehot, np.float64) + 1.0) / 2.0, 0.0, None)
    total = p.sum(axis=0, keepdims=True)
    k = p.shape[0]
    return np.where(total > 0, p / np.where(total > 0, total, 1.0), 1.0 / k)


def decode_nuclei(labels: np.ndarray, schema: str, mpp: float) -> Nuclei:
    """Nuclei (instance map 1..n, centroids, classes) from the K + 2 generated label channels of one patch."""
    labels = np.asarray(labels, np.float64)
    probs = class_probabilities(labels[:-2])
    nuclear = probs.copy()
    nuclear[0] = 0.0  # vote among nuclear classes only: a decoded nucleus always gets a real class
    found = hover_postprocess(1.0 - probs[0], np.clip(labels[-2:], -1.0, 1.0), nuclear, mpp)
    return Nuclei(schema, found.centroids.astype(np.float32).reshape(-1, 2), found.types.astype(np.uint8),
                  found.instances.astype(np.uint16))


@dataclass(frozen=True)
class Consistency:
    """How well generated nuclei honor their conditioning centroids (counts over a set of outputs).

    A conditioning centroid is honored when a generated nucleus has a pixel within `tolerance_px` of the
    centroid's pixel (0: the nucleus covers that pixel); `same_class` also needs that nucleus's class to be the
    centroid's. A generated nucleus is spurious when it lies within tolerance of no conditioning centroid.
    """

    centroids: int
    honored: int
    same_class: int
    generated: int
    spurious: int
    tolerance_px: float

    @property
    def share(self) -> float:
        """The label-consistency share: honored / conditioning centroids (NaN without centroids)."""
        return self.honored / self.centroids if self.centroids else float("nan")

    @property
    def class_share(self) -> float:
        return self.same_class / self.centroids if self.centroids else float("nan")

    @property
    def spurious_share(self) -> float:
        return self.spurious / self.generated if self.generated else float("nan")

    def __add__(self, other: "Consistency") -> "Consistency":
        return Consistency(self.centroids + other.centroids, self.honored + other.honored,
                           self.same_class + other.same_class, self.generated + other.generated,
                           self.spurious + other.spurious, self.tolerance_px)


renamed_field(Consistency, "honoured", "honored")  # the British spelling, for one release


def consistency(condition: Nuclei, generated: Nuclei, height: int, width: int, tolerance_px: float) -> Consistency:
    """Check one output's `generated` nuclei (with instances) against `condition`'s centroids, both on the output's
    height x width grid (`consistency_of` maps a condition of another size onto it first)."""
    assert generated.instances is not None
    keep = condition.class_ids != IGNORE_ID
    xy = np.floor(np.asarray(condition.centroids, np.float64)[keep] + 0.5).astype(np.int64).reshape(-1, 2)
    rows, cols = np.clip(xy[:, 1], 0, height - 1), np.clip(xy[:, 0], 0, width - 1)
    classes = condition.class_ids[keep]
    instances = generated.instances.astype(np.int64)
    if tolerance_px > 0:  # each centroid sees the instances within tolerance: distance to the nearest nuclear pixel
        distance, (near_r, near_c) = ndimage.distance_transform_edt(instances == 0, return_indices=True)
        hit_id = np.where(distance[rows, cols] <= tolerance_px, instances[near_r[rows, cols], near_c[rows, cols]], 0)
    else:
        hit_id = instances[rows, cols]
    lut = np.concatenate([[0], generated.class_ids]).astype(np.int64)
    honored = hit_id > 0
    same = honored & (lut[hit_id] == classes)
    n = len(generated)
    claimed = np.zeros(n + 1, bool)
    claimed[hit_id] = True
    if tolerance_px > 0 and len(rows):  # a nucleus also counts as placed when any centroid lies within tolerance
        grid = np.zeros((height, width), bool)
        grid[rows, cols] = True
        near = ndimage.distance_transform_edt(~grid) <= tolerance_px
        claimed[np.unique(instances[near])] = True
    spurious = int(n - claimed[1:].sum())
    return Consistency(int(len(rows)), int(honored.sum()), int(same.sum()), n, spurious, float(tolerance_px))


def consistency_of(conditions: Sequence[Sample], outputs: Sequence[Sample], tolerance_px: float) -> Consistency:
    """The summed Consistency of outputs[j] against conditions[j] (centroids scaled to the output's grid)."""
    total = Consistency(0, 0, 0, 0, 0, float(tolerance_px))
    for cond, out in zip(conditions, outputs, strict=True):
        if cond.nuclei is None or out.nuclei is None:
            raise ValueError("consistency needs nuclei on every condition and output")
        xy = scale_centroids(cond.nuclei.centroids, cond.height, cond.width, out.width)
        placed = Nuclei(cond.nuclei.schema, xy, cond.nuclei.class_ids)
        total = total + consistency(placed, out.nuclei, out.height, out.width, tolerance_px)
    return total
