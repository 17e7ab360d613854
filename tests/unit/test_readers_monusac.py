"""monusac reader on TIFF images + Aperio XML written with tifffile / ElementTree."""

import numpy as np
import pytest
import tifffile
from format_writers import aperio_xml

from histosynth.sources.folder import FormatError
from histosynth.sources.monusac import MonusacSource
from histosynth.sources.xml_annotations import parse_aperio

H, W = 30, 40
PATIENT = "TCGA-5P-A9K0-01Z-00-DX1"
RECTANGLE = [(2, 3), (6, 3), (6, 8), (2, 8)]  # x 2..6, y 3..8 inclusive (pixel centers on the boundary count)
TRIANGLE = [(20, 10), (28, 10), (20, 18)]  # right angle at (20, 10): pixels with x >= 20, y >= 10, x + y <= 38


def write_case(root, annotations, stem=f"{PATIENT}_1", suffixes=(".tif",)):
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    folder = root / PATIENT
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in suffixes:
        tifffile.imwrite(folder / f"{stem}{suffix}", image if suffix != ".svs" else 255 - image, photometric="rgb")
    aperio_xml(folder / f"{stem}.xml", annotations)
    return image, folder / f"{stem}.xml"


def expected_masks():
    rows, cols = np.indices((H, W))
    rectangle = (cols >= 2) & (cols <= 6) & (rows >= 3) & (rows <= 8)
    triangle = (cols >= 20) & (rows >= 10) & (cols + rows <= 38)
    return rectangle, triangle


def test_polygons_rasterize_to_the_expected_pixels_and_classes(tmp_path):
    image, _ = write_case(tmp_path, [("Lymphocyte", [RECTANGLE]), ("Neutrophil", [TRIANGLE])])
    (sample,) = list(MonusacSource(tmp_path))
    assert np.array_equal(sample.image, image)
    rectangle, triangle = expected_masks()
    assert np.array_equal(sample.nuclei.instances, (rectangle * 1 + triangle * 2).astype(np.uint16))
    assert sample.nuclei.class_ids.tolist() == [2, 3]  # monusac schema: Lymphocyte 2, Neutrophil 3
    rows, cols = np.nonzero(triangle)
    assert sample.nuclei.centroids.tolist() == [[4.0, 5.5], [float(np.float32(cols.mean())), float(np.float32(rows.mean()))]]
    assert (sample.provenance.slide_id, sample.provenance.mpp) == (f"{PATIENT}_1", 0.25)


def test_tif_preferred_over_svs_and_regions_share_an_annotation(tmp_path):
    shifted = [(x + 10, y) for x, y in RECTANGLE]
    image, _ = write_case(tmp_path, [("epithelial", [RECTANGLE, shifted]), ("Macrophage", [TRIANGLE])], suffixes=(".svs", ".tif"))
    source = MonusacSource(tmp_path)
    (sample,) = list(source)
    assert len(source) == 1 and np.array_equal(sample.image, image)
    assert sample.nuclei.class_ids.tolist() == [1, 1, 4]  # Macrophage 4


def test_later_regions_overwrite_and_tiles_cut(tmp_path):
    overlapping = [(4, 5), (10, 5), (10, 12), (4, 12)]
    write_case(tmp_path, [("Epithelial", [RECTANGLE]), ("Lymphocyte", [overlapping])])
    (sample,) = list(MonusacSource(tmp_path))
    inst = sample.nuclei.instances
    assert (inst[5:13, 4:11] == 2).all() and (inst[3:5, 2:7] == 1).all() and (inst[5:9, 2:4] == 1).all()
    tiles = list(MonusacSource(tmp_path, size=16))
    assert [(t.provenance.x, t.provenance.y) for t in tiles] == [(0, 0), (16, 0), (24, 0), (0, 14), (16, 14), (24, 14)]
    assert all(t.image.shape == (16, 16, 3) for t in tiles)


def test_unknown_class_names_the_file_and_annotation(tmp_path):
    write_case(tmp_path, [("Lymphocyte", [RECTANGLE]), ("Ambiguous", [TRIANGLE])])
    with pytest.raises(FormatError, match=r"_1\.xml: annotation 1 \(Id=2\), region 0 \(Id=1\): unknown class 'Ambiguous' "
                                          r"\(known: epithelial, lymphocyte, neutrophil, macrophage\)"):
        list(MonusacSource(tmp_path))


def test_bad_xml_names_the_file(tmp_path):
    _, xml = write_case(tmp_path, [("Lymphocyte", [RECTANGLE])])
    text = xml.read_text()
    xml.write_text(text[: len(text) // 2])
    with pytest.raises(FormatError, match=r"_1\.xml: not well-formed XML"):
        list(MonusacSource(tmp_path))
    xml.write_text(text.replace(' Y="8"', "", 1))
    with pytest.raises(FormatError, match=r"_1\.xml: annotation 0 \(Id=1\), region 0 \(Id=1\), vertex 2: <Vertex> has no Y attribute"):
        list(MonusacSource(tmp_path))
    xml.write_text(text.replace('X="6"', 'X="six"', 1))
    with pytest.raises(FormatError, match=r"vertex 1: X='six' is not a number"):
        parse_aperio(xml)
    xml.write_text(text.replace('Name="Lymphocyte"', 'Label="Lymphocyte"'))
    with pytest.raises(FormatError, match=r"annotation 0 \(Id=1\): no Attributes/Attribute with a Name"):
        parse_aperio(xml)
    xml.write_text("<Root/>")
    with pytest.raises(FormatError, match=r"root element is <Root>, expected <Annotations>"):
        parse_aperio(xml)


def test_degenerate_region_and_missing_image(tmp_path):
    _, xml = write_case(tmp_path, [("Lymphocyte", [[(1, 1), (5, 5)]])])
    with pytest.raises(FormatError, match=r"region 0 \(Id=1\): a region needs at least 3 vertices, got 2"):
        list(MonusacSource(tmp_path))
    xml.with_suffix(".tif").unlink()
    with pytest.raises(FormatError, match=r"_1\.xml: no image"):
        MonusacSource(tmp_path)
