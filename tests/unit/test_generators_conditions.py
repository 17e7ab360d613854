"""HTD's condition packing and how it maps the preset onto histosynth.labels' crop and curriculum rules (no torch)."""

import inspect

import numpy as np
import pytest
import torch
from numerics import EPS32, EPS64

from histosynth.generators.conditioning.crops import crop_boxes, crop_sizing, pack_crops
from histosynth.generators.conditioning.tissue import one_hot
from histosynth.generators.diffusion.curriculum import Curriculum
from histosynth.generators.diffusion.presets import CropConfig, CurriculumConfig
from histosynth.labels import curriculum
from histosynth.labels.heterogeneity import PAPER_PATCH, CropSizing, region_complexity


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


def test_preset_crop_sizes_map_to_labels_pixels_and_complex_regions_get_bigger_crops():
    cfg = CropConfig(d_base=0.25, alpha=1.0, d_min=0.1, d_max=0.8)
    sizing = crop_sizing(cfg)
    # config fraction x patch side: one or two float64 roundings of each
    assert sizing.limits(PAPER_PATCH) == pytest.approx((64.0, 25.6, 204.8), rel=4 * EPS64)
    assert sizing.limits(128) == pytest.approx((32.0, 12.8, 102.4), rel=4 * EPS64)  # scales with the patch side
    solid = np.ones((64, 64), bool)
    ragged = np.zeros((64, 64), bool)
    ragged[:, ::4] = ragged[:, 1::4] = True
    assert region_complexity(ragged) > region_complexity(solid)
    assert sizing.size_for(region_complexity(ragged), 64) > sizing.size_for(region_complexity(solid), 64)


def test_preset_crop_defaults_are_labels_crop_sizing():
    """One definition of HTD's crop sizes: the preset's fractions are labels' CropSizing pixels / 256 (exactly:
    256 is a power of two), so a change on either side without the other fails here."""
    assert crop_sizing(CropConfig()) == CropSizing()


def test_preset_curriculum_defaults_are_labels_defaults():
    """One curriculum default, defined in histosynth.labels.curriculum."""
    for function in (curriculum.curriculum_k, curriculum.curriculum_stages):
        params = inspect.signature(function).parameters
        assert params["schedule"].default == CurriculumConfig().schedule == curriculum.DEFAULT_SCHEDULE
        assert params["ks"].default == CurriculumConfig().ks == curriculum.HTD_LEVELS
    cfg = CurriculumConfig(warmup_steps=1000, luts={k: list(range(101)) for k in curriculum.HTD_LEVELS})
    # the trainer's k(t) is labels' default schedule, step for step
    assert all(Curriculum(cfg).k_at(s) == curriculum.curriculum_k(s, 1000) for s in range(0, 1100, 7))


def test_crop_boxes_are_pure_cover_each_tissue_class_and_skip_background():
    rng = np.random.default_rng(0)
    tissue = two_class_map(64)
    tissue[40:, :10] = 0
    seen = set()
    for _ in range(8):
        boxes = crop_boxes(tissue, rng, CropConfig())
        assert set(boxes) == {1, 2}  # background (0) and ignore (255) get no crop
        for class_id, (r, c, d) in boxes.items():
            assert d >= 1 and (tissue[r : r + d, c : c + d] == class_id).all()  # min_purity 1.0
            seen.add((class_id, r, c))
    assert len(seen) > 2  # placed at random among the fitting windows


def test_crop_boxes_honor_a_lower_purity():
    tissue = np.ones((64, 64), np.uint8)
    tissue[::8, ::8] = 2  # class 1 is peppered with class-2 dots: no pure 16 px window exists
    cfg = CropConfig(d_base=0.25, d_min=0.25, d_max=0.25, min_purity=0.9)
    (r, c, d) = crop_boxes(tissue, np.random.default_rng(0), cfg)[1]
    assert d == 16 and (tissue[r : r + d, c : c + d] == 1).mean() >= 0.9
    pure = crop_boxes(tissue, np.random.default_rng(0), CropConfig(d_base=0.25, d_min=0.25, d_max=0.25))[1]
    assert pure[2] < 8  # all-ones: only the inscribed square between the dots is left


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
        # x / 127.5 - 1 in float32 on both sides, in any order: <= 2 roundings of values <= 1 each
        assert np.allclose(crop[:, where], expected[:, where], rtol=0, atol=2 * EPS32)
    again = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig())
    assert np.array_equal(packed, again)
    corner = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig(placement="corner"))
    assert corner[9:12, 0, 0].any() and np.array_equal(np.sort(corner[9:12].ravel()), np.sort(packed[9:12].ravel()))


def test_curriculum_goes_coarse_to_fine():
    ks = (5, 10, 20, 50, 100)
    linear = Curriculum(CurriculumConfig(ks=ks, warmup_steps=1000, luts={k: list(range(101)) for k in ks}))
    assert linear.k_at(0) == 5
    assert linear.k_at(500) == 50  # HTD's k' = 52.5 snaps down to 50
    assert linear.k_at(1000) == linear.k_at(5000) == 100
    values = [linear.k_at(s) for s in range(0, 1200, 50)]
    assert values == sorted(values)
    stages = Curriculum(CurriculumConfig(ks=ks, warmup_steps=1000, luts=linear.config.luts, schedule="stages"))
    assert [stages.k_at(s) for s in (0, 199, 200, 500, 999)] == [5, 5, 10, 20, 100]
    none = Curriculum(CurriculumConfig(ks=ks, warmup_steps=0, luts=linear.config.luts))
    assert none.k_at(0) == 100


def test_curriculum_coarsens_maps_with_lookup_tables():
    fine = np.array([[0, 1, 2, 3, 4, 255]], np.uint8)
    cfg = CurriculumConfig(ks=(2, 4), warmup_steps=10, luts={2: [0, 1, 1, 2, 2]})
    cur = Curriculum(cfg)
    assert cur.max_classes == 5
    assert cur.apply(fine, 0).tolist() == [[0, 1, 1, 2, 2, 255]]
    assert cur.apply(fine, 10).tolist() == fine.tolist()
    with pytest.raises(ValueError, match="no lookup table"):
        Curriculum(CurriculumConfig(ks=(2, 3, 4), luts={2: [0, 1, 1, 2, 2]}))


def test_placement_none_keeps_the_map_and_gives_no_real_pixels():
    tissue = two_class_map(64)
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    packed = pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig(placement="none"))
    assert packed.shape == (12, 64, 64)
    assert np.array_equal(packed[:3], one_hot(tissue, 3)) and not packed[3:].any()
    with pytest.raises(ValueError, match="placement"):
        pack_crops(tissue, image, 3, np.random.default_rng(2), CropConfig(placement="elsewhere"))


def test_a_loaded_model_switched_to_placement_none_gets_no_crop_pixels(tmp_path):
    """The demo's htd-no-copy row: a trained HTD whose crop channels are switched off after loading must condition
    on the map alone: its conditioner is rebuilt from the changed settings."""
    import dataclasses

    from histosynth.generators import build_generator, load_generator
    from histosynth.sources import build_source

    data = list(build_source("simulator", n=4, size=32, seed=0, mpp=4.0))
    build_generator("htd", "tiny").train(data, {"steps": 1}, out=tmp_path / "model")
    with_crops, no_copy = load_generator(tmp_path / "model"), load_generator(tmp_path / "model")
    no_copy.update_condition(crops=dataclasses.replace(no_copy.preset.model.crops, placement="none"))
    k = no_copy.num_classes
    from histosynth.generators.arrays import condition_batch

    batch = condition_batch(data, 32, no_copy.parts)
    rngs = [np.random.default_rng(j) for j in range(len(data))]
    assert not no_copy.conditioner(batch, rngs, torch.device("cpu"))["condition"][:, k:].any()
    assert with_crops.conditioner(batch, rngs, torch.device("cpu"))["condition"][:, k:].any()
