"""`monusac`: MoNuSAC 2020 nuclei (4 organs, 40x), small TIFF/SVS images with Aperio XML polygons.

Format: per-patient folders `TCGA-XX-XXXX-01Z-00-DX1/` holding `<name>.xml` and the image `<name>.tif` and/or
`<name>.svs` (the same pixels; the .tif is read when both exist, else .svs; tifffile, first page). Each XML
is Aperio ImageScope style: `Annotations/Annotation` with the class name in `Attributes/Attribute/@Name`
and one nucleus per `Regions/Region/Vertices/Vertex[@X, @Y]` (parsed by `xml_annotations.parse_aperio`).

Id mapping: class names are looked up case-insensitively in the `monusac` schema (histosynth.classes):
Epithelial 1, Lymphocyte 2, Neutrophil 3, Macrophage 4 (the order of the challenge's own mask script). Any
other name (e.g. the test set's "Ambiguous" regions) is an error naming the file and the annotation.

Rasterization: each region is filled (`skimage.draw.polygon`: pixels whose center is inside or on the
boundary) as its own instance, in file order, a later region overwriting an earlier one where they overlap;
regions with no pixel inside the image vanish. Instances are relabeled 1..n with exact centroids.

Patches: whole images by default (`size=None`; MoNuSAC images range from 81 x 113 to ~2000 px), or a covering
grid of `size` tiles; provenance slide_id = image stem, x/y = tile top-left, level 0, mpp 0.25.

License: CC BY-NC-SA 4.0 (MoNuSAC 2020 challenge data; as kaiko-ai/eva docs/datasets/monusac.md records).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from histosynth.classes import get_schema
from histosynth.sources.base import SourceMeta
from histosynth.sources.folder import format_error, read_rgb
from histosynth.sources.instance_tiles import InstanceTileSource
from histosynth.sources.xml_annotations import fill, parse_aperio

NATIVE_MPP = 0.25
IMAGE_SUFFIXES = (".tif", ".tiff", ".svs")


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """[(annotation .xml, image)] for every .xml under `root`, preferring .tif over .svs."""
    pairs = []
    for xml in sorted(root.rglob("*.xml")):
        image = next((xml.with_suffix(s) for s in IMAGE_SUFFIXES if xml.with_suffix(s).is_file()), None)
        if image is None:
            raise format_error(xml, f"no image {xml.stem}{{{','.join(IMAGE_SUFFIXES)}}} beside the annotations")
        pairs.append((xml, image))
    if not pairs:
        raise format_error(root, "no MoNuSAC annotation files (*.xml) found")
    return pairs


def rasterize(xml: Path, shape: tuple[int, int]) -> tuple[np.ndarray, dict[int, int]]:
    """Instance map (one id per region, file order) and {instance: monusac class id} of an annotation file."""
    schema = get_schema("monusac")
    inst = np.zeros(shape, dtype=np.int32)
    class_of: dict[int, int] = {}
    for k, polygon in enumerate(parse_aperio(xml), start=1):
        try:
            class_of[k] = schema.id_of(polygon.label)
        except KeyError:
            raise format_error(xml, f"{polygon.name}: unknown class {polygon.label!r} (known: {', '.join(schema.names[1:])})") from None
        rows, cols = fill(polygon.xy, shape)
        inst[rows, cols] = k
    return inst, class_of


class MonusacSource(InstanceTileSource):
    """MoNuSAC images (whole or tiled) with nuclei instances rasterized from their XML polygons."""

    meta = SourceMeta(
        name="monusac",
        description="MoNuSAC 2020: 294 H&E images of 4 organs at 40x with 46k nuclei in 4 classes (polygon annotations)",
        license="CC-BY-NC-SA-4.0",
        url="https://monusac-2020.grand-challenge.org/",
        citation="Verma et al., MoNuSAC2020: A Multi-Organ Nuclei Segmentation and Classification Challenge, IEEE TMI 40(12), 2021",
        native_mpp=NATIVE_MPP,
        nuclei_schema="monusac",
    )

    expected: ClassVar[str] = "MoNuSAC patient folders"

    def __init__(self, path: str | Path, size: int | None = None, stride: int | None = None, n: int | None = None,
                 mpp: float | None = None) -> None:
        """MoNuSAC under `path` (patient folders, any depth); whole images or `size` px tiles; at most `n` patches."""
        super().__init__(path, size, stride, n, mpp)

    def pair_files(self, root: Path) -> list[tuple[Path, Path]]:
        return pair_files(root)

    def read_pair(self, label_path: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        image = read_rgb(image_path)
        inst, class_of = rasterize(label_path, image.shape[:2])
        return image, inst, class_of
