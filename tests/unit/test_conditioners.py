"""The conditioning strategies (histosynth.generators.conditioning): tissue one-hot, HTD crops, centroid maps,
masked image, Compose, and rebuilding each from its config."""

import json
import math

import numpy as np
import pytest
import torch
from numerics import EPS32

from histosynth.errors import InputError, UnknownNameError
from histosynth.generators.conditioning.batch import ConditionBatch, NucleiLayout
from histosynth.generators.conditioning.centroids import DEFAULT_SIGMA_UM, TRUNCATE, CentroidMaps, window_half
from histosynth.generators.conditioning.compose import Compose
from histosynth.generators.conditioning.crops import HTDCrops, pack_crops
from histosynth.generators.conditioning.masked import MaskedImage
from histosynth.generators.conditioning.registry import conditioner_from_config
from histosynth.generators.conditioning.tissue import TissueOneHot
from histosynth.generators.diffusion.presets import CropConfig

CPU = torch.device("cpu")


def blob_map(seed: int, size: int, classes: int) -> np.ndarray:
    """A Voronoi tissue map of `classes` ids (0 = background included) with a few ignore pixels."""
    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, size, (8, 2))
    rows, cols = np.mgrid[:size, :size]
    nearest = np.argmin((rows[..., None] - seeds[:, 0]) ** 2 + (cols[..., None] - seeds[:, 1]) ** 2, axis=-1)
    tissue = rng.integers(0, classes, 8)[nearest].astype(np.uint8)
    tissue[rng.random((size, size)) < 0.002] = 255
    return tissue


def batch_of(tissue=None, nuclei=None, masks=None, size=32, n=1, mpp=None, seed=0) -> ConditionBatch:
    images = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return ConditionBatch(images=images, tissue=tissue, nuclei=nuclei, masks=masks,
                          mpp=None if mpp is None else np.asarray(mpp, np.float64))


def layout(*items: tuple[float, float, int]) -> NucleiLayout:
    xy = np.array([(x, y) for x, y, _ in items], np.float32).reshape(-1, 2)
    return NucleiLayout(xy, np.array([c for _, _, c in items], np.uint8))


# ---------------------------------------------------------------- tissue one-hot and HTD crops


def test_tissue_one_hot_channels_ignore_pixels_and_unknown_ids():
    tissue = np.ones((2, 16, 16), np.uint8)
    tissue[:, :, 8:] = 2
    tissue[1, 0, 0] = 255
    out = TissueOneHot(3)(batch_of(tissue=tissue, size=16, n=2), [], CPU)["condition"]
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.float32
    assert out[1, :, 0, 0].sum() == 0 and out[0, :, 0, 0].tolist() == [0, 1, 0]
    assert out[0, 2, 3, 12] == 1 and out[0, 1, 3, 12] == 0
    assert torch.equal(out.sum(1)[torch.from_numpy(tissue != 255)], torch.ones(int((tissue != 255).sum())))
    with pytest.raises(InputError, match="class id 2 but the model has 2 classes"):
        TissueOneHot(2)(batch_of(tissue=tissue, size=16, n=2), [], CPU)
    with pytest.raises(InputError, match="'tissue' part.*no tissue maps"):
        TissueOneHot(3)(batch_of(size=16), [], CPU)


@pytest.mark.parametrize("placement", ["source", "corner", "none"])
def test_htd_crops_equal_pack_crops_byte_for_byte(placement):
    """The refactor must not change a dataset: same rng -> the same bytes as the packing function pack_crops."""
    crops_seen = 0
    for seed, (size, k) in enumerate([(64, 3), (64, 5), (96, 4), (128, 6)]):
        maps = np.stack([blob_map(100 * seed + j, size, k) for j in range(3)])
        batch = ConditionBatch(images=np.random.default_rng(seed).integers(0, 256, (3, size, size, 3), dtype=np.uint8),
                               tissue=maps)
        config = CropConfig(placement=placement, min_purity=0.9 if seed % 2 else 1.0)
        rngs = [np.random.default_rng([seed, j]) for j in range(3)]
        got = HTDCrops(k, config)(batch, rngs, CPU)["condition"].numpy()
        want = np.stack([pack_crops(m, im, k, np.random.default_rng([seed, j]), config)
                         for j, (m, im) in enumerate(zip(maps, batch.images, strict=True))])
        assert got.shape == (3, 4 * k, size, size) and got.dtype == np.float32
        assert got.tobytes() == want.tobytes()
        crops_seen += int(np.count_nonzero(got[:, k:]))
    assert (crops_seen > 0) == (placement != "none")  # the crops were really drawn (or really left out)


def test_htd_crops_needs_maps_and_a_known_placement():
    with pytest.raises(InputError, match="'crops' part.*no tissue maps"):
        HTDCrops(3)(batch_of(), [np.random.default_rng(0)], CPU)
    with pytest.raises(InputError, match="placement must be one of"):
        HTDCrops(3, CropConfig(placement="middle"))


# ---------------------------------------------------------------- centroid maps


def test_gaussian_maps_peak_at_the_centroids_in_their_class_channel():
    nuclei = layout((5, 7, 1), (20, 25, 3), (26.3, 4.6, 3), (10, 10, 255))
    out = CentroidMaps(4, sigma_px=1.5)(batch_of(nuclei=[nuclei]), [], CPU)["condition"][0].numpy()
    assert out.shape == (4, 32, 32)
    assert out[0].max() == 0 and out[2].max() == 0  # no nucleus of class 0 or 2; ignore (255) draws nowhere
    assert out[1, 7, 5] == 1 and np.unravel_index(out[1].argmax(), out[1].shape) == (7, 5)
    assert out[3, 25, 20] == 1 and out[1, 25, 20] < 1e-6
    # the sub-pixel nucleus: its rounded pixel is the local maximum, with the exact Gaussian value there
    window = out[3, 3:8, 24:29]
    assert np.unravel_index(window.argmax(), window.shape) == (2, 2)  # row 5 = round(4.6), col 26 = round(26.3)
    x, y = float(np.float32(26.3)), float(np.float32(4.6))  # the centroids are float32
    expected = math.exp(-((26 - x) ** 2 + (5 - y) ** 2) / (2 * 1.5**2))
    assert out[3, 5, 26] == pytest.approx(expected, rel=2 * EPS32)  # two float32 factors and their product
    assert out[1, 7, 8] == pytest.approx(math.exp(-9 / (2 * 1.5**2)), rel=2 * EPS32)


@pytest.mark.parametrize("x", [1.2, -1.4])  # -1.4: just off the patch, as a resized or jittered centroid can be
def test_a_nucleus_at_the_edge_is_cut_by_the_patch_not_folded_onto_it(x):
    x, y = float(np.float32(x)), float(np.float32(30.7))
    out = CentroidMaps(2, sigma_px=2.0)(batch_of(nuclei=[layout((x, y, 1))]), [], CPU)["condition"][0, 1].numpy()
    rows, cols = np.mgrid[:32, :32]
    expected = np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 8.0)
    expected[(np.abs(rows - 31) > window_half(2.0)) | (np.abs(cols - round(x)) > window_half(2.0))] = 0
    np.testing.assert_allclose(out, expected, rtol=2 * EPS32, atol=0)  # two float32 factors and their product


def test_overlapping_gaussians_take_the_max_not_the_sum():
    nuclei = layout((10, 10, 1), (12, 10, 1))
    out = CentroidMaps(2, sigma_px=2.0)(batch_of(nuclei=[nuclei]), [], CPU)["condition"][0, 1].numpy()
    assert out[10, 10] == 1 and out[10, 12] == 1
    assert out[10, 11] == pytest.approx(math.exp(-1 / 8), rel=2 * EPS32)  # one Gaussian's value, not two
    assert out.max() == 1


@pytest.mark.parametrize("mpp", [0.25, 0.5, 1.0])
def test_gaussian_sigma_is_the_stated_microns_at_the_patch_mpp(mpp):
    """sigma = 2.5 um / mpp pixels: the whole map is that Gaussian, in its window of >= 4 sigma."""
    size = 96
    nuclei = layout((48, 48, 1))
    maps = CentroidMaps(2)(batch_of(nuclei=[nuclei], size=size, mpp=[mpp]), [], CPU)["condition"][0, 1].numpy()
    sigma = DEFAULT_SIGMA_UM / mpp
    rows, cols = np.mgrid[:size, :size]
    d2 = (rows - 48.0) ** 2 + (cols - 48.0) ** 2
    half = window_half(sigma)
    assert half >= TRUNCATE * sigma
    inside = (np.abs(rows - 48) <= half) & (np.abs(cols - 48) <= half)
    expected = np.where(inside, np.exp(-d2 / (2 * sigma**2)), 0.0)
    assert np.count_nonzero(maps) == inside.sum() and (expected[~inside] == 0).all()
    # g(dy) and g(dx) each rounded to float32, then their float32 product: three roundings of EPS32 / 2
    np.testing.assert_allclose(maps, expected, rtol=2 * EPS32, atol=0)


def test_mpp_comes_from_the_batch_else_the_conditioner_else_a_clear_error():
    nuclei = [layout((16, 16, 1))] * 2
    fixed = CentroidMaps(2, sigma_um=2.0, mpp=0.5)
    assert fixed.sigmas(batch_of(nuclei=nuclei, n=2)).tolist() == [4.0, 4.0]
    assert fixed.sigmas(batch_of(nuclei=nuclei, n=2, mpp=[1.0, np.nan])).tolist() == [2.0, 4.0]
    assert CentroidMaps(2, sigma_px=3).sigmas(batch_of(nuclei=nuclei, n=2, mpp=[1.0, 1.0])).tolist() == [3.0, 3.0]
    assert CentroidMaps(2, sigma_um=1.0).sigmas(batch_of(nuclei=nuclei, n=2, mpp=[8.0, 1.0])).tolist() == [0.5, 1.0]
    with pytest.raises(InputError, match="condition 1 has none"):
        CentroidMaps(2)(batch_of(nuclei=nuclei, n=2, mpp=[0.5, np.nan]), [], CPU)
    with pytest.raises(InputError, match="not both"):
        CentroidMaps(2, sigma_px=2, sigma_um=2)


def test_point_mode_marks_the_rounded_centroid_pixels_only():
    nuclei = layout((3.4, 5.6, 1), (31.0, 0.0, 2), (3.2, 5.8, 1))
    out = CentroidMaps(3, mode="point")(batch_of(nuclei=[nuclei]), [], CPU)["condition"][0].numpy()
    assert out[1, 6, 3] == 1 and out[2, 0, 31] == 1
    assert out.sum() == 2 and set(np.unique(out)) == {0.0, 1.0}


def test_distance_channel_is_zero_at_centroids_and_grows_away_to_one():
    nuclei = layout((8, 8, 1), (24, 20, 2))
    cm = CentroidMaps(3, sigma_px=1.0, mode="point", distance_channel=True, distance_scale=10.0)
    assert cm.channels == 4
    far = cm(batch_of(nuclei=[nuclei]), [], CPU)["condition"][0, 3].numpy()
    assert far[8, 8] == 0 and far[20, 24] == 0
    assert [far[8, 8 + d] for d in range(6)] == pytest.approx([d / 10 for d in range(6)], rel=4 * EPS32)
    assert far[8, 9] < far[8, 10] < far[8, 11] and far[9, 9] == pytest.approx(math.sqrt(2) / 10, rel=4 * EPS32)
    assert far.max() == 1 and far.min() == 0
    empty = cm(batch_of(nuclei=[layout()]), [], CPU)["condition"][0]
    assert torch.equal(empty[3], torch.ones(32, 32)) and empty[:3].abs().sum() == 0


def test_centroid_maps_need_nuclei_and_known_classes():
    with pytest.raises(InputError, match="'nuclei' part.*no nuclei"):
        CentroidMaps(3, sigma_px=1)(batch_of(), [], CPU)
    with pytest.raises(InputError, match="nuclei of condition 0 has class id 5 but the model has 3 classes"):
        CentroidMaps(3, sigma_px=1)(batch_of(nuclei=[layout((1, 1, 5))]), [], CPU)


# ---------------------------------------------------------------- masked image, Compose, configs


def test_masked_image_zeroes_the_hole_and_appends_the_mask():
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 4:10, 6:20] = True
    batch = batch_of(masks=masks, n=2)
    out = MaskedImage()(batch, [], CPU)["condition"].numpy()
    assert out.shape == (2, 4, 32, 32)
    assert np.array_equal(out[:, 3], masks.astype(np.float32))
    assert (out[0, :3, 4:10, 6:20] == 0).all()
    known = batch.images.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0
    assert np.array_equal(out[1, :3], known[1]) and np.array_equal(out[0, :3, 10:], known[0, :, 10:])
    assert out[:, :3].min() >= -1 and out[:, :3].max() <= 1
    with pytest.raises(InputError, match="'mask' part.*no completion masks"):
        MaskedImage()(batch_of(), [], CPU)


def test_compose_concatenates_channels_and_unions_parts():
    tissue = np.stack([blob_map(1, 32, 3), blob_map(2, 32, 3)])
    masks = np.zeros((2, 32, 32), bool)
    masks[:, :8] = True
    batch = batch_of(tissue=tissue, nuclei=[layout((3, 3, 1)), layout()], masks=masks, n=2, mpp=[0.5, 0.5])
    members = [CentroidMaps(3, distance_channel=True), MaskedImage(), HTDCrops(3)]
    both = Compose(members)
    assert both.parts == ("nuclei", "mask", "tissue", "crops") and both.channels == 4 + 4 + 12
    out = both(batch, [np.random.default_rng(j) for j in range(2)], CPU)["condition"]
    assert out.shape == (2, 20, 32, 32)
    alone = [m(batch, [np.random.default_rng(j) for j in range(2)], CPU)["condition"] for m in members]
    assert torch.equal(out, torch.cat(alone, 1))


def test_every_conditioner_rebuilds_from_its_json_config():
    conditioners = [TissueOneHot(5), HTDCrops(4, CropConfig(placement="corner", alpha=0.5)),
                    CentroidMaps(6, sigma_px=2.0, mode="point", distance_channel=True, distance_scale=4.0),
                    CentroidMaps(6, sigma_um=3.0, mpp=0.5), MaskedImage(),
                    Compose([CentroidMaps(6), MaskedImage()])]
    nuclei = [layout((3, 3, 1), (20.5, 9.25, 5))]
    batch = batch_of(tissue=blob_map(3, 32, 4)[None], nuclei=nuclei, masks=np.eye(32, dtype=bool)[None], mpp=[0.5])
    for original in conditioners:
        rebuilt = conditioner_from_config(json.loads(json.dumps(original.config())))
        assert type(rebuilt) is type(original) and rebuilt.config() == original.config()
        assert rebuilt.channels == original.channels and rebuilt.parts == original.parts
        a = original(batch, [np.random.default_rng(0)], CPU)["condition"]
        assert a.shape == (1, original.channels, 32, 32)
        assert torch.equal(a, rebuilt(batch, [np.random.default_rng(0)], CPU)["condition"])
    with pytest.raises(UnknownNameError, match="unknown conditioner 'tissue-onehot'"):
        conditioner_from_config({"name": "tissue-onehot", "num_classes": 3})
    with pytest.raises(InputError, match="unknown settings sigma"):
        conditioner_from_config({"name": "centroid-maps", "num_classes": 3, "sigma": 2})
    with pytest.raises(InputError, match="missing num_classes"):
        conditioner_from_config({"name": "tissue-one-hot"})
