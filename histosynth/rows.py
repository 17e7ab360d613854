"""Lossless conversion between `Sample` and one `datasets` row.

Columns: `image` (PNG, datasets.Image), `tissue` (8-bit PNG, Image(mode="L")), `nuclei` (list of
{x, y, class_id: ClassLabel}), `nuclei_instances` (16-bit gray PNG), `completion_mask` (8-bit PNG, 0/255),
the two schema names, and one column per provenance field. A null column means "not labeled".
PNG is lossless, so pixels, labels and ids survive exactly.
"""

from __future__ import annotations

import io
from typing import Any

import datasets
import numpy as np
from PIL import Image

from histosynth.classes import get_schema
from histosynth.schema import PROVENANCE_FIELDS, Nuclei, Provenance, Sample, SampleValidationError

PNG_COMPRESS_LEVEL = 6  # fixed so that the same Sample always gives the same bytes

_PROVENANCE_TYPES = {
    "source": "string", "slide_id": "string", "x": "int64", "y": "int64", "level": "int32", "mpp": "float64",
    "generator": "string", "generator_version": "string", "checkpoint_hash": "string", "seed": "int64",
}
assert set(_PROVENANCE_TYPES) == set(PROVENANCE_FIELDS), "keep provenance columns in step with Provenance"


def features_for(tissue_schema: str | None, nuclei_schema: str | None) -> datasets.Features:
    """The `datasets.Features` of a dataset whose samples use these schemas (None = that label is absent)."""
    if nuclei_schema is not None:
        class_feature: Any = datasets.ClassLabel(names=get_schema(nuclei_schema).names)
    else:
        class_feature = datasets.Value("uint8")
    if tissue_schema is not None:
        get_schema(tissue_schema)  # unknown names fail here, not at the first row
    columns: dict[str, Any] = {
        "image": datasets.Image(),
        "tissue": datasets.Image(mode="L"),
        "tissue_schema": datasets.Value("string"),
        "nuclei": datasets.List({"x": datasets.Value("float32"), "y": datasets.Value("float32"), "class_id": class_feature}),
        "nuclei_instances": datasets.Image(),
        "nuclei_schema": datasets.Value("string"),
        "completion_mask": datasets.Image(mode="L"),
    }
    columns.update({name: datasets.Value(dtype) for name, dtype in _PROVENANCE_TYPES.items()})
    return datasets.Features(columns)


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8, gray uint8 or gray uint16 array."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _png_cell(array: np.ndarray | None) -> dict[str, Any] | None:
    return None if array is None else {"bytes": encode_png(array), "path": None}


def sample_to_row(sample: Sample) -> dict[str, Any]:
    """The encoded (storage-ready) row of a Sample: images as {bytes, path} PNG cells."""
    nuclei = sample.nuclei
    row: dict[str, Any] = {
        "image": _png_cell(sample.image),
        "tissue": _png_cell(sample.tissue),
        "tissue_schema": sample.tissue_schema,
        "nuclei": None if nuclei is None else [{"x": float(x), "y": float(y), "class_id": int(c)} for (x, y), c in zip(nuclei.centroids, nuclei.class_ids, strict=False)],
        "nuclei_instances": None if nuclei is None else _png_cell(nuclei.instances),
        "nuclei_schema": None if nuclei is None else nuclei.schema,
        "completion_mask": _png_cell(None if sample.completion_mask is None else sample.completion_mask.astype(np.uint8) * 255),
    }
    row.update({name: getattr(sample.provenance, name) for name in PROVENANCE_FIELDS})
    return row


def _to_array(cell: Any, column: str, where: str) -> np.ndarray | None:
    """Decode a PIL image (decoded row) or a {bytes, path} cell (raw parquet row) to a numpy array."""
    if cell is None:
        return None
    try:
        if isinstance(cell, dict):
            data = cell.get("bytes")
            if data is None and cell.get("path"):
                with open(cell["path"], "rb") as fh:
                    data = fh.read()
            cell = Image.open(io.BytesIO(data))
        cell.load()
    except Exception as err:  # PIL raises many types for corrupt data
        raise SampleValidationError(f"{where}: {column}: cannot decode image ({err})") from err
    return np.asarray(cell)


COLUMNS: tuple[str, ...] = ("image", "tissue", "tissue_schema", "nuclei", "nuclei_instances", "nuclei_schema",
                            "completion_mask", *PROVENANCE_FIELDS)


def row_to_sample(row: dict[str, Any]) -> Sample:
    """Rebuild the Sample of a row (decoded by `datasets` or raw from parquet); validates it."""
    missing = [name for name in COLUMNS if name not in row]
    if missing:  # a dropped label column would otherwise read as "not labeled"
        raise SampleValidationError(f"row: missing column(s) {missing}; a histosynth row has {list(COLUMNS)}")
    provenance = Provenance(**{name: row.get(name) for name in PROVENANCE_FIELDS})
    where = f"row {provenance.describe()}"
    image = _to_array(row["image"], "image", where)
    if image is not None and image.ndim == 3 and image.shape[2] == 4:
        raise SampleValidationError(f"{where}: image: RGBA image; histosynth stores RGB patches")
    tissue = _to_array(row.get("tissue"), "tissue", where)
    nuclei = None
    if row.get("nuclei") is not None:
        items = row["nuclei"]
        if isinstance(items, dict):  # columnar form {x: [...], y: [...], class_id: [...]}
            items = [dict(zip(items, values, strict=False)) for values in zip(*items.values(), strict=False)]
        instances = _to_array(row.get("nuclei_instances"), "nuclei_instances", where)
        if instances is not None and instances.dtype != np.uint16:
            if instances.min(initial=0) < 0 or instances.max(initial=0) > 65535:
                raise SampleValidationError(f"{where}: nuclei_instances: ids outside 0..65535")
            instances = instances.astype(np.uint16)
        try:
            nuclei = Nuclei.from_list(row["nuclei_schema"], [(n["x"], n["y"], n["class_id"]) for n in items], instances)
        except (SampleValidationError, TypeError, KeyError, ValueError) as err:
            raise SampleValidationError(f"{where}: nuclei: not a list of {{x, y, class_id}} with class ids 0..255 ({err})") from None
    mask = _to_array(row.get("completion_mask"), "completion_mask", where)
    return Sample(
        image=image,
        provenance=provenance,
        tissue=tissue,
        tissue_schema=row.get("tissue_schema") if tissue is not None else None,
        nuclei=nuclei,
        completion_mask=None if mask is None else mask > 127,
    )
