"""`monusac`: MoNuSAC 2020 nuclei (4 organs, 40x), small TIFF/SVS images with Aperio XML polygons.

Format: per-patient folders `TCGA-XX-XXXX-01Z-00-DX1/` holding `<name>.xml` and the image `<name>.tif` and/or
`<name>.svs` (the same pixels; the .tif is read when both exist, else .svs; tifffile, first page). Each XML
is Aperio ImageScope style: `Annotations/Annotation` with the class name in `Attributes/Attribute/@Name`
and one nucleus per `Regions/Region/Vertices/Vertex[@X, @Y]` (parsed by `xml_annotations.parse_aperio`).

Id mapping: class names are looked up case-insensitively in the `monusac` schema (histosynth.classes):
Epithelial 1, Lymphocyte 2, Neutrophil 3, Macrophage 4 (the order of the challenge's own mask script). Any
other name (e.g. the test set's "Ambiguous" regions) is an error naming the file and the annotation.

Rasterisation: each region is filled (`skimage.draw.polygon`: pixels whose centre is inside or on the
boundary) as its own instance, in file order, a later region overwriting an earlier one where they overlap;
regions with no pixel inside the image vanish. Instances are relabelled 1..n with exact centroids.

Patches: whole images by default (`size=None`; MoNuSAC images range from 81 x 113 to ~2000 px), or a covering
grid of `size` tiles; provenance slide_id = image stem, x/y = tile top-left, level 0, mpp 0.25.

Licence: CC BY-NC-SA 4.0 (MoNuSAC 2020 challenge data; REFERENCE.md section 4).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.classes import get_schema
from histosynth.schema import Nuclei, Provenance, Sample
from histosynth.sources.base import Source, SourceMeta
from histosynth.sources.folder import (check_count, check_native_mpp, check_tile_args, format_error, image_size, read_rgb,
                                       take, tile_corners)
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


def rasterise(xml: Path, shape: tuple[int, int]) -> tuple[np.ndarray, dict[int, int]]:
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


class MonusacSource(Source):
    """MoNuSAC images (whole or tiled) with nuclei instances rasterised from their XML polygons."""

    meta = SourceMeta(
        name="monusac",
        description="MoNuSAC 2020: 294 H&E images of 4 organs at 40x with 46k nuclei in 4 classes (polygon annotations)",
        licence="CC-BY-NC-SA-4.0",
        url="https://monusac-2020.grand-challenge.org/",
        citation="Verma et al., MoNuSAC2020: A Multi-Organ Nuclei Segmentation and Classification Challenge, IEEE TMI 40(12), 2021",
        native_mpp=NATIVE_MPP,
        nuclei_schema="monusac",
    )

    def __init__(self, path: str | Path, size: int | None = None, stride: int | None = None, n: int | None = None,
                 mpp: float | None = None) -> None:
        """MoNuSAC under `path` (patient folders, any depth); whole images or `size` px tiles; at most `n` patches."""
        self.path = Path(path)
        if not self.path.is_dir():
            raise format_error(self.path, "not a folder (expected MoNuSAC patient folders)")
        check_tile_args("monusac", size, stride)
        check_count("monusac", n)
        check_native_mpp("monusac", mpp, NATIVE_MPP)
        self.size, self.stride, self.n = size, stride, n
        self.pairs = pair_files(self.path)

    def __len__(self) -> int:
        total = sum(len(tile_corners(*image_size(image), self.size, self.stride)) for _, image in self.pairs)
        return total if self.n is None else min(total, self.n)

    def _samples(self) -> Iterator[Sample]:
        for xml, image_path in self.pairs:
            image = read_rgb(image_path)
            inst, class_of = rasterise(xml, image.shape[:2])
            for top, left, h, w in tile_corners(image.shape[0], image.shape[1], self.size, self.stride):
                yield Sample(
                    image=np.ascontiguousarray(image[top : top + h, left : left + w]),
                    provenance=Provenance("monusac", image_path.stem, x=left, y=top, level=0, mpp=NATIVE_MPP),
                    nuclei=Nuclei.from_instance_map("monusac", inst[top : top + h, left : left + w], class_of),
                )

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
