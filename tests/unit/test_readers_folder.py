"""folder reader (png/jpg/tif images, optional masks) and the registration of every reader."""

import numpy as np
import pytest
import tifffile
from format_writers import write_png
from PIL import Image

from histosynth.sources import SOURCES, build_source
from histosynth.sources.folder import FolderSource, FormatError, cover_positions

READERS = ["pannuke", "lizard", "consep", "monusac", "camelyon16", "panda", "folder"]


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    write_png(tmp_path / "img" / "a.png", a)
    tifffile.imwrite(tmp_path / "img" / "b.tif", b, photometric="rgb")
    Image.fromarray(a).convert("L").save(tmp_path / "img" / "c.jpg")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    return {"a": a, "b": b}


def test_unannotated_whole_images(tmp_path, images):
    source = FolderSource(tmp_path / "img")
    samples = list(source)
    assert len(source) == 3 and [s.provenance.slide_id for s in samples] == ["a", "b", "c"]
    assert np.array_equal(samples[0].image, images["a"]) and np.array_equal(samples[1].image, images["b"])
    gray = samples[2].image
    assert gray.shape == (20, 30, 3) and (gray[..., 0] == gray[..., 1]).all()  # grayscale expanded to RGB
    assert all(s.tissue is None and s.nuclei is None for s in samples)


def test_masks_with_schema_and_tiles(tmp_path, images):
    masks = tmp_path / "masks"
    mask_a = np.zeros((20, 30), np.uint8)
    mask_a[:, 10:] = 1
    mask_a[5:15, 20:25] = 2
    mask_a[0, 0] = 255
    write_png(masks / "a.png", mask_a)
    write_png(masks / "b.png", np.full((24, 24), 2, np.uint8))
    write_png(masks / "c.png", np.zeros((20, 30), np.uint8))
    source = build_source("folder", path=tmp_path / "img", masks=masks, schema="camelyon16", size=16, mpp=0.5)
    assert source.meta.tissue_schema == "camelyon16"
    samples = list(source)
    first = [s for s in samples if s.provenance.slide_id == "a"]
    assert [(s.provenance.x, s.provenance.y) for s in first] == [(0, 0), (14, 0), (0, 4), (14, 4)]
    for s in first:
        x, y = s.provenance.x, s.provenance.y
        assert np.array_equal(s.tissue, mask_a[y : y + 16, x : x + 16]) and np.array_equal(s.image, images["a"][y : y + 16, x : x + 16])
        assert s.tissue_schema == "camelyon16" and s.provenance.mpp == 0.5
    assert len(source) == len(samples) == 4 + 4 + 4


def test_mask_problems_name_the_file(tmp_path, images):
    masks = tmp_path / "masks"
    write_png(masks / "a.png", np.full((20, 30), 7, np.uint8))
    with pytest.raises(FormatError, match=r"a\.png: values \[7\] are not ids of schema 'camelyon16'"):
        list(FolderSource(tmp_path / "img", masks=masks, schema="camelyon16"))
    write_png(masks / "a.png", np.zeros((10, 30), np.uint8))
    with pytest.raises(FormatError, match=r"a\.png: mask shape \(10, 30\) does not match image a\.png \(20, 30\)"):
        list(FolderSource(tmp_path / "img", masks=masks, schema="camelyon16"))
    write_png(masks / "a.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(FormatError, match=r"a\.png: expected a one-channel 8-bit mask"):
        list(FolderSource(tmp_path / "img", masks=masks, schema="camelyon16"))
    write_png(masks / "a.png", np.zeros((20, 30), np.uint8))
    with pytest.raises(FormatError, match=r"b\.tif: no mask b\{\.png,\.tif,\.tiff\}"):
        list(FolderSource(tmp_path / "img", masks=masks, schema="camelyon16"))


def test_bad_images_and_options(tmp_path, images):
    (tmp_path / "img" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(FormatError, match=r"a\.png: cannot read the image"):
        list(FolderSource(tmp_path / "img"))
    with pytest.raises(ValueError, match="masks need a schema"):
        FolderSource(tmp_path / "img", masks=tmp_path / "img")
    with pytest.raises(ValueError, match="schema 'pannuke' is a nuclei schema"):
        FolderSource(tmp_path / "img", masks=tmp_path / "img", schema="pannuke")
    with pytest.raises(FormatError, match=r"missing: no such folder \(expected a folder of images\)"):
        FolderSource(tmp_path / "missing")
    with pytest.raises(FormatError, match=r"a\.png: not a folder \(expected a folder of images\)"):
        FolderSource(tmp_path / "img" / "a.png")


def test_cover_positions():
    assert cover_positions(1000, 256, 256) == [0, 256, 512, 744]
    assert cover_positions(512, 256, 256) == [0, 256]
    assert cover_positions(100, 256, 256) == []


@pytest.mark.parametrize("name", READERS)
def test_readers_are_registered_with_metadata(name):
    cls = SOURCES.get(name)
    assert cls.meta.name == name and cls.meta.license and cls.meta.description
    if name != "folder":
        assert cls.meta.url.startswith("https://") and cls.meta.citation and cls.meta.native_mpp in (0.25, 0.5)


def _build(tmp_path, capsys, *args):
    """`data build` in-process: (exit code, last stderr line, names beside the input after the run)."""
    from histosynth.cli import main

    code = main(["data", "build", *args, "--out", str(tmp_path / "out")])
    lines = capsys.readouterr().err.splitlines()
    return code, (lines[-1] if lines else ""), sorted(p.name for p in tmp_path.iterdir())


def test_empty_folder_is_an_error_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "notes.txt").write_text("no images here")
    code, err, names = _build(tmp_path, capsys, "--source", "folder", "--path", str(tmp_path / "img"))
    assert code == 2 and err == f"error: {tmp_path / 'img'}: no image files (.png, .jpg, .jpeg, .tif, .tiff) in the folder (sub-folders are not searched)"
    assert names == ["img"]


def test_images_smaller_than_size_are_counted_and_nothing_is_written(tmp_path, capsys, images):
    code, err, names = _build(tmp_path, capsys, "--source", "folder", "--path", str(tmp_path / "img"), "--size", "28")
    assert code == 2 and names == ["img"]
    assert err == f"error: --path {tmp_path / 'img'}: 0 samples from source 'folder': 3 image(s) smaller than the 28 px tile size (--size)"
    code, err, names = _build(tmp_path, capsys, "--source", "folder", "--path", str(tmp_path / "img"), "--size", "24")
    assert code == 0 and names == ["img", "out"]  # b (24 x 24) holds one tile: a build with some samples succeeds


def test_n_zero_is_an_error(tmp_path, capsys, images):
    code, err, names = _build(tmp_path, capsys, "--source", "folder", "--path", str(tmp_path / "img"), "--n", "0")
    assert (code, err, names) == (2, "error: --n 0: a dataset needs at least one sample", ["img"])
