"""HTD's condition packing, adaptive crops, heterogeneity rule and curriculum (numpy only, no torch)."""

import numpy as np
import pytest

from histosynth.generators.diffusion.presets import CropConfig, CurriculumConfig
from histosynth.generators.htd.conditions import (
    Curriculum,
    crop_boxes,
    crop_side,
    curriculum_k,
    is_heterogeneous,
    largest_square,
    one_hot,
    pack_crops,
    region_complexity,
)


def two_class_map(size=64):
    tissue = np.ones((size, size), np.uint8)
    tissue[:, size // 2 :] = 2
    tissue[0, 0] = 255
    return tissue


def test_one_hot_leaves_ignore_pixels_empty_and_rejects_unknown_ids():
    tissue = two_class_map()
    m = one_hot(tissue, 3)
    assert m.shape == (3, 64, 64) and m.dtype == np.float32
    assert m[:, 0, 0].sum() == 0 and m[1, 5, 5] == 1 and m[2, 5, 40] == 1
    assert np.array_equal(m.sum(0)[tissue != 255], np.ones(((tissue != 255).sum(),)))
    with pytest.raises(ValueError, match="class id 2 but the model has 2"):
        one_hot(tissue, 2)


def test_largest_square_and_complexity():
    mask = np.zeros((40, 40), bool)
    mask[5:25, 10:22] = True  # 20 x 12 rectangle
    assert largest_square(mask) == 12
    solid = np.ones((32, 32), bool)
    stripes = np.zeros((32, 32), bool)
    stripes[:, ::2] = True
    assert region_complexity(stripes) == 1.0
    assert 0 < region_complexity(solid) < region_complexity(mask) < 1
    cfg = CropConfig(d_base=0.25, alpha=1.0, d_min=0.1, d_max=0.8)
    assert crop_side(solid, cfg) < crop_side(stripes, cfg)  # more complex regions get bigger crops


def test_crop_boxes_lie_inside_their_class_region():
    rng = np.random.default_rng(0)
    tissue = two_class_map(64)
    tissue[40:, :10] = 0
    for _ in range(5):
        boxes = crop_boxes(tissue, rng, CropConfig())
        assert set(boxes) == {0, 1, 2}
        for class_id, (r, c, d) in boxes.items():
            assert d >= 1 and (tissue[r : r + d, c : c + d] == class_id).all()


def test_pack_crops_is_htd_width_and_copies_pixels_in_place():
    tissue = two_class_map(64)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    packed = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig())
    assert packed.shape == (12, 64, 64)
    assert np.array_equal(packed[:3], one_hot(tissue, 3))
    assert not packed[3:6].any()  # class 0 is absent: its crop channels stay empty
    for class_id in (1, 2):
        crop = packed[3 + 3 * class_id : 6 + 3 * class_id]
        where = crop.any(0)
        assert where.any() and (tissue[where] == class_id).all()
        expected = image.astype(np.float32).transpose(2, 0, 1) / 127.5 - 1
        assert np.allclose(crop[:, where], expected[:, where])
    again = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig())
    assert np.array_equal(packed, again)
    corner = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig(placement="corner"))
    assert corner[9:12, 0, 0].any() and np.array_equal(np.sort(corner[9:12].ravel()), np.sort(packed[9:12].ravel()))


def test_heterogeneity_rule_20_80():
    tissue = np.ones((10, 10), np.uint8)
    assert not is_heterogeneous(tissue, 0.2, 0.8)
    tissue[:3] = 2  # 70 / 30
    assert is_heterogeneous(tissue, 0.2, 0.8)
    tissue[:] = 1
    tissue[:1] = 2  # 90 / 10
    assert not is_heterogeneous(tissue, 0.2, 0.8)


def test_curriculum_goes_coarse_to_fine():
    ks = (5, 10, 20, 50, 100)
    assert curriculum_k(0, 1000, ks) == 5
    assert curriculum_k(500, 1000, ks) == 50  # k' = 52.5 snaps down to 50
    assert curriculum_k(1000, 1000, ks) == curriculum_k(5000, 1000, ks) == 100
    values = [curriculum_k(s, 1000, ks) for s in range(0, 1200, 50)]
    assert values == sorted(values)


def test_curriculum_coarsens_maps_with_lookup_tables():
    fine = np.array([[0, 1, 2, 3, 4, 255]], np.uint8)
    cfg = CurriculumConfig(ks=(2, 4), warmup_steps=10, luts={2: [0, 1, 1, 2, 2]})
    cur = Curriculum(cfg)
    assert cur.max_classes == 5
    assert cur.apply(fine, 0).tolist() == [[0, 1, 1, 2, 2, 255]]
    assert cur.apply(fine, 10).tolist() == fine.tolist()
    with pytest.raises(ValueError, match="no lookup table"):
        Curriculum(CurriculumConfig(ks=(2, 3, 4), luts={2: [0, 1, 1, 2, 2]}))
