import numpy as np
import pytest

from histosynth.sources.embedded import EmbeddedSource, read_region, slide_path, tissue_mask


def test_region_reads_with_its_mpp():
    image, mpp = read_region()
    assert image.shape == (2967, 2220, 3) and image.dtype == np.uint8
    assert mpp == 0.499  # exact: parsed from the Aperio text "MPP = 0.499"
    assert slide_path().with_name("CMU-1-Small-Region.NOTICE.md").is_file()


def test_tissue_mask_separates_tissue_from_glass():
    image, _ = read_region()
    small = image[::4, ::4]
    mask = tissue_mask(small)
    assert 0.2 < mask.mean() < 0.7
    brightness = small.mean(axis=2)
    assert brightness[mask].mean() < brightness[~mask].mean() - 40


def test_tiles_are_tissue_and_deterministic():
    first = list(EmbeddedSource(size=128, n=10))
    second = list(EmbeddedSource(size=128, n=10))
    assert len(first) == 10 and all(a.equals(b) for a, b in zip(first, second, strict=False))
    assert all(s.image.mean() < 225 for s in first), "background tiles are dropped"
    coords = {(s.provenance.x, s.provenance.y) for s in first}
    assert len(coords) == 10


def test_magnification_changes_tile_count_and_provenance():
    native = EmbeddedSource(size=256, mpp=0.5)
    half = EmbeddedSource(size=256, mpp=1.0)
    assert len(half) < len(native) / 3
    sample = next(iter(half))
    assert sample.provenance.mpp == 1.0 and sample.provenance.x % 2 == 0
    assert next(iter(native)).provenance.mpp == 0.499  # exact: not resampled, the parsed value is passed on


def test_min_tissue_zero_keeps_every_tile():
    assert len(EmbeddedSource(size=256, min_tissue=0.0)) == (2967 // 256) * (2220 // 256)


@pytest.mark.parametrize("kwargs,message", [({"size": 4}, "size"), ({"mpp": 0.0}, "mpp"), ({"min_tissue": 2}, "min_tissue"), ({"n": -1}, "n must")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbeddedSource(**kwargs)


def test_spatial_split_shares_no_pixel_and_drops_straddling_tiles():
    size = 256
    train = EmbeddedSource(size=size, stride=64, part="train")
    held = EmbeddedSource(size=size, stride=32, part="held-out")
    whole = EmbeddedSource(size=size, stride=32)
    (t0, cut), (h0, end) = train.rows(), held.rows()
    assert t0 == 0 and cut == h0 == round(0.7 * 2967) and end == 2967
    assert max(top for top, _ in train.tile_boxes()) + size <= cut <= min(top for top, _ in held.tile_boxes())
    # the whole-region tiling at the same stride has tiles across the cut; the held-out part has none of them
    straddling = {(t, l) for t, l in whole.tile_boxes() if t < cut < t + size}
    assert straddling and not straddling & set(held.tile_boxes())
    # provenance y is the level-0 row: every held-out sample lies wholly below the cut
    assert all(s.provenance.y >= cut for s in held)
    assert held.region().shape == (end - cut, 2220, 3)


def test_smaller_stride_gives_more_held_out_tiles():
    coarse = len(EmbeddedSource(size=256, part="held-out"))
    fine = len(EmbeddedSource(size=256, stride=64, part="held-out"))
    assert 0 < coarse and fine > 4 * coarse


@pytest.mark.parametrize("kwargs,message", [({"part": "test"}, "part must"), ({"train_fraction": 1.0}, "train_fraction"),
                                            ({"stride": 0}, "stride")])
def test_bad_split_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EmbeddedSource(**kwargs)
