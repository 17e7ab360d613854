"""Polygon annotations in XML: ASAP (Camelyon16) and Aperio ImageScope (MoNuSAC), and their rasterization.

ASAP: `ASAP_Annotations/Annotations/Annotation[@Name, @Type, @PartOfGroup]/Coordinates/Coordinate[@Order, @X, @Y]`,
level-0 pixel coordinates; the polygon's label is its `PartOfGroup`. Types Polygon, Spline (its control
points are used as the polygon) and Rectangle are regions; Dot and PointSet are points (kind "points").

Aperio: `Annotations/Annotation[@Id]` with the class in `Attributes/Attribute/@Name` (first attribute) and one
polygon per `Regions/Region/Vertices/Vertex[@X, @Y]`; the polygon's label is that class name.

Parsing is strict: a file that is not well-formed, a wrong root element, a missing attribute, a non-numeric
coordinate or a region with fewer than 3 vertices raises `FormatError` naming the file, the annotation (and
region) and the problem. Mapping labels to class ids is the reader's job.

Rasterization follows `skimage.draw.polygon`: a pixel belongs to a polygon when its center lies inside or on
the boundary; vertices are pixel-index coordinates (the center of pixel (row r, column c) is (x=c, y=r)).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histosynth.sources.folder import format_error

ASAP_REGION_TYPES = {"polygon", "spline", "rectangle"}
ASAP_POINT_TYPES = {"dot", "pointset"}


@dataclass(frozen=True, eq=False)
class Polygon:
    """One annotated shape: its label (ASAP group / Aperio class), a name for messages, kind and (k, 2) (x, y) vertices."""

    label: str
    name: str
    xy: np.ndarray
    kind: str = "region"  # "region" or "points"

    def bounds(self) -> tuple[float, float, float, float]:
        """(x_min, y_min, x_max, y_max) of the vertices."""
        return (float(self.xy[:, 0].min()), float(self.xy[:, 1].min()), float(self.xy[:, 0].max()), float(self.xy[:, 1].max()))


def _root(path: Path, expected: str) -> ET.Element:
    if not path.is_file():
        raise format_error(path, "annotation file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise format_error(path, f"not well-formed XML ({err})") from None
    if root.tag != expected:
        raise format_error(path, f"root element is <{root.tag}>, expected <{expected}>")
    return root


def _number(path: Path, where: str, element: ET.Element, attribute: str) -> float:
    value = element.get(attribute)
    if value is None:
        raise format_error(path, f"{where}: <{element.tag}> has no {attribute} attribute")
    try:
        number = float(value)
    except ValueError:
        raise format_error(path, f"{where}: {attribute}={value!r} is not a number") from None
    if not np.isfinite(number):
        raise format_error(path, f"{where}: {attribute}={value!r} is not finite")
    return number


def parse_asap(path: str | Path) -> list[Polygon]:
    """The annotations of an ASAP XML file in document order (vertices sorted by Order)."""
    path = Path(path)
    root = _root(path, "ASAP_Annotations")
    polygons = []
    for i, annotation in enumerate(root.findall("Annotations/Annotation")):
        where = f"annotation {i} ({annotation.get('Name', 'unnamed')!r})"
        group = annotation.get("PartOfGroup")
        if group is None:
            raise format_error(path, f"{where}: <Annotation> has no PartOfGroup attribute")
        kind_name = (annotation.get("Type") or "Polygon").lower()
        if kind_name not in ASAP_REGION_TYPES | ASAP_POINT_TYPES:
            raise format_error(path, f"{where}: unknown annotation Type {annotation.get('Type')!r}")
        coordinates = annotation.find("Coordinates")
        if coordinates is None:
            raise format_error(path, f"{where}: no <Coordinates> element")
        rows = []
        for j, coordinate in enumerate(coordinates.findall("Coordinate")):
            at = f"{where}, coordinate {j}"
            order = _number(path, at, coordinate, "Order") if coordinate.get("Order") is not None else float(j)
            rows.append((order, _number(path, at, coordinate, "X"), _number(path, at, coordinate, "Y")))
        kind = "points" if kind_name in ASAP_POINT_TYPES else "region"
        if kind == "region" and len(rows) < 3:
            raise format_error(path, f"{where}: a {annotation.get('Type') or 'Polygon'} needs at least 3 coordinates, got {len(rows)}")
        rows.sort(key=lambda r: r[0])
        xy = np.array([(x, y) for _, x, y in rows], dtype=np.float64).reshape(-1, 2)
        polygons.append(Polygon(group, where, xy, kind))
    return polygons


def parse_aperio(path: str | Path) -> list[Polygon]:
    """The regions of an Aperio ImageScope XML file, each labeled with its annotation's class name."""
    path = Path(path)
    root = _root(path, "Annotations")
    polygons = []
    for i, annotation in enumerate(root.findall("Annotation")):
        where = f"annotation {i} (Id={annotation.get('Id', '?')})"
        attribute = annotation.find("Attributes/Attribute")
        if attribute is None or not attribute.get("Name"):
            raise format_error(path, f"{where}: no Attributes/Attribute with a Name (the class)")
        label = attribute.get("Name", "")
        for j, region in enumerate(annotation.findall("Regions/Region")):
            at = f"{where}, region {j} (Id={region.get('Id', '?')})"
            vertices = region.findall("Vertices/Vertex")
            if len(vertices) < 3:
                raise format_error(path, f"{at}: a region needs at least 3 vertices, got {len(vertices)}")
            xy = np.array([(_number(path, f"{at}, vertex {k}", v, "X"), _number(path, f"{at}, vertex {k}", v, "Y"))
                           for k, v in enumerate(vertices)], dtype=np.float64)
            polygons.append(Polygon(label, at, xy))
    return polygons


def fill(xy: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the pixels of an image of `shape` whose centers lie in the polygon with (x, y) vertices `xy`."""
    from skimage.draw import polygon

    xy = np.asarray(xy, dtype=np.float64)
    return polygon(xy[:, 1], xy[:, 0], shape)


def intersects(bounds: tuple[float, float, float, float], width: float, height: float) -> bool:
    """Whether a polygon's (x_min, y_min, x_max, y_max) box in patch pixel coordinates touches a width x height patch."""
    x0, y0, x1, y1 = bounds
    return x1 >= -0.5 and y1 >= -0.5 and x0 <= width - 0.5 and y0 <= height - 0.5

