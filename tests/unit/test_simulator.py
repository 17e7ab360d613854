"""The `simulator` source: valid, deterministic patches whose labels agree exactly with the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from numerics import EPS32
from scipy import ndimage
from skimage.color import rgb2hed

from histosynth.schema import Sample
from histosynth.sources import build_source
from histosynth.sources.simulator import SimulatorSource, simulate_patch

SIZE = 96  # small patches keep the suite fast; still several nuclei and regions each
# pannuke nucleus class -> simulator-tissue class under its centroid, written out independently of the module.
EXPECTED_TISSUE = {1: 3, 2: 1, 3: 1, 4: 4, 5: 2}


@pytest.fixture(scope="module")
def batch() -> list[Sample]:
    return list(SimulatorSource(n=16, size=SIZE, seed=3))


def test_samples_validate_and_carry_provenance(batch: list[Sample]) -> None:
    assert len(batch) == 16 == len(SimulatorSource(n=16, size=SIZE, seed=3))
    for i, s in enumerate(batch):
        s.validate()
        assert s.image.shape == (SIZE, SIZE, 3) and s.image.dtype == np.uint8
        assert s.tissue_schema == "simulator-tissue" and s.nuclei is not None and s.nuclei.schema == "pannuke"
        assert s.nuclei.instances is not None and s.nuclei.instances.dtype == np.uint16
        p = s.provenance
        assert (p.source, p.slide_id, p.x, p.y, p.level, p.mpp) == ("simulator", "sim-3", i * SIZE, 0, 0, 0.5)
        assert isinstance(p.seed, int) and 0 <= p.seed < 2**63


def test_registered_and_built_by_name() -> None:
    source = build_source("simulator", n=2, size=SIZE, seed=1, min_tissue=None)
    assert isinstance(source, SimulatorSource) and len(source) == 2
    with pytest.raises(ValueError, match="does not take --min-tissue"):
        build_source("simulator", n=2, min_tissue=0.5)
    meta = SimulatorSource.meta
    assert (meta.name, meta.license, meta.native_mpp) == ("simulator", "CC0-1.0", 0.5)
    assert (meta.tissue_schema, meta.nuclei_schema) == ("simulator-tissue", "pannuke")


def test_same_seed_is_byte_identical_and_seeds_differ() -> None:
    a = list(SimulatorSource(n=3, size=SIZE, seed=7))
    b = list(SimulatorSource(n=3, size=SIZE, seed=7))
    c = list(SimulatorSource(n=3, size=SIZE, seed=8))
    assert all(x.equals(y) for x, y in zip(a, b, strict=False))
    assert all(not np.array_equal(x.image, z.image) for x, z in zip(a, c, strict=False))
    assert not np.array_equal(a[0].image, a[1].image)  # samples of one run differ too


def test_sample_i_does_not_depend_on_n_and_replays_from_provenance() -> None:
    short = list(SimulatorSource(n=2, size=SIZE, seed=5))
    long = list(SimulatorSource(n=4, size=SIZE, seed=5))
    assert short[1].equals(long[1])
    assert SimulatorSource(n=4, size=SIZE, seed=5).sample(3).equals(long[3])
    replay = simulate_patch(long[2].provenance.seed, SIZE, 0.5, 1.0)
    assert np.array_equal(replay.image, long[2].image) and np.array_equal(replay.tissue, long[2].tissue)
    assert replay.nuclei.equals(long[2].nuclei)


def test_simulate_patch_accepts_a_generator() -> None:
    a = simulate_patch(np.random.default_rng(11), SIZE)
    b = simulate_patch(np.random.default_rng(11), SIZE)
    assert a.equals(b) and a.provenance.seed is None
    assert simulate_patch(11, SIZE).provenance.seed == 11


def test_instances_are_numbered_and_centroids_are_pixel_means(batch: list[Sample]) -> None:
    total = 0
    for s in batch:
        inst, n = s.nuclei.instances, len(s.nuclei)
        total += n
        assert np.array_equal(np.unique(inst), np.arange(n + 1))
        if n == 0:
            continue
        rows_cols = np.array(ndimage.center_of_mass(np.ones_like(inst), inst, np.arange(1, n + 1)))
        # centroids are stored as float32: one rounding of a coordinate < size (EPS32/2 of it), both sides' means
        np.testing.assert_allclose(s.nuclei.centroids[:, ::-1], rows_cols, atol=EPS32 * inst.shape[0], rtol=0)
        class_map = s.nuclei.class_map()
        for k in range(n):  # every pixel of instance k + 1 carries class k
            assert set(np.unique(class_map[inst == k + 1]).tolist()) == {int(s.nuclei.class_ids[k])}
    assert total > 16 * 5


def test_nucleus_class_matches_tissue_under_its_centroid(batch: list[Sample]) -> None:
    seen = set()
    for s in batch:
        xy = np.rint(s.nuclei.centroids).astype(int)
        under = s.tissue[xy[:, 1], xy[:, 0]]
        expected = np.array([EXPECTED_TISSUE[int(c)] for c in s.nuclei.class_ids], dtype=np.uint8)
        assert np.array_equal(under, expected)
        seen.update(s.nuclei.class_ids.tolist())
    assert seen == set(EXPECTED_TISSUE)  # every nucleus class occurs in the batch


def test_nuclei_are_separate_blobs_of_plausible_size(batch: list[Sample]) -> None:
    for s in batch:
        inst, n = s.nuclei.instances, len(s.nuclei)
        if n == 0:
            continue
        assert np.bincount(inst.ravel())[1:].min() >= 5  # even nuclei cut by the border
        # One 8-connected component per instance, and no two instances touch (not even diagonally).
        _, blobs = ndimage.label(inst > 0, structure=np.ones((3, 3)))
        assert blobs == n
        for k, box in enumerate(ndimage.find_objects(inst), start=1):
            _, parts = ndimage.label(inst[box] == k, structure=np.ones((3, 3)))
            assert parts == 1


def test_tissue_maps_are_varied(batch: list[Sample]) -> None:
    per_patch = [set(np.unique(s.tissue).tolist()) for s in batch]
    assert set().union(*per_patch) == {0, 1, 2, 3, 4}
    assert all(ids <= {0, 1, 2, 3, 4} for ids in per_patch)
    heterogeneous = sum(len(ids - {0}) >= 2 for ids in per_patch)
    assert 2 <= heterogeneous < len(batch)  # some mixed patches, and some of a single class


def test_hematoxylin_is_higher_inside_nuclei(batch: list[Sample]) -> None:
    inside, outside = [], []
    for s in batch:
        h = rgb2hed(s.image)[..., 0]
        mask = s.nuclei.instances > 0
        if mask.any():
            inside.append(h[mask].mean())
            outside.append(h[~mask & (s.tissue > 0)].mean())
    assert len(inside) >= 10
    assert np.mean(inside) > 2 * np.mean(outside)
    assert sum(i > o for i, o in zip(inside, outside, strict=False)) == len(inside)


def test_background_holes_are_near_white(batch: list[Sample]) -> None:
    holes = [s.image[(s.tissue == 0)] for s in batch if (s.tissue == 0).sum() > 50]
    assert holes, "expected some patches with lumen/fat holes"
    assert np.median(np.concatenate(holes), axis=0).min() > 220


def test_stroma_is_pink_and_nuclei_are_purple(batch: list[Sample]) -> None:
    stroma = np.concatenate([s.image[(s.tissue == 1) & (s.nuclei.instances == 0)] for s in batch]).astype(float)
    nuclei = np.concatenate([s.image[s.nuclei.instances > 0] for s in batch]).astype(float)
    r, g, b = np.median(stroma, axis=0)
    assert r > g + 40 and b > g + 40  # eosin absorbs green
    assert nuclei.mean() < stroma.mean() - 50  # nuclei are much darker
    assert np.median(nuclei[:, 2]) > np.median(nuclei[:, 0])  # and bluish


def test_nuclei_density_scales_counts_on_the_same_tissue() -> None:
    sparse = [simulate_patch(i, 128, 0.5, 0.5) for i in range(4)]
    dense = [simulate_patch(i, 128, 0.5, 2.0) for i in range(4)]
    none = simulate_patch(0, 128, 0.5, 0.0)
    assert all(np.array_equal(a.tissue, b.tissue) for a, b in zip(sparse, dense, strict=False))
    assert sum(len(s.nuclei) for s in dense) > 1.5 * sum(len(s.nuclei) for s in sparse)
    assert len(none.nuclei) == 0 and none.nuclei.instances.max() == 0


def test_mpp_scales_nuclei() -> None:
    fine = [simulate_patch(i, 128, 0.25) for i in range(4)]
    coarse = [simulate_patch(i, 128, 1.0) for i in range(4)]

    def median_area(samples: list[Sample]) -> float:
        return float(np.median(np.concatenate([np.bincount(s.nuclei.instances.ravel())[1:] for s in samples])))

    assert median_area(fine) > 4 * median_area(coarse)
    assert all(s.provenance.mpp == 0.25 for s in fine)


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 31}, {"size": 64.0}, {"n": -1}, {"seed": -1}, {"mpp": 0}, {"mpp": float("nan")},
     {"nuclei_density": -0.1}, {"nuclei_density": float("inf")}, {"n": True}],
)
def test_bad_arguments_raise_value_error(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="simulator: " + next(iter(kwargs))):
        SimulatorSource(**kwargs)


def test_simulate_patch_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size must be >= 32"):
        simulate_patch(0, 16)
    with pytest.raises(ValueError, match="mpp"):
        simulate_patch(0, 64, -0.5)
    with pytest.raises(ValueError, match="rng_or_seed"):
        simulate_patch("seed", 64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        SimulatorSource(n=1).sample(-1)


def test_empty_source_yields_nothing() -> None:
    assert list(SimulatorSource(n=0)) == []
