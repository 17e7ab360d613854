"""Training arrays for every generator: the resized patches and maps the rules define, nuclei through the
memory-mapped spill, condition batches at sampling time, and augmentation that moves centroids with the pixels."""

import json

import numpy as np
import pytest

from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.errors import UserFacingError
from histosynth.generators.arrays import (
    SPILL_MANIFEST,
    TrainingDataError,
    augment,
    condition_batch,
    load_training_arrays,
    rotate_flip_centroids,
    scale_centroids,
)
from histosynth.generators.conditioning.batch import ConditionBatch, NucleiLayout
from histosynth.labels.heterogeneity import is_heterogeneous
from histosynth.resize import resize_image, resize_map
from histosynth.schema import Nuclei, Provenance, Sample
from histosynth.sources import build_source

SIDE = 32  # simulator patches; loaded at 16 (downscaled) or 32 (as stored)


@pytest.fixture(scope="module")
def samples():
    found = list(build_source("simulator", n=6, size=SIDE, seed=3, mpp=4.0))
    assert all(s.nuclei is not None and s.tissue is not None for s in found)
    assert sum(len(s.nuclei) for s in found) > 0
    return found


@pytest.fixture(scope="module")
def folder(tmp_path_factory, samples):
    out = tmp_path_factory.mktemp("data") / "sim"
    write_dataset(samples, out, CardInfo("sim", "test"))
    return out


def _reference(samples, resolution, heterogeneity):
    """The rule written out: patches passing the 20-80% rule, images Lanczos- and maps nearest-resized."""
    kept = [s for s in samples if heterogeneity is None or is_heterogeneous(s.tissue, *heterogeneity)]
    return (np.stack([resize_image(s.image, resolution) for s in kept]),
            np.stack([resize_map(s.tissue, resolution) for s in kept]), len(samples) - len(kept))


@pytest.mark.parametrize("heterogeneity", [None, (0.2, 0.8)])
def test_tissue_arrays_are_the_rules_patches_in_memory_and_spilled(folder, samples, tmp_path, heterogeneity):
    images, maps, dropped = _reference(samples, 16, heterogeneity)
    if heterogeneity is not None:
        assert 0 < dropped < 6  # the rule is exercised both ways on this data
    mine = load_training_arrays(folder, 16, ("tissue", "crops"), heterogeneity)
    spilled = load_training_arrays(folder, 16, ("tissue", "crops"), heterogeneity, spill_dir=tmp_path / "arrays")
    for arrays in (mine, spilled):
        assert arrays.images.tobytes() == images.tobytes() and arrays.tissue.tobytes() == maps.tobytes()
        assert arrays.images.shape == images.shape and arrays.tissue.shape == maps.shape
        assert arrays.dropped == dropped and arrays.tissue_schema == samples[0].tissue_schema
        assert (arrays.description, arrays.license, arrays.source_datasets) == (
            mine.description, mine.license, mine.source_datasets)
        assert arrays.nuclei_offsets is None and arrays.nuclei_schema is None
    assert isinstance(spilled.images, np.memmap) and isinstance(spilled.tissue, np.memmap)
    assert not spilled.images.flags.writeable


def test_without_maps_the_patches_are_those_the_rule_keeps(folder, samples):
    images, _, dropped = _reference(samples, 16, (0.2, 0.8))
    mine = load_training_arrays(folder, 16, (), (0.2, 0.8))
    assert mine.images.tobytes() == images.tobytes() and mine.dropped == dropped > 0
    assert mine.tissue is None and mine.tissue_schema is None


@pytest.mark.parametrize("resolution", [16, SIDE])
def test_nuclei_round_trip_through_the_spill(folder, samples, tmp_path, resolution):
    in_memory = load_training_arrays(folder, resolution, ("nuclei",), None)
    spilled = load_training_arrays(folder, resolution, ("nuclei",), None, spill_dir=tmp_path / "arrays")
    assert isinstance(spilled.nuclei_centroids, np.memmap) and isinstance(spilled.nuclei_offsets, np.memmap)
    assert spilled.tissue is None and spilled.nuclei_schema == in_memory.nuclei_schema == "pannuke"
    total = sum(len(s.nuclei) for s in samples)
    for arrays in (in_memory, spilled):
        assert arrays.nuclei_centroids.dtype == np.float32 and arrays.nuclei_centroids.shape == (total, 2)
        assert arrays.nuclei_class_ids.dtype == np.uint8 and arrays.nuclei_offsets.dtype == np.int64
        assert arrays.nuclei_offsets.tolist() == np.cumsum([0] + [len(s.nuclei) for s in samples]).tolist()
        batch = arrays.batch(np.arange(len(samples))[::-1])
        assert isinstance(batch, ConditionBatch) and batch.nuclei_schema == "pannuke" and batch.tissue is None
        for layout, s in zip(batch.nuclei, samples[::-1], strict=True):
            expected = scale_centroids(s.nuclei.centroids, SIDE, SIDE, resolution)
            assert layout.centroids.tobytes() == expected.tobytes()
            assert layout.class_ids.tobytes() == s.nuclei.class_ids.tobytes()
    if resolution == SIDE:  # stored size: the centroids are the dataset's, bit for bit
        assert in_memory.nuclei_centroids.tobytes() == np.concatenate([s.nuclei.centroids for s in samples]).tobytes()


def _nuclei_sample(items, side: int = 16, schema: str = "pannuke") -> Sample:
    return Sample(image=np.zeros((side, side, 3), np.uint8), provenance=Provenance("test"),
                  nuclei=Nuclei.from_list(schema, items))


def test_patches_without_nuclei_and_a_set_with_none_at_all_spill_and_load(tmp_path):
    items = [[], [(3.0, 4.0, 2)], []]
    arrays = load_training_arrays([_nuclei_sample(i) for i in items], 16, ("nuclei",), None, spill_dir=tmp_path / "a")
    assert arrays.nuclei_offsets.tolist() == [0, 0, 1, 1]
    assert [len(arrays.nuclei_of(i)) for i in range(3)] == [0, 1, 0]
    assert arrays.nuclei_of(1).centroids.tolist() == [[3.0, 4.0]] and arrays.nuclei_of(1).class_ids.tolist() == [2]
    empty = load_training_arrays([_nuclei_sample([])] * 2, 16, ("nuclei",), None, spill_dir=tmp_path / "b")
    assert empty.nuclei_centroids.shape == (0, 2) and empty.nuclei_offsets.tolist() == [0, 0, 0]


def test_a_finished_spill_is_reused_and_rebuilt_for_other_parts(folder, tmp_path):
    spill = tmp_path / "arrays"
    load_training_arrays(folder, 16, ("nuclei", "tissue"), None, spill_dir=spill)
    written = (spill / SPILL_MANIFEST).stat().st_mtime_ns, (spill / "images.u8").stat().st_ino
    again = load_training_arrays(folder, 16, ("tissue", "nuclei"), None, spill_dir=spill)  # same parts, any order
    assert ((spill / SPILL_MANIFEST).stat().st_mtime_ns, (spill / "images.u8").stat().st_ino) == written
    assert again.tissue is not None and again.nuclei_offsets is not None
    tissue_only = load_training_arrays(folder, 16, ("tissue",), None, spill_dir=spill)
    assert (spill / "images.u8").stat().st_ino != written[1] and tissue_only.nuclei_offsets is None
    assert json.loads((spill / SPILL_MANIFEST).read_text())["parts"] == ["tissue"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays"]  # no partial folder or lock file left


@pytest.mark.parametrize(("parts", "bad", "message"), [
    (("nuclei",), Sample(image=np.zeros((16, 16, 3), np.uint8), provenance=Provenance("test")), "has no nuclei"),
    (("crops",), _nuclei_sample([]), "has no tissue map"),
    (("nuclei",), _nuclei_sample([], schema="lizard"), "uses nuclei schema 'lizard', earlier ones 'pannuke'"),
])
def test_a_patch_without_a_needed_part_is_a_clear_error_and_leaves_nothing(tmp_path, parts, bad, message):
    good = Sample(image=np.zeros((16, 16, 3), np.uint8), provenance=Provenance("test"),
                  tissue=np.ones((16, 16), np.uint8), tissue_schema="simulator-tissue",
                  nuclei=Nuclei.from_list("pannuke", [(1.0, 2.0, 1)]))
    with pytest.raises(TrainingDataError, match=f"training sample 1 \\(sample test\\) {message}") as err:
        load_training_arrays([good, bad], 16, parts, None, spill_dir=tmp_path / "arrays")
    assert isinstance(err.value, UserFacingError) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_parts_are_refused():
    with pytest.raises(ValueError, match="unknown condition parts \\['centroids'\\]"):
        load_training_arrays([_nuclei_sample([])], 16, ("centroids",), None)


@pytest.mark.parametrize(("height", "width", "resolution"), [(32, 32, 16), (16, 16, 32), (16, 32, 16), (16, 8, 32)])
def test_scaled_centroids_land_where_nearest_resizing_puts_their_pixel(height, width, resolution):
    rows, cols = np.meshgrid(np.arange(0, height, 4), np.arange(0, width, 4), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    sy, sx = max(1, height // resolution), max(1, width // resolution)  # a block that survives downscaling
    for r, c in zip(rows, cols, strict=True):
        mark = np.zeros((height, width), np.uint8)
        mark[r : r + sy, c : c + sx] = 1
        centroid = np.array([[c + (sx - 1) / 2, r + (sy - 1) / 2]], np.float32)  # the block's exact center
        resized = resize_map(mark, resolution)
        y, x = np.nonzero(resized)
        # block corners sit on the grid of the scale factor, so both centers are exact multiples of 1/2
        assert scale_centroids(centroid, height, width, resolution).tolist() == [[x.mean(), y.mean()]]


def test_condition_batch_matches_the_rule_and_the_training_arrays(samples):
    images, maps, _ = _reference(samples, 16, None)
    batch = condition_batch(samples, 16, ("crops", "nuclei"))
    assert batch.images.tobytes() == images.tobytes() and batch.tissue.tobytes() == maps.tobytes()
    assert batch.tissue_schema == samples[0].tissue_schema and batch.nuclei_schema == "pannuke" and batch.masks is None
    trained = load_training_arrays(samples, 16, ("crops", "nuclei"), None).batch(np.arange(len(samples)))
    for a, b in zip(batch.nuclei, trained.nuclei, strict=True):
        assert a.centroids.tobytes() == b.centroids.tobytes() and a.class_ids.tobytes() == b.class_ids.tobytes()


def test_condition_batch_resizes_completion_masks_and_names_what_is_missing(samples):
    mask = np.zeros((SIDE, SIDE), bool)
    mask[8:24, :16] = True
    masked = [samples[0], Sample(image=samples[1].image, provenance=samples[1].provenance, completion_mask=mask)]
    with pytest.raises(TrainingDataError, match=r"conditions \[0\] have no completion mask; .*\['mask'\]"):
        condition_batch(masked, 16, ("mask",))
    masked[0] = Sample(image=samples[0].image, provenance=samples[0].provenance, completion_mask=~mask)
    batch = condition_batch(masked, 16, ("mask",))
    assert batch.masks.dtype == bool and batch.masks.shape == (2, 16, 16)
    assert np.array_equal(batch.masks[1], mask[::2, ::2]) and np.array_equal(batch.masks[0], ~batch.masks[1])
    with pytest.raises(TrainingDataError, match=r"conditions \[0, 1\] have no nuclei"):
        condition_batch(masked, 16, ("nuclei",))
    with pytest.raises(TrainingDataError, match="conditions mix nuclei schemas \\['lizard', 'pannuke'\\]"):
        condition_batch([_nuclei_sample([]), _nuclei_sample([], schema="lizard")], 16, ("nuclei",))


def _htd_augment(images, maps, rng):
    """HTD's augmentation, as generators/htd/model.py `_batch_fn` wrote it (the reference to stay identical to)."""
    images, maps = images.copy(), maps.copy()
    for j, (k, flip) in enumerate(zip(rng.integers(0, 4, len(images)), rng.integers(0, 2, len(images)), strict=False)):
        images[j] = np.rot90(images[j], k)[:, ::-1] if flip else np.rot90(images[j], k)
        maps[j] = np.rot90(maps[j], k)[:, ::-1] if flip else np.rot90(maps[j], k)
    return images, maps


def test_augmentation_of_images_and_maps_is_byte_identical_to_htds(samples):
    batch = condition_batch(samples * 3, 16, ("tissue", "nuclei"))
    before = batch.images.copy()
    ref_rng, rng = np.random.default_rng(7), np.random.default_rng(7)
    images, maps = _htd_augment(batch.images, batch.tissue, ref_rng)
    out = augment(batch, rng)
    assert out.images.tobytes() == images.tobytes() and out.tissue.tobytes() == maps.tobytes()
    assert ref_rng.integers(0, 2**62) == rng.integers(0, 2**62)  # same draws consumed: later draws agree too
    assert np.array_equal(batch.images, before) and not np.array_equal(out.images, before)


def _dots(size: int, layout: NucleiLayout) -> np.ndarray:
    """An image with nucleus j drawn as one pixel of value j + 1 at its (x, y)."""
    image = np.zeros((size, size, 3), np.uint8)
    for j, (x, y) in enumerate(layout.centroids.astype(int)):
        image[y, x] = j + 1
    return image


def test_augmented_centroids_land_on_their_transformed_dots():
    size = 12
    layout = NucleiLayout(np.array([[0, 0], [11, 0], [3, 7], [10, 11], [5, 2]], np.float32),
                          np.array([1, 2, 3, 4, 5], np.uint8))
    for k in range(4):
        for flip in (False, True):  # every one of the 8 symmetries, directly
            moved = np.rot90(_dots(size, layout), k)[:, ::-1] if flip else np.rot90(_dots(size, layout), k)
            xy = rotate_flip_centroids(layout.centroids, k, flip, size)
            assert np.array_equal(_dots(size, NucleiLayout(xy, layout.class_ids)), moved)
    batch = ConditionBatch(np.stack([_dots(size, layout)] * 32), nuclei=[layout] * 32, nuclei_schema="pannuke")
    out = augment(batch, np.random.default_rng(0))
    assert len({out.images[j].tobytes() for j in range(32)}) == 8  # all symmetries drawn, so all are checked
    for image, moved in zip(out.images, out.nuclei, strict=True):
        assert np.array_equal(_dots(size, moved), image) and np.array_equal(moved.class_ids, layout.class_ids)


def test_mpp_at_the_model_resolution_travels_with_the_patches(folder, samples, tmp_path):
    """CentroidMaps sizes its Gaussians by each patch's mpp: a 32 px patch at 4 um/px is 8 um/px at 16 px."""
    for arrays in (load_training_arrays(folder, 16, ("nuclei",), None),
                   load_training_arrays(folder, 16, ("nuclei",), None, spill_dir=tmp_path / "arrays")):
        assert np.array_equal(arrays.batch(np.array([2, 0])).mpp, [8.0, 8.0])
    assert np.array_equal(condition_batch(samples[:2], 16, ()).mpp, [8.0, 8.0])
    unknown = Sample(image=samples[0].image, provenance=Provenance("test"))
    assert np.isnan(condition_batch([unknown], 16, ()).mpp).all()
