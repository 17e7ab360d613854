"""Write small files in the real formats of the datasets, with the libraries the datasets themselves use
(numpy .npy, scipy.io.savemat, tifffile pyramids with resolution tags, ElementTree XML), for reader tests."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image
from scipy import ndimage
from scipy.io import savemat


def write_png(path: Path, array: np.ndarray) -> Path:
    """Save a uint8 array (H, W[, 3]) as PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_pannuke_fold(folder: Path, images: np.ndarray, masks: np.ndarray, types: Sequence[str], nested: str | None = None) -> dict[str, Path]:
    """images.npy / masks.npy / types.npy as released: flat in `folder`, or nested as `Fold k/images/foldk/...` when `nested="k"`."""
    if nested is None:
        dirs = {"images.npy": folder, "types.npy": folder, "masks.npy": folder}
    else:
        base = folder / f"Fold {nested}"
        dirs = {"images.npy": base / "images" / f"fold{nested}", "types.npy": base / "images" / f"fold{nested}",
                "masks.npy": base / "masks" / f"fold{nested}"}
    paths = {}
    for name, array in (("images.npy", images), ("masks.npy", masks), ("types.npy", np.array(list(types)))):
        dirs[name].mkdir(parents=True, exist_ok=True)
        paths[name] = dirs[name] / name
        np.save(paths[name], array)
    return paths


def lizard_fields(inst_map: np.ndarray, classes: dict[int, int]) -> dict[str, np.ndarray]:
    """The .mat fields Lizard derives from an instance map: id, class, bbox (y1, y2, x1, x2), centroid (x, y)."""
    ids = sorted(classes)
    boxes = ndimage.find_objects(inst_map)
    rows, cols = np.indices(inst_map.shape)
    bbox, centroid = [], []
    for i in ids:
        ys, xs = boxes[i - 1]
        bbox.append((ys.start, ys.stop, xs.start, xs.stop))
        where = inst_map == i
        centroid.append((cols[where].mean(), rows[where].mean()))
    return {
        "inst_map": inst_map.astype(np.int32),
        "id": np.array(ids, dtype=np.int32).reshape(-1, 1),
        "class": np.array([classes[i] for i in ids], dtype=np.int32).reshape(-1, 1),
        "bbox": np.array(bbox, dtype=np.int32).reshape(-1, 4),
        "centroid": np.array(centroid, dtype=np.float64).reshape(-1, 2),
    }


def write_lizard(root: Path, stem: str, image: np.ndarray, fields: dict[str, np.ndarray]) -> tuple[Path, Path]:
    """Lizard_Images1/<stem>.png and Lizard_Labels/Labels/<stem>.mat."""
    image_path = write_png(root / "Lizard_Images1" / f"{stem}.png", image)
    label = root / "Lizard_Labels" / "Labels" / f"{stem}.mat"
    label.parent.mkdir(parents=True, exist_ok=True)
    savemat(label, fields)
    return image_path, label


def write_consep(split: Path, stem: str, image: np.ndarray, inst_map: np.ndarray, inst_type: Sequence[int],
                 override: dict[str, np.ndarray] | None = None) -> Path:
    """CoNSeP's Images/<stem>.png and Labels/<stem>.mat (doubles, as released); `override` replaces or adds keys."""
    write_png(split / "Images" / f"{stem}.png", image)
    n = len(inst_type)
    rows, cols = np.indices(inst_map.shape)
    centroid = [(cols[inst_map == k].mean(), rows[inst_map == k].mean()) if (inst_map == k).any() else (0.0, 0.0) for k in range(1, n + 1)]
    lut = np.concatenate([[0], np.asarray(inst_type)])
    fields = {
        "inst_map": inst_map.astype(np.float64),
        "type_map": lut[inst_map].astype(np.float64),
        "inst_type": np.asarray(inst_type, dtype=np.float64).reshape(-1, 1),
        "inst_centroid": np.array(centroid, dtype=np.float64).reshape(-1, 2),
    } | (override or {})
    label = split / "Labels" / f"{stem}.mat"
    label.parent.mkdir(parents=True, exist_ok=True)
    savemat(label, fields)
    return label


def _xml(root: ET.Element, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def aperio_xml(path: Path, annotations: Sequence[tuple[str, Sequence[Sequence[tuple[float, float]]]]], mpp: float = 0.25) -> Path:
    """MoNuSAC-style Aperio XML: one Annotation per (class name, [polygon of (x, y) vertices, ...])."""
    root = ET.Element("Annotations", MicronsPerPixel=f"{mpp:.6f}")
    for i, (name, regions) in enumerate(annotations, start=1):
        annotation = ET.SubElement(root, "Annotation", Id=str(i), Name="", ReadOnly="0", LineColor="65280")
        attributes = ET.SubElement(annotation, "Attributes")
        ET.SubElement(attributes, "Attribute", Name=name, Id=str(i), Value="")
        regions_el = ET.SubElement(annotation, "Regions")
        ET.SubElement(regions_el, "RegionAttributeHeaders")
        for j, vertices in enumerate(regions, start=1):
            region = ET.SubElement(regions_el, "Region", Id=str(j), Type="0", Zoom="1")
            ET.SubElement(region, "Attributes")
            vertices_el = ET.SubElement(region, "Vertices")
            for x, y in vertices:
                ET.SubElement(vertices_el, "Vertex", X=str(x), Y=str(y), Z="0")
    return _xml(root, path)


def asap_xml(path: Path, annotations: Sequence[tuple[str, Sequence[tuple[float, float]]]]) -> Path:
    """Camelyon16 ASAP XML: one polygon Annotation per (PartOfGroup, [(x, y), ...]), Coordinates written in reverse
    document order with their Order attribute (readers must sort by Order)."""
    root = ET.Element("ASAP_Annotations")
    annotations_el = ET.SubElement(root, "Annotations")
    for i, (group, vertices) in enumerate(annotations):
        annotation = ET.SubElement(annotations_el, "Annotation", Name=f"Annotation {i}", Type="Polygon", PartOfGroup=group, Color="#F4FA58")
        coordinates = ET.SubElement(annotation, "Coordinates")
        for order, (x, y) in reversed(list(enumerate(vertices))):
            ET.SubElement(coordinates, "Coordinate", Order=str(order), X=str(x), Y=str(y))
    groups = ET.SubElement(root, "AnnotationGroups")
    for group in sorted({g for g, _ in annotations}):
        ET.SubElement(groups, "Group", Name=group, PartOfGroup="None", Color="#64FE2E")
    return _xml(root, path)


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Every `factor`-th pixel (a nearest-neighbor pyramid level: exact for label masks and for tests)."""
    return np.ascontiguousarray(image[::factor, ::factor])


def write_pyramid(path: Path, image: np.ndarray, mpp: float | None = 0.25, factors: Sequence[int] = (1, 2, 4), tile: int = 32,
                  layout: str = "pages", compression: str | None = "zlib", unit: str = "CENTIMETER") -> Path:
    """A tiled pyramidal TIFF: level k = every factors[k]-th pixel; level 0 carries XResolution in `unit` for `mpp`
    (None: no resolution). `layout` "pages" writes reduced-resolution pages (NewSubfileType=1, as ASAP and PANDA
    files), "plain" the same pages without that flag, "subifds" SubIFDs (OME style)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    photometric = "rgb" if image.ndim == 3 and image.shape[2] == 3 else "minisblack"
    per_unit = {"CENTIMETER": 1e4, "INCH": 25400.0}[unit]
    with tifffile.TiffWriter(path) as tif:
        for k, factor in enumerate(factors):
            options: dict = {"tile": (tile, tile), "photometric": photometric, "compression": compression}
            if k == 0 and mpp is not None:
                options |= {"resolution": (per_unit / mpp, per_unit / mpp), "resolutionunit": unit}
            if k == 0 and layout == "subifds":
                options["subifds"] = len(factors) - 1
            if k > 0 and layout in ("pages", "subifds"):
                options["subfiletype"] = 1
            tif.write(downsample(image, factor), **options)
    return path


def write_panda(root: Path, image_id: str, image: np.ndarray, labels: np.ndarray | None, provider: str, rng: np.random.Generator,
                mpp: float | None = 0.5) -> None:
    """train_images/<id>.tiff, train_label_masks/<id>_mask.tiff (labels in RED, random green/blue) and a train.csv row."""
    write_pyramid(root / "train_images" / f"{image_id}.tiff", image, mpp=mpp)
    if labels is not None:
        mask = np.stack([labels, rng.integers(0, 256, labels.shape), rng.integers(0, 256, labels.shape)], axis=2).astype(np.uint8)
        write_pyramid(root / "train_label_masks" / f"{image_id}_mask.tiff", mask, mpp=mpp)
    csv = root / "train.csv"
    if not csv.exists():
        csv.write_text("image_id,data_provider,isup_grade,gleason_score\n")
    with csv.open("a") as handle:
        handle.write(f"{image_id},{provider},0,0+0\n")


def tissue_slide(height: int, width: int, tissue_box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """An RGB slide of white glass (~240) with a pink tissue rectangle (x0, y0, x1, y1) (~(200, 120, 170)), mild noise."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 240, dtype=np.int16)
    x0, y0, x1, y1 = tissue_box
    image[y0:y1, x0:x1] = (200, 120, 170)
    image += rng.integers(-6, 7, image.shape, dtype=np.int16)
    return np.clip(image, 0, 255).astype(np.uint8)
