"""`camelyon16`: Camelyon16 lymph-node whole-slide images (.tif pyramids, level 0 = 40x, ~0.243 um/px) with
ASAP XML lesion annotations, tiled at a requested mpp.

Format: `training/normal/normal_NNN.tif`, `training/tumor/tumor_NNN.tif`, `testing/images/test_NNN.tif`
(any `.tif`/`.tiff` under `path` except `*_mask.tif` evaluation masks, or `path` itself a slide) and the unzipped `lesion_annotations/<stem>.xml`
(looked up in `annotations` when given, else anywhere under `path`). ASAP XML:
`ASAP_Annotations/Annotations/Annotation[@PartOfGroup]/Coordinates/Coordinate[@Order, @X, @Y]`, level-0 pixels
(parsed by `xml_annotations.parse_asap`). Slides are read lazily through `wsi.Slide`.

Id mapping (schema `camelyon16`):
- polygons of groups "Tumor", "_0", "_1" -> 2 tumor (the polygon itself, as in the official evaluation
  masks: no intersection with the tissue mask);
- polygons of group "_2" (exclusion / non-tumor holes) -> 255 ignore, drawn over the tumor;
- elsewhere, tissue -> 1 normal and glass -> 0, from a luminance threshold (Otsu on the slide thumbnail,
  `wsi.tissue_threshold`) applied to the patch itself (`wsi.tissue_mask`);
- other group names, point annotations in a positive/exclusion group, or vertices outside the slide (an
  XML of another slide) are errors naming the XML file and the annotation.
Slides without an XML: `normal_*` slides are labeled (tissue normal, glass background); any other slide
(e.g. test slides without released annotations) is yielded unlabeled (tissue None), never guessed.

Tiling: a grid of `size` px tiles at `mpp` (default 0.5, ~20x) every `stride` px, kept when the thumbnail
tissue mask covers at least `min_tissue` of the tile; polygons are rasterized at the patch's own resolution
(`wsi.Window.to_pixels`). Provenance: slide_id = slide stem, x/y = level-0 top-left, level read, actual mpp.
Level-0 mpp comes from the TIFF resolution tags (0.25 assumed only if a file has none).

License: CC0-1.0 as published with the CAMELYON data (GigaScience 2018 / AWS open data registry); stated from
the challenge's data release, not re-verified here (UNCERTAIN). Citation: Ehteshami Bejnordi et al., JAMA 2017.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.classes import IGNORE_ID, get_schema
from histosynth.schema import Provenance, Sample
from histosynth.sources.base import Source, SourceMeta
from histosynth.sources.folder import format_error, take
from histosynth.sources.wsi import Slide, Window, check_slide_args, tissue_mask, tissue_windows
from histosynth.sources.xml_annotations import Polygon, fill, intersects, parse_asap

DEFAULT_MPP = 0.25
POSITIVE_GROUPS = ("tumor", "_0", "_1")
EXCLUSION_GROUPS = ("_2",)
_SCHEMA = get_schema("camelyon16")
NORMAL, TUMOR = _SCHEMA.id_of("normal"), _SCHEMA.id_of("tumor")


def read_annotations(xml: Path) -> tuple[list[Polygon], list[Polygon]]:
    """(tumor polygons, exclusion polygons) of an ASAP file; unknown groups and point annotations raise."""
    tumor, exclusion = [], []
    for polygon in parse_asap(xml):
        group = polygon.label.lower()
        if group not in POSITIVE_GROUPS + EXCLUSION_GROUPS:
            raise format_error(xml, f"{polygon.name}: unknown PartOfGroup {polygon.label!r} "
                               f"(Camelyon16 uses Tumor, _0, _1 = tumor and _2 = exclusion)")
        if polygon.kind != "region":
            raise format_error(xml, f"{polygon.name}: a point annotation in group {polygon.label!r}; regions are needed")
        (tumor if group in POSITIVE_GROUPS else exclusion).append(polygon)
    return tumor, exclusion


def check_inside(xml: Path, polygons: list[Polygon], slide: Slide) -> None:
    """Annotations are level-0 pixels of their slide: a vertex beyond it means the XML belongs elsewhere."""
    for polygon in polygons:
        x0, y0, x1, y1 = polygon.bounds()
        if x0 < -1 or y0 < -1 or x1 > slide.width or y1 > slide.height:
            raise format_error(xml, f"{polygon.name}: coordinates ({x0:g}..{x1:g}, {y0:g}..{y1:g}) lie outside the slide "
                               f"{slide.path.name} ({slide.width}x{slide.height} at level 0)")


def label_patch(image: np.ndarray, window: Window, threshold: float, tumor: list[Polygon], exclusion: list[Polygon]) -> np.ndarray:
    """The camelyon16 tissue map of one patch: glass 0, normal 1, tumor polygons 2, exclusion polygons 255."""
    shape = image.shape[:2]
    labels = np.where(tissue_mask(image, threshold), NORMAL, 0).astype(np.uint8)
    for polygons, value in ((tumor, TUMOR), (exclusion, IGNORE_ID)):
        for polygon in polygons:
            x0, y0, x1, y1 = polygon.bounds()
            if x1 < window.x - 1 or y1 < window.y - 1 or x0 > window.x + window.width or y0 > window.y + window.height:
                continue  # cheap level-0 rejection before transforming every vertex
            xy = window.to_pixels(polygon.xy)
            if intersects((xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()), shape[1], shape[0]):
                rows, cols = fill(xy, shape)
                labels[rows, cols] = value
    return labels


class Camelyon16Source(Source):
    """Camelyon16 slides tiled at a requested mpp with normal/tumor/ignore tissue maps."""

    meta = SourceMeta(
        name="camelyon16",
        description="Camelyon16: 399 lymph-node WSIs (40x) with ASAP tumor annotations; tiled with tissue maps",
        license="CC0-1.0",
        url="https://camelyon16.grand-challenge.org/",
        citation="Ehteshami Bejnordi et al., Diagnostic Assessment of Deep Learning Algorithms for Detection of Lymph Node "
                 "Metastases in Women With Breast Cancer, JAMA 318(22), 2017; Litjens et al., GigaScience 7(6), 2018",
        native_mpp=DEFAULT_MPP,
        tissue_schema="camelyon16",
    )

    def __init__(self, path: str | Path, annotations: str | Path | None = None, size: int = 256, mpp: float = 0.5,
                 stride: int | None = None, min_tissue: float = 0.5, n: int | None = None) -> None:
        """Slides under `path` (or one slide), XMLs in `annotations` (default: found under `path`); `size` px tiles at `mpp`."""
        self.path = Path(path)
        check_slide_args("camelyon16", size, mpp, stride, min_tissue, n)
        if self.path.is_file():
            self.slides = [self.path]
        elif self.path.is_dir():
            self.slides = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in (".tif", ".tiff") and p.is_file()
                                 and not p.stem.lower().endswith("_mask"))
        else:
            raise format_error(self.path, "no such slide or folder")
        if not self.slides:
            raise format_error(self.path, "no Camelyon16 slides (*.tif) found")
        self.annotations = Path(annotations) if annotations is not None else None
        if self.annotations is not None and not self.annotations.is_dir():
            raise format_error(self.annotations, "annotations folder not found")
        search = self.annotations or (self.path if self.path.is_dir() else self.path.parent)
        self._xml = {p.stem: p for p in sorted(search.rglob("*.xml"))}
        self.size, self.mpp, self.stride, self.min_tissue, self.n = size, mpp, stride, min_tissue, n

    def _slide_samples(self, path: Path) -> Iterator[Sample]:
        xml = self._xml.get(path.stem)
        tumor, exclusion = read_annotations(xml) if xml is not None else ([], [])
        labeled = xml is not None or path.stem.lower().startswith("normal")
        with Slide(path, default_mpp=DEFAULT_MPP) as slide:
            if xml is not None:
                check_inside(xml, tumor + exclusion, slide)
            tissue, windows = tissue_windows(slide, self.size, self.mpp, self.stride, self.min_tissue, self.skipped)
            for window in windows:
                image = slide.read(window, pad=True)[:, :, :3]
                x, y = window.origin
                yield Sample(
                    image=np.ascontiguousarray(image),
                    provenance=Provenance("camelyon16", path.stem, x=x, y=y, level=slide.window_level(window).index, mpp=window.mpp),
                    tissue=label_patch(image, window, tissue.threshold, tumor, exclusion) if labeled else None,
                    tissue_schema="camelyon16" if labeled else None,
                )

    def _samples(self) -> Iterator[Sample]:
        for path in self.slides:
            yield from self._slide_samples(path)

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
