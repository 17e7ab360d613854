"""camelyon16 reader on tifffile pyramids with resolution tags and ASAP XML written with ElementTree."""

import numpy as np
import pytest
from format_writers import asap_xml, tissue_slide, write_pyramid

from histosynth.sources import build_source
from histosynth.sources.camelyon16 import Camelyon16Source
from histosynth.sources.folder import FormatError

SIZE = 256
TISSUE_X0 = 80  # glass left of x = 80, tissue to the right
TUMOR = [(100, 60), (180, 60), (180, 140), (100, 140)]
EXCLUSION = [(120, 80), (140, 80), (140, 100), (120, 100)]
SMALL_TUMOR = [(200, 200), (230, 200), (200, 230)]  # group _1, a triangle


def write_slide(root, stem="tumor_001", annotations=True, groups=("_0", "_2", "_1")):
    image = tissue_slide(SIZE, SIZE, (TISSUE_X0, 0, SIZE, SIZE))
    write_pyramid(root / "training" / "tumor" / f"{stem}.tif", image, mpp=0.25, factors=(1, 2, 4))
    if annotations:
        asap_xml(root / "lesion_annotations" / f"{stem}.xml", list(zip(groups, [TUMOR, EXCLUSION, SMALL_TUMOR], strict=False)))
    return image


def expected_labels(x0: int, y0: int, size: int, step: float) -> np.ndarray:
    """Labels at the centers of the patch pixels (level-0 x = x0 + (c + 0.5) * step - 0.5), from the geometry alone."""
    centers = (np.arange(size) + 0.5) * step - 0.5
    X, Y = np.meshgrid(x0 + centers, y0 + centers)
    tumor = (X >= 100) & (X <= 180) & (Y >= 60) & (Y <= 140)
    tumor |= (X >= 200) & (Y >= 200) & (X + Y <= 430)
    exclusion = (X >= 120) & (X <= 140) & (Y >= 80) & (Y <= 100)
    labels = np.where(X >= TISSUE_X0, 1, 0)
    labels[tumor] = 2
    labels[exclusion] = 255
    return labels.astype(np.uint8)


def test_tiles_at_level_one_have_pixel_exact_labels(tmp_path):
    image = write_slide(tmp_path)
    source = Camelyon16Source(tmp_path / "training", annotations=tmp_path / "lesion_annotations", size=32, mpp=0.5)
    samples = list(source)
    # 4 x 4 tiles of 64 level-0 px; the left column (x < 64) is glass and dropped by min_tissue=0.5
    assert sorted((s.provenance.x, s.provenance.y) for s in samples) == [(x, y) for x in (64, 128, 192) for y in (0, 64, 128, 192)]
    for sample in samples:
        x, y = sample.provenance.x, sample.provenance.y
        assert (sample.provenance.level, sample.provenance.mpp, sample.provenance.slide_id) == (1, 0.5, "tumor_001")
        assert np.array_equal(sample.image, image[y : y + 64 : 2, x : x + 64 : 2])
        assert np.array_equal(sample.tissue, expected_labels(x, y, 32, 2.0)), (x, y)
    values = np.unique(np.concatenate([s.tissue.ravel() for s in samples])).tolist()
    assert values == [0, 1, 2, 255]


def test_resampled_tiles_keep_polygon_labels_exact(tmp_path):
    write_slide(tmp_path)
    samples = list(Camelyon16Source(tmp_path, size=20, mpp=0.7, min_tissue=0.0))
    assert samples and all(s.provenance.level == 1 and s.provenance.mpp == 0.7 for s in samples)
    for sample in samples:
        expected = expected_labels(sample.provenance.x, sample.provenance.y, 20, 2.8)
        for value in (2, 255):
            assert np.array_equal(sample.tissue == value, expected == value), (sample.provenance.x, sample.provenance.y, value)


def test_normal_slides_without_xml_are_labeled_others_are_not(tmp_path):
    write_slide(tmp_path, stem="normal_002", annotations=False)
    write_slide(tmp_path, stem="test_003", annotations=False)
    samples = list(build_source("camelyon16", path=tmp_path, size=32, mpp=1.0, min_tissue=0.0))
    normal = [s for s in samples if s.provenance.slide_id == "normal_002"]
    test = [s for s in samples if s.provenance.slide_id == "test_003"]
    assert len(normal) == len(test) == 4 and all(s.provenance.level == 2 for s in samples)
    for sample in normal:
        assert np.array_equal(sample.tissue, expected_labels(sample.provenance.x, sample.provenance.y, 32, 4.0).clip(0, 1))
    assert all(s.tissue is None and s.tissue_schema is None for s in test)


def test_n_limits_and_min_tissue_one_drops_partial_tiles(tmp_path):
    write_slide(tmp_path)
    assert len(list(Camelyon16Source(tmp_path, size=32, mpp=0.5, n=3))) == 3
    full = list(Camelyon16Source(tmp_path, size=32, mpp=0.5, min_tissue=1.0))
    assert sorted({s.provenance.x for s in full}) == [128, 192]  # the tile at x 64..127 is 25 % glass


@pytest.mark.parametrize("edit,match", [
    (lambda t: t.replace('PartOfGroup="_1"', 'PartOfGroup="metastases"', 1),
     r"tumor_001\.xml: annotation 2 \('Annotation 2'\): unknown PartOfGroup 'metastases'"),
    (lambda t: t.replace(' PartOfGroup="_0"', "", 1), r"tumor_001\.xml: annotation 0 \('Annotation 0'\): <Annotation> has no PartOfGroup"),
    (lambda t: t.replace(' X="180"', "", 1), r"tumor_001\.xml: annotation 0 \('Annotation 0'\), coordinate \d: <Coordinate> has no X attribute"),
    (lambda t: t.replace('Y="140"', 'Y="1e400"', 1), r"Y='1e400' is not finite"),
    (lambda t: t[:-40], r"tumor_001\.xml: not well-formed XML"),
    (lambda t: t.replace('Type="Polygon"', 'Type="Dot"', 1), r"annotation 0 .*: a point annotation in group '_0'"),
    (lambda t: t.replace('X="180"', 'X="300"', 1), r"tumor_001\.xml: annotation 0 \('Annotation 0'\): coordinates \(100\.\.300, 60\.\.140\) "
                                                   r"lie outside the slide tumor_001\.tif \(256x256 at level 0\)"),
])
def test_bad_annotations_name_the_file(tmp_path, edit, match):
    write_slide(tmp_path)
    xml = tmp_path / "lesion_annotations" / "tumor_001.xml"
    xml.write_text(edit(xml.read_text()))
    with pytest.raises(FormatError, match=match):
        list(Camelyon16Source(tmp_path, size=32, mpp=0.5))


def test_bad_options_and_missing_slides(tmp_path):
    with pytest.raises(FormatError, match="no such slide or folder"):
        Camelyon16Source(tmp_path / "nothing")
    with pytest.raises(FormatError, match="no Camelyon16 slides"):
        Camelyon16Source(tmp_path)
    with pytest.raises(ValueError, match="min_tissue is a fraction"):
        Camelyon16Source(tmp_path, min_tissue=1.5)


def test_a_slide_of_glass_gives_a_clear_error_counting_the_dropped_tiles(tmp_path, capsys):
    from histosynth.cli import main

    write_pyramid(tmp_path / "slides" / "normal_001.tif", tissue_slide(SIZE, SIZE, (0, 0, 0, 0)), mpp=0.25)
    base = ["data", "build", "--source", "camelyon16", "--path", str(tmp_path / "slides"), "--size", "32", "--mpp", "0.5"]
    assert main([*base, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"error: --path {tmp_path / 'slides'}: 0 samples from source 'camelyon16': 16 tile(s) dropped as glass (tissue fraction below --min-tissue=0.5)"
    assert main([*base, "--size", "512", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("1 slide(s) smaller than one 512 px tile at 0.5 um/px")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slides"]
