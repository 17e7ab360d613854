"""The 20-80% rule, entropy sampling, region complexity, adaptive crop sizes and per-class crops."""

import math

import numpy as np
import pytest
from numerics import gamma
from PIL import Image

from histosynth.labels.heterogeneity import (
    CompositionStats,
    CropSizing,
    class_crops,
    composition,
    diversity_entropy,
    entropy_sample,
    is_heterogeneous,
    largest_inscribed_square,
    region_complexity,
    save_composition_plot,
    square_crop,
)


def striped(fractions: dict[int, float], size: int = 100) -> np.ndarray:
    """A size x size map whose rows are split among classes in the given fractions (rounded to rows)."""
    out = np.zeros((size, size), np.uint8)
    row = 0
    for class_id, f in fractions.items():
        rows = round(f * size)
        out[row : row + rows] = class_id
        row += rows
    return out


@pytest.mark.parametrize("fractions, expected", [
    ({1: 0.5, 2: 0.5}, True),
    ({1: 0.8, 2: 0.2}, True),
    ({1: 0.85, 2: 0.15}, False),  # largest above 80%
    ({1: 0.7, 2: 0.15, 3: 0.15}, False),  # second below 20%
    ({1: 0.6, 2: 0.2, 3: 0.2}, True),
    ({1: 1.0}, False),  # one class
    ({0: 0.6, 1: 0.2, 2: 0.2}, False),  # only 40% tissue
    ({0: 0.4, 1: 0.3, 2: 0.3}, True),  # 60% tissue, 50/50 of it
    ({255: 0.45, 1: 0.3, 2: 0.25}, True),  # ignore pixels are not tissue: 55% tissue, 55/45 of it
])
def test_twenty_eighty_rule(fractions, expected):
    assert is_heterogeneous(striped(fractions)) is expected


def test_composition_counts_tissue_pixels_only():
    comp = composition(striped({0: 0.2, 255: 0.2, 3: 0.45, 1: 0.15}))
    assert comp.class_ids == (3, 1)
    assert comp.fractions == (0.75, 0.25)  # exact: ratios of integer pixel counts, one correctly rounded division
    assert comp.tissue_fraction == 0.6


def test_entropy_and_entropy_sampling():
    # -Σ p log p over k classes: k libm logs (<= 1 ulp each), products and a sum: within γ_{3k} (Higham §3.1)
    assert diversity_entropy(striped({1: 0.5, 2: 0.5})) == pytest.approx(math.log(2), rel=gamma(6))
    assert diversity_entropy(striped({1: 0.25, 2: 0.25, 3: 0.25, 4: 0.25})) == pytest.approx(math.log(4),
                                                                                              rel=gamma(12))
    assert diversity_entropy(striped({4: 1.0})) == 0.0
    h = np.array([0.0, 1.0, 0.1, 0.0, 1.0, 0.5])
    picked = entropy_sample(h, 10, seed=1)
    assert picked.tolist() == [1, 2, 4, 5]  # every positive one, never H = 0
    assert np.array_equal(entropy_sample(h, 2, seed=5), entropy_sample(h, 2, seed=5))
    # frequency follows the weights: index 0 (H=1) is drawn first ~10x as often as index 1 (H=0.1)
    firsts = [int(entropy_sample(np.array([1.0, 0.1]), 1, seed=s)[0]) for s in range(2000)]
    share = firsts.count(0) / len(firsts)
    assert 0.86 < share < 0.95  # expected 1 / 1.1 = 0.909


def disc(radius: float, size: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius**2


def test_region_complexity_is_low_for_discs_high_for_ragged_regions_and_scale_free():
    small, large = region_complexity(disc(12)), region_complexity(disc(48))
    assert small < 0.15 and large < 0.15 and abs(small - large) < 0.1
    comb = np.zeros((128, 128), bool)
    comb[20:108, 20:108] = True
    comb[20:100, 22:106:4] = False  # deep slots: long boundary for the area
    assert region_complexity(comb) > 0.7
    assert region_complexity(np.zeros((8, 8), bool)) == 0.0


def test_crop_size_formula_clipping_and_scaling():
    sizing = CropSizing()  # d_base 100, alpha 1, [50, 200] at 256 px
    assert sizing.size_for(0.0, 256) == 100 and sizing.size_for(0.5, 256) == 150
    assert sizing.size_for(1.0, 256) == 200
    assert CropSizing(d_base=30).size_for(0.2, 256) == 50  # clipped up to d_min
    assert sizing.size_for(0.5, 128) == 75  # everything halves at 128 px
    assert CropSizing(alpha=3.0).size_for(1.0, 128) == 100  # clipped to d_max = 100 at 128 px


def test_square_crop_is_the_purest_window_by_brute_force():
    rng = np.random.default_rng(4)
    mask = rng.random((24, 30)) < 0.6
    top, left, purity = square_crop(mask, 7, min_purity=0.0)
    brute = max(mask[r : r + 7, c : c + 7].mean() for r in range(18) for c in range(24))
    # exact: a count of 49 booleans over 49, one correctly rounded division on every route
    assert purity == brute and mask[top : top + 7, left : left + 7].mean() == purity
    assert square_crop(mask, 7, min_purity=brute + 0.01) is None
    r_top, r_left, r_purity = square_crop(mask, 5, min_purity=0.5, rng=np.random.default_rng(0))
    assert r_purity >= 0.5 and mask[r_top : r_top + 5, r_left : r_left + 5].mean() == r_purity  # exact, as above


def test_class_crops_lie_inside_their_regions():
    tissue = np.full((128, 128), 2, np.uint8)
    tissue[10:80, 20:90] = 1  # a 70 px square of class 1 in class 2
    tissue[100:104, 100:103] = 3  # a sliver too small for d_min = 25
    tissue[0:5, 0:5] = 255
    crops = {c.class_id: c for c in class_crops(tissue, CropSizing(min_purity=1.0))}
    assert set(crops) == {1, 2, 3}
    for class_id, crop in crops.items():
        assert (tissue[crop.slices] == class_id).all(), class_id
        assert crop.size <= crop.target
    assert crops[1].size >= 50 and crops[1].size == crops[1].target  # the square fits its whole target
    assert crops[3].size == 3  # largest inscribed square of the 4x3 sliver (fallback below d_min)
    random_crops = class_crops(tissue, CropSizing(min_purity=1.0), rng=np.random.default_rng(1))
    assert all((tissue[c.slices] == c.class_id).all() for c in random_crops)
    assert largest_inscribed_square(tissue == 1) == (10, 20, 69)


def test_crop_purity_has_one_definition_shared_with_the_htd_preset():
    """CropSizing.min_purity (1.0, the precursor's all-ones search) is the one crop purity: class_crops' default
    and the diffusion preset's CropConfig both take it, so HTD's crops and labels' crops are the same boxes."""
    from histosynth.generators.conditioning.crops import crop_boxes
    from histosynth.generators.diffusion.presets import CropConfig

    assert CropSizing().min_purity == CropConfig().min_purity == 1.0
    tissue = np.full((128, 128), 2, np.uint8)
    tissue[:, :80] = 1
    speckle = np.random.default_rng(3).random((128, 80)) < 0.01  # stray class-2 pixels: no 1.0-pure big window
    tissue[:, :80][speckle] = 2

    def boxes(crops):
        return {c.class_id: (c.top, c.left, c.size) for c in crops}

    labels = boxes(class_crops(tissue, rng=np.random.default_rng(0)))
    assert all((tissue[r : r + d, c : c + d] == k).all() for k, (r, c, d) in labels.items())
    assert crop_boxes(tissue, np.random.default_rng(0), CropConfig()) == labels
    # the map tells thresholds apart, so a drifted default (e.g. the former 0.95) would fail the line above
    assert boxes(class_crops(tissue, CropSizing(min_purity=0.95), rng=np.random.default_rng(0))) != labels


def test_composition_stats_text_and_plot(tmp_path):
    stats = CompositionStats()
    for f in ({1: 0.5, 2: 0.5}, {1: 0.9, 2: 0.1}, {1: 1.0}, {1: 0.6, 2: 0.4}):
        stats.add(striped(f))
    assert stats.fraction_heterogeneous == 0.5
    assert stats.histogram().tolist() == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    text = "\n".join(stats.lines("maps"))
    assert "maps: 4; in 20-80%" in text and "2 (50.0%)" in text and "classes per patch: 1: 1, 2: 3" in text
    png = save_composition_plot({"input": stats}, tmp_path / "c.png")
    assert np.asarray(Image.open(png)).std() > 5
