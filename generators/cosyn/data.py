"""CoSyn's training data: patches with instance maps at the model resolution, and the joint targets made from them.

A patch becomes, at the model resolution R: its image (Lanczos), its instance map (nearest; nuclei that vanish
are dropped and the rest renumbered 1..n by Nuclei.from_instance_map, so the centroids are those of the resized
map), the class of each instance and its tissue-type context. The joint target (`joint_labels`) is the class map as
one-hot (K channels, id 0 = background, ignore-class nuclei on no channel) and HoVer-Net's x/y distance maps
(histosynth.benchmark.downstream.hover_targets, the same targets the downstream HoVer-Net learns), all in [-1, 1];
the condition is the centroids of the same instances, so condition and target agree exactly.
Augmentation rotates / mirrors image and instance map together and recomputes everything from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from histosynth.benchmark.downstream.hover_targets import hover_targets
from histosynth.classes import IGNORE_ID
from histosynth.generators.arrays import TrainingDataError, model_mpp
from histosynth.generators.base import TrainingData
from histosynth.generators.conditioning.batch import NucleiLayout
from histosynth.generators.cosyn.context import context_ids
from histosynth.labels.heterogeneity import is_heterogeneous
from histosynth.resize import resize_image, resize_map
from histosynth.schema import Nuclei, Sample


@dataclass
class JointArrays:
    """Training patches at the model resolution: images, instance maps, per-patch instance classes, contexts."""

    images: np.ndarray  # (N, R, R, 3) uint8
    instances: np.ndarray  # (N, R, R) uint16, 1..n per patch
    classes: list[np.ndarray]  # classes[i][k] is the class id of instance k + 1 of patch i
    contexts: np.ndarray  # (N,) int64 context ids (0 = none)
    mpp: np.ndarray  # (N,) float64 at the model resolution (NaN: unknown)
    schema: str
    description: str = "in-memory Samples"
    license: str = "other"
    source_datasets: list[str] = field(default_factory=list)
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.images)

    def training_data(self) -> TrainingData:
        """What these arrays are, for a TrainReport and the model card."""
        return TrainingData(description=self.description, license=self.license, source_datasets=list(self.source_datasets),
                            patches=len(self), dropped=self.dropped, nuclei_schema=self.schema)


def resized_nuclei(nuclei: Nuclei, resolution: int) -> Nuclei:
    """A patch's nuclei with their instance map resized (nearest) to R x R, renumbered, exact centroids."""
    assert nuclei.instances is not None
    resized = resize_map(nuclei.instances, resolution)
    class_of = np.concatenate([[0], nuclei.class_ids]).astype(np.int64)
    return Nuclei.from_instance_map(nuclei.schema, resized, class_of)


def load_joint_arrays(data: Path | str | Iterable[Sample], resolution: int, contexts: Sequence[str],
                      heterogeneity: tuple[float, float] | None = None) -> JointArrays:
    """Read a dataset folder (or Samples) whose nuclei carry instance maps, at `resolution`, into memory."""
    description, license, sources = "in-memory Samples", "other", []
    if isinstance(data, (str, Path)):
        from histosynth.disk import iter_samples, read_metadata

        meta = read_metadata(data)
        description = f"dataset folder {Path(data).name!r} ({meta.get('pretty_name', '')})"
        license = str(meta.get("license", "other"))
        sources = [s.split("|")[-1] for s in meta.get("source_datasets", []) if s != "original"]
        samples: Iterable[Sample] = iter_samples(data)
    else:
        samples = data
    images, instances, classes, kept, mpp = [], [], [], [], []
    schema: str | None = None
    dropped = 0
    for i, sample in enumerate(samples):
        if sample.nuclei is None or sample.nuclei.instances is None:
            raise TrainingDataError(f"training sample {i} ({sample.where}) has no nuclei instance map; CoSyn learns "
                                    "images with their instance masks (e.g. simulator or PanNuke data)")
        schema = schema or sample.nuclei.schema
        if sample.nuclei.schema != schema:
            raise TrainingDataError(f"training sample {i} ({sample.where}) uses nuclei schema "
                                    f"{sample.nuclei.schema!r}, earlier ones {schema!r}")
        if sample.tissue is not None and heterogeneity is not None and not is_heterogeneous(sample.tissue,
                                                                                             *heterogeneity):
            dropped += 1
            continue
        nuclei = resized_nuclei(sample.nuclei, resolution)
        images.append(resize_image(sample.image, resolution))
        instances.append(nuclei.instances)
        classes.append(nuclei.class_ids)
        kept.append(sample)
        mpp.append(model_mpp(sample, resolution))
    if not kept:
        raise TrainingDataError(f"no training patches in {description}"
                                + (f" ({dropped} failed the heterogeneity rule {heterogeneity})" if dropped else ""))
    assert schema is not None
    return JointArrays(np.stack(images), np.stack(instances), classes, context_ids(kept, contexts),
                       np.asarray(mpp, np.float64), schema, description, license, sources, dropped)


def joint_labels(instances: np.ndarray, class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """(K + 2, R, R) float32 in [-1, 1]: the class map one-hot (K channels, 0 = background), then HoVer x / y maps."""
    n = len(class_ids)
    drawn = np.where(class_ids == IGNORE_ID, 0, class_ids).astype(np.intp)  # ignore-class nuclei: on no channel
    pixel_class = np.concatenate([[0], drawn])[instances]
    onehot = np.zeros((num_classes, *instances.shape), np.float32)
    np.put_along_axis(onehot, pixel_class[None], 1.0, axis=0)
    if (class_ids == IGNORE_ID).any():
        onehot[0][np.isin(instances, np.flatnonzero(class_ids == IGNORE_ID) + 1)] = 0.0
    hv = hover_targets(instances, np.ones(n, np.uint8)).hv
    return np.concatenate([onehot * 2.0 - 1.0, hv]).astype(np.float32)


def layout_of(instances: np.ndarray, class_ids: np.ndarray) -> NucleiLayout:
    """The classed centroids of an instance map numbered 1..n (the condition that matches its targets)."""
    from histosynth.schema import instance_centroids

    n = len(class_ids)
    centroids = instance_centroids(instances, n) if n else np.zeros((0, 2), np.float32)
    return NucleiLayout(centroids, np.asarray(class_ids, np.uint8))


def rotate_flip(array: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """`np.rot90(array, k)` then, with `flip`, mirrored left-right (histosynth.generators.arrays.augment's rule)."""
    out = np.rot90(array, k)
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def augment_pairs(images: np.ndarray, instances: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Each image and its instance map rotated by k quarter turns and maybe mirrored, alike (k for all items first,
    then the flips, as arrays.augment draws them)."""
    n = len(images)
    turns, flips = rng.integers(0, 4, n), rng.integers(0, 2, n)
    out_images = np.stack([rotate_flip(images[j], int(turns[j]), bool(flips[j])) for j in range(n)])
    out_instances = np.stack([rotate_flip(instances[j], int(turns[j]), bool(flips[j])) for j in range(n)])
    return out_images, out_instances
