"""`Sample`: the one data model every stage reads and writes.

A Sample is an RGB uint8 patch plus optional labels: a tissue map (uint8 class per pixel) and nuclei
(classed centroids, optionally with a uint16 instance map), an optional completion mask, and provenance.
`None` means "not labeled", which is different from an all-background map.

Conventions:
- arrays are (H, W[, C]) row-major; centroids are (x, y) in pixel-index coordinates (x = column,
  y = row, the center of pixel (r, c) is (c, r)), so a centroid lies in [0, W-1] x [0, H-1];
- an instance map numbers its nuclei 1..n with no gaps and centroid k belongs to instance k + 1, so the
  class of every instance is known (use `Nuclei.from_instance_map` to relabel arbitrary ids);
- class ids come from the class-schema registry (histosynth.classes).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Iterable

import numpy as np

from histosynth.classes import IGNORE_ID, get_schema
from histosynth.errors import InputError


class SampleValidationError(InputError):
    """A Sample (or part of one) violates the schema; the message names the field, the problem and the origin."""


def _fail(where: str, field_name: str, problem: str) -> SampleValidationError:
    return SampleValidationError(f"{where}: {field_name}: {problem}")


def _check_array(where: str, name: str, value: object, dtype: type, ndim: int) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise _fail(where, name, f"expected a numpy array, got {type(value).__name__}")
    if value.ndim != ndim:
        raise _fail(where, name, f"expected {ndim} dimensions, got shape {value.shape}")
    if value.dtype != dtype:
        raise _fail(where, name, f"expected dtype {np.dtype(dtype).name}, got {value.dtype.name}")
    return value


@dataclass(frozen=True)
class Provenance:
    """Where a patch came from: a real slide region, or a generator run."""

    source: str
    slide_id: str | None = None
    x: int | None = None  # top-left, level-0 pixels
    y: int | None = None
    level: int | None = None
    mpp: float | None = None  # microns per pixel of the patch as stored
    generator: str | None = None
    generator_version: str | None = None
    checkpoint_hash: str | None = None
    seed: int | None = None

    def describe(self) -> str:
        """Short origin string used in error messages."""
        parts = [str(self.source)]
        if self.slide_id is not None:
            parts.append(str(self.slide_id))
        if self.x is not None and self.y is not None:
            parts.append(f"x={self.x},y={self.y}")
        if self.generator is not None:
            parts.append(f"{self.generator} seed={self.seed}")
        return ":".join(parts)


@dataclass(eq=False)
class Nuclei:
    """Classed nuclei of one patch: centroids (n, 2) float32 (x, y), class ids (n,) uint8, optional instance map."""

    schema: str
    centroids: np.ndarray
    class_ids: np.ndarray
    instances: np.ndarray | None = None

    @classmethod
    def from_list(cls, schema: str, items: Iterable[tuple[float, float, int]], instances: np.ndarray | None = None) -> "Nuclei":
        """Build from (x, y, class_id) tuples; numbers are converted to float32 / uint8."""
        rows = list(items)
        xy = np.array([(x, y) for x, y, _ in rows], dtype=np.float32).reshape(-1, 2)
        ids = np.array([c for _, _, c in rows], dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise SampleValidationError(f"nuclei: class ids must be 0..255, got {ids.min()}..{ids.max()}")
        return cls(schema, xy, ids.astype(np.uint8), instances)

    @classmethod
    def from_instance_map(cls, schema: str, instances: np.ndarray, class_of: dict[int, int] | np.ndarray) -> "Nuclei":
        """Relabel any integer instance map to 1..n (in ascending order of the original ids) with exact centroids.

        `class_of` maps each original instance id to its class id (dict, or an array indexed by id).
        """
        labels = np.asarray(instances)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
            raise SampleValidationError(f"nuclei: instance map must be a 2-D integer array, got {labels.dtype} {labels.shape}")
        if labels.size and labels.min() < 0:
            raise SampleValidationError("nuclei: instance map has negative ids")
        old_ids, dense = np.unique(labels, return_inverse=True)
        dense = dense.reshape(labels.shape)
        if old_ids.size and old_ids[0] != 0:
            dense = dense + 1  # no background pixel: id 0 is absent, shift so instances start at 1
            old_ids = np.concatenate([[0], old_ids])
        n = len(old_ids) - 1
        if n > np.iinfo(np.uint16).max:
            raise SampleValidationError(f"nuclei: {n} instances do not fit a uint16 instance map")
        lookup = (lambda i: class_of[int(i)]) if isinstance(class_of, dict) else (lambda i: np.asarray(class_of)[int(i)])
        try:
            classes = np.array([lookup(i) for i in old_ids[1:]], dtype=np.int64)
        except (KeyError, IndexError) as err:
            raise SampleValidationError(f"nuclei: instance id {err} has no class") from None
        return cls(schema, instance_centroids(dense, n), classes.astype(np.uint8), dense.astype(np.uint16))

    def as_tuples(self) -> list[tuple[float, float, int]]:
        """[(x, y, class_id), ...]."""
        return [(float(x), float(y), int(c)) for (x, y), c in zip(self.centroids, self.class_ids, strict=False)]

    def __len__(self) -> int:
        return len(self.class_ids)

    def class_map(self) -> np.ndarray:
        """Per-pixel nuclear class (0 outside nuclei), from the instance map: HoVer-Net's type map."""
        if self.instances is None:
            raise ValueError("class_map needs an instance map; these nuclei are centroids only")
        lut = np.concatenate([[0], self.class_ids]).astype(np.uint8)
        return lut[self.instances]

    def validate(self, where: str, height: int, width: int) -> None:
        """Raise SampleValidationError unless shapes, dtypes, classes and coordinates are consistent."""
        schema = _schema_or_fail(where, "nuclei.schema", self.schema, "nuclei")
        _check_array(where, "nuclei.centroids", self.centroids, np.float32, 2)
        if self.centroids.shape[1:] != (2,):
            raise _fail(where, "nuclei.centroids", f"expected shape (n, 2) of (x, y), got {self.centroids.shape}")
        _check_array(where, "nuclei.class_ids", self.class_ids, np.uint8, 1)
        n = len(self.class_ids)
        if len(self.centroids) != n:
            raise _fail(where, "nuclei", f"{len(self.centroids)} centroids but {n} class ids")
        if not np.isfinite(self.centroids).all():
            bad = int(np.flatnonzero(~np.isfinite(self.centroids).all(axis=1))[0])
            raise _fail(where, "nuclei.centroids", f"nucleus {bad} has a non-finite coordinate {self.centroids[bad].tolist()}")
        valid = set(schema.foreground_ids)
        unknown = sorted(set(np.unique(self.class_ids).tolist()) - valid)
        if unknown:
            raise _fail(where, "nuclei.class_ids", f"ids {unknown} are not nucleus classes of schema {schema.name!r} (valid: {sorted(valid)})")
        outside = (self.centroids[:, 0] < 0) | (self.centroids[:, 0] > width - 1) | (self.centroids[:, 1] < 0) | (self.centroids[:, 1] > height - 1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise _fail(where, "nuclei.centroids", f"nucleus {i} at (x, y) = {self.centroids[i].tolist()} lies outside the {width}x{height} patch")
        if self.instances is not None:
            inst = _check_array(where, "nuclei.instances", self.instances, np.uint16, 2)
            if inst.shape != (height, width):
                raise _fail(where, "nuclei.instances", f"shape {inst.shape} does not match the patch ({height}, {width})")
            present = np.unique(inst)
            present = present[present != 0]
            if len(present) != n or (n and (present[0] != 1 or present[-1] != n)):
                raise _fail(where, "nuclei.instances", f"instance ids must be exactly 1..{n} (one per centroid); found {len(present)} ids "
                            f"from {present[:1].tolist()} to {present[-1:].tolist()}; use Nuclei.from_instance_map to relabel")

    def equals(self, other: "Nuclei") -> bool:
        """Exact equality of schema, centroids, classes and instance map."""
        return (
            self.schema == other.schema
            and np.array_equal(self.centroids, other.centroids)
            and np.array_equal(self.class_ids, other.class_ids)
            and _optional_equal(self.instances, other.instances)
        )


def instance_centroids(instances: np.ndarray, n: int | None = None) -> np.ndarray:
    """Exact (x, y) pixel centroids of instances 1..n of a label map, as (n, 2) float32."""
    flat = instances.ravel().astype(np.intp)
    n = int(flat.max()) if n is None and flat.size else (n or 0)
    rows, cols = np.indices(instances.shape)
    counts = np.bincount(flat, minlength=n + 1)[1 : n + 1]
    if (counts == 0).any():
        raise SampleValidationError(f"nuclei: instance ids {(np.flatnonzero(counts == 0) + 1)[:5].tolist()} have no pixels")
    sx = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1 : n + 1]
    sy = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1 : n + 1]
    return np.stack([sx / counts, sy / counts], axis=1).astype(np.float32).reshape(-1, 2)


def _schema_or_fail(where: str, field_name: str, name: object, kind: str):
    if not isinstance(name, str):
        raise _fail(where, field_name, f"expected a class-schema name, got {name!r}")
    try:
        schema = get_schema(name)
    except KeyError as err:
        raise _fail(where, field_name, str(err)) from None
    if schema.kind != kind:
        raise _fail(where, field_name, f"schema {name!r} is a {schema.kind} schema, expected a {kind} schema")
    return schema


def _optional_equal(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and np.array_equal(a, b)


@dataclass(eq=False)
class Sample:
    """One patch with its labels and provenance; validated on construction."""

    image: np.ndarray
    provenance: Provenance
    tissue: np.ndarray | None = None
    tissue_schema: str | None = None
    nuclei: Nuclei | None = None
    completion_mask: np.ndarray | None = None  # True = region to complete (Dual-LoRA local completion)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def where(self) -> str:
        """Origin of the sample, for messages."""
        prov = self.provenance
        return f"sample {prov.describe()}" if isinstance(prov, Provenance) else "sample"

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def validate(self) -> None:
        """Raise SampleValidationError naming the field and problem unless everything is consistent."""
        if not isinstance(self.provenance, Provenance):
            raise _fail("sample", "provenance", f"expected Provenance, got {type(self.provenance).__name__}")
        if not isinstance(self.provenance.source, str) or not self.provenance.source:
            raise _fail(self.where, "provenance.source", f"expected the name of a source, got {self.provenance.source!r}")
        where = self.where
        image = _check_array(where, "image", self.image, np.uint8, 3)
        if image.shape[2] != 3:
            raise _fail(where, "image", f"expected 3 RGB channels, got shape {image.shape}")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise _fail(where, "image", f"empty image of shape {image.shape}")
        h, w = image.shape[:2]
        if (self.tissue is None) != (self.tissue_schema is None):
            raise _fail(where, "tissue", "a tissue map and its tissue_schema go together (both or neither)")
        if self.tissue is not None:
            schema = _schema_or_fail(where, "tissue_schema", self.tissue_schema, "tissue")
            tissue = _check_array(where, "tissue", self.tissue, np.uint8, 2)
            if tissue.shape != (h, w):
                raise _fail(where, "tissue", f"shape {tissue.shape} does not match the patch ({h}, {w})")
            unknown = sorted(set(np.unique(tissue).tolist()) - schema.valid_ids())
            if unknown:
                raise _fail(where, "tissue", f"ids {unknown} are not in schema {schema.name!r} (valid: 0..{schema.num_classes - 1}, {IGNORE_ID})")
        if self.nuclei is not None:
            if not isinstance(self.nuclei, Nuclei):
                raise _fail(where, "nuclei", f"expected Nuclei, got {type(self.nuclei).__name__}")
            self.nuclei.validate(where, h, w)
        if self.completion_mask is not None:
            mask = _check_array(where, "completion_mask", self.completion_mask, np.bool_, 2)
            if mask.shape != (h, w):
                raise _fail(where, "completion_mask", f"shape {mask.shape} does not match the patch ({h}, {w})")

    def equals(self, other: "Sample") -> bool:
        """Exact equality of pixels, labels and provenance (what a lossless round trip must preserve)."""
        return (
            np.array_equal(self.image, other.image)
            and self.provenance == other.provenance
            and self.tissue_schema == other.tissue_schema
            and _optional_equal(self.tissue, other.tissue)
            and (self.nuclei is None) == (other.nuclei is None)
            and (self.nuclei is None or self.nuclei.equals(other.nuclei))  # type: ignore[arg-type]
            and _optional_equal(self.completion_mask, other.completion_mask)
        )

    def with_provenance(self, **changes: object) -> "Sample":
        """A copy with some provenance fields changed (e.g. generator, seed)."""
        return replace(self, provenance=replace(self.provenance, **changes))


PROVENANCE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Provenance))
