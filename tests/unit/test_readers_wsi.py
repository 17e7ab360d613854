"""wsi.Slide: pyramid levels, mpp, lazy region reads, level choice, windows; on TIFFs written by tifffile."""

import numpy as np
import pytest
import tifffile
from format_writers import downsample, write_pyramid
from numerics import EPS64

from histosynth.sources.embedded import slide_path
from histosynth.sources.wsi import Slide, WSIError, grid_windows, mpp_from_page


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (200, 264, 3), dtype=np.uint8)


@pytest.mark.parametrize("layout", ["pages", "plain", "subifds"])
def test_levels_and_mpp_from_resolution_tags(tmp_path, image, layout):
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.25, factors=(1, 2, 4), layout=layout)
    with Slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=4 * EPS64)  # unit conversion of a rational tag: <= 2 roundings
        assert [(lv.width, lv.height) for lv in slide.levels] == [(264, 200), (132, 100), (66, 50)]
        assert [lv.mpp for lv in slide.levels] == pytest.approx([0.25, 0.5, 1.0], rel=4 * EPS64)  # same, x 2^k


@pytest.mark.parametrize("layout", ["pages", "subifds"])
def test_region_reads_are_pixel_exact_at_every_level(tmp_path, image, layout):
    path = write_pyramid(tmp_path / "s.tif", image, factors=(1, 2, 4), tile=32, layout=layout)
    with Slide(path) as slide:
        for level, factor in enumerate((1, 2, 4)):
            truth = downsample(image, factor)
            h, w = truth.shape[:2]
            for x, y, rw, rh in [(0, 0, w, h), (31, 9, 5, 40), (w - 7, h - 3, 7, 3), (10, 0, 1, 1)]:
                assert np.array_equal(slide.read_level(level, x, y, rw, rh), truth[y : y + rh, x : x + rw]), (level, x, y)


def test_strips_and_separate_planes_read_exactly(tmp_path, image):
    strips = tmp_path / "strips.tif"
    tifffile.imwrite(strips, image, rowsperstrip=7, photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.moveaxis(image, 2, 0), planarconfig="separate", tile=(32, 32), photometric="rgb",
                     compression="zlib", resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    for path in (strips, planar):
        with Slide(path) as slide:
            assert np.array_equal(slide.read_level(0, 13, 20, 90, 33), image[20:53, 13:103]), path.name


def test_real_jpeg_svs_region_matches_tifffile(tmp_path):
    with tifffile.TiffFile(slide_path()) as tif:
        full = tif.pages[0].asarray()
    with Slide(slide_path()) as slide:
        assert slide.mpp == 0.499  # exact: parsed from Aperio's "MPP = 0.499"
        assert np.array_equal(slide.read_level(0, 700, 1000, 333, 250), full[1000:1250, 700:1033])


def test_reads_decode_only_the_overlapping_tiles(tmp_path, image):
    """Corrupt the compressed bytes of the last tile: regions elsewhere still read, a region over it fails naming the file."""
    path = write_pyramid(tmp_path / "s.tif", image, factors=(1,), tile=32, compression="zlib")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offset, count = page.dataoffsets[-1], page.databytecounts[-1]
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = b"\xff" * count
    path.write_bytes(bytes(data))
    with Slide(path) as slide:
        assert np.array_equal(slide.read_level(0, 0, 0, 64, 64), image[:64, :64])
        with pytest.raises(WSIError, match=r"s\.tif: cannot decode tile"):
            slide.read_level(0, 250, 190, 10, 10)


def test_outside_the_slide_is_an_error_unless_padded(tmp_path, image):
    path = write_pyramid(tmp_path / "s.tif", image, factors=(1, 2))
    with Slide(path) as slide:
        with pytest.raises(WSIError, match=r"s\.tif: region x=250, y=190, 20x20 at level 0 lies partly outside the slide \(264x200"):
            slide.read_level(0, 250, 190, 20, 20)
        with pytest.raises(WSIError, match=r"s\.tif: .* lies outside the slide \(132x100 at that level\)"):
            slide.read_level(1, 500, 0, 4, 4, pad=True)
        with pytest.raises(WSIError, match="no level 2"):
            slide.read_level(2, 0, 0, 4, 4)
        padded = slide.read_level(0, 250, 190, 20, 20, pad=True, fill=7)
        assert np.array_equal(padded[:10, :14], image[190:, 250:]) and (padded[10:] == 7).all() and (padded[:, 14:] == 7).all()


def test_level_choice_for_requested_mpp(tmp_path, image):
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.25, factors=(1, 2, 4))
    with Slide(path) as slide:
        assert [slide.level_for(m).index for m in (0.1, 0.25, 0.26, 0.49, 0.5, 0.7, 0.9, 0.99, 1.0, 3.0)] == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
        # within 2.5 % of level 1: snapped to its grid, read without resampling
        window = slide.window(41, 60, 16, 0.5)
        assert (window.x, window.y, window.mpp, slide.window_level(window).index) == (42, 60, 0.5, 1)
        assert np.array_equal(slide.read(window), downsample(image, 2)[30:46, 21:37])
        # 0.7 um/px: resampled from level 1 (never upsampled from a coarser level)
        window = slide.window(40, 60, 20, 0.7)
        assert window.mpp == 0.7 and slide.window_level(window).index == 1
        patch = slide.read(window)
        assert patch.shape == (20, 20, 3) and patch.dtype == np.uint8


def test_resampled_read_is_a_faithful_downscale(tmp_path):
    """A smooth gradient read at 0.75 um/px from a 0.25 um/px slide equals the gradient sampled at the patch centers."""
    yy, xx = np.mgrid[0:240, 0:240]
    gradient = np.stack([xx, yy, (xx + yy) // 2], axis=2).astype(np.uint8)
    path = write_pyramid(tmp_path / "g.tif", gradient, mpp=0.25, factors=(1, 2))
    with Slide(path) as slide:
        window = slide.window(30, 60, 40, 0.75)
        patch = slide.read(window).astype(float)
    centers = 30 + 3 * np.arange(40) + 1  # output pixel c covers level-0 pixels 30+3c .. 30+3c+2
    assert np.abs(patch[0, :, 0] - centers).max() <= 1.0
    assert np.abs(patch[:, 0, 1] - (60 + 3 * np.arange(40) + 1)).max() <= 1.0


def test_window_maps_level0_coordinates_to_patch_pixels(tmp_path, image):
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.25, factors=(1, 2))
    with Slide(path) as slide:
        window = slide.window(40, 20, 16, 0.5)  # level-1 pixels 20.. and 10..
    # level-0 pixels 40 and 41 make up output pixel 0, whose center is level-0 x = 40.5
    assert window.to_pixels(np.array([[40.5, 20.5], [42.5, 22.5]])).tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_grid_windows_stay_inside(tmp_path, image):
    path = write_pyramid(tmp_path / "s.tif", image, mpp=0.25, factors=(1, 2))
    with Slide(path) as slide:
        windows = list(grid_windows(slide, 32, 0.5))
    assert len(windows) == (200 // 64) * (264 // 64)
    assert all(w.x + w.width <= 264 and w.y + w.height <= 200 for w in windows)


def test_mpp_sources_and_missing_mpp(tmp_path, image):
    inch = write_pyramid(tmp_path / "inch.tif", image, mpp=0.5, factors=(1,), unit="INCH")
    none = write_pyramid(tmp_path / "none.tif", image, mpp=None, factors=(1,))
    dpi72 = tmp_path / "dpi72.tif"
    tifffile.imwrite(dpi72, image, photometric="rgb", resolution=(72, 72), resolutionunit="INCH")
    aperio = tmp_path / "aperio.tif"
    tifffile.imwrite(aperio, image, photometric="rgb", description="Aperio Image Library v12.0.15\n264x200 |AppMag = 40|MPP = 0.2521")
    with Slide(inch) as slide:
        assert slide.mpp == pytest.approx(0.5, rel=4 * EPS64)  # inch tag to µm: <= 2 float64 roundings
    with Slide(aperio) as slide:
        assert slide.mpp == 0.2521  # exact: parsed from the Aperio text
    for path in (none, dpi72):
        with tifffile.TiffFile(path) as tif:
            assert mpp_from_page(tif.pages[0]) is None, path.name  # 72 dpi = 353 um/px: implausible, ignored
        with pytest.raises(WSIError, match=rf"{path.name}: no microns-per-pixel"):
            Slide(path)
        with Slide(path, default_mpp=0.3) as slide:
            assert slide.mpp == 0.3


def test_unreadable_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(WSIError, match=r"bad\.tif: not a readable TIFF slide"):
        Slide(bad)
    with pytest.raises(WSIError, match=r"missing\.tif: slide file not found"):
        Slide(tmp_path / "missing.tif")
    wide = tmp_path / "u16.tif"
    tifffile.imwrite(wide, np.zeros((8, 8), np.uint16), resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    with pytest.raises(WSIError, match=r"u16\.tif: only 8-bit slides"):
        Slide(wide)


def test_sparse_tiles_read_as_fill(tmp_path):
    tile = np.full((32, 32, 3), 100, np.uint8)
    path = tmp_path / "sparse.tif"
    tifffile.imwrite(path, (None if i == 1 else tile for i in range(4)), shape=(64, 64, 3), dtype=np.uint8, tile=(32, 32),
                     photometric="rgb", resolution=(4e4, 4e4), resolutionunit="CENTIMETER")
    with Slide(path) as slide:
        white = slide.read_level(0, 16, 0, 32, 8)
        zero = slide.read_level(0, 16, 0, 32, 8, fill=0)
    assert (white[:, :16] == 100).all() and (white[:, 16:] == 255).all() and (zero[:, 16:] == 0).all()


def test_tissue_mask_ignores_glass_and_black():
    from histosynth.sources.wsi import tissue_mask, tissue_threshold

    image = np.full((30, 30, 3), 238, np.uint8)
    image[:, 10:20] = (200, 120, 170)  # stained tissue
    image[:, 20:] = 5  # scanner black / empty padding
    image[5, 3] = (200, 120, 170)  # a speck on the glass: removed by the opening
    threshold = tissue_threshold(image)
    assert 180 <= threshold <= 225
    mask = tissue_mask(image, threshold)
    assert mask[:, 10:20].all() and not mask[:, :10].any() and not mask[:, 20:].any()
