"""KID vs torch-fidelity; PRDC vs the `prdc` reference package and torch-fidelity's PRC; chunk-size independence."""

from __future__ import annotations

import numpy as np
import prdc
import pytest
import scipy.spatial.distance
import torch
from numerics import EPS32, EPS64, kid_error, knn_ball_margin, sq_distance_error
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.kid import kid
from histosynth.benchmark.prdc import compute_prdc, knn_radii


@pytest.fixture(scope="module")
def real_fake() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.standard_normal((400, 24))
    fake = 1.15 * rng.standard_normal((330, 24)) + 0.2
    return real, fake


def _tf_kid(a: np.ndarray, b: np.ndarray, **kwargs) -> dict:
    return kid_features_to_metric(torch.from_numpy(a), torch.from_numpy(b), verbose=False, **kwargs)


def test_kid_matches_torch_fidelity_with_full_subsets(real_fake):
    real, fake = real_fake
    n = len(fake)
    ours = kid(real, fake, n_subsets=3, subset_size=n)
    theirs = _tf_kid(real, fake, kid_subsets=3, kid_subset_size=n)
    gap = 2 * kid_error(real, fake)  # same subsets, two float64 implementations, each within kid_error
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=0, abs=gap)
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=0, abs=gap)
    assert ours.mean > 0


def test_kid_draws_the_same_subsets_as_torch_fidelity(real_fake):
    real, fake = real_fake
    ours = kid(real, fake, n_subsets=20, subset_size=50, seed=7)
    theirs = _tf_kid(real, fake, kid_subsets=20, kid_subset_size=50, rng_seed=7)
    gap = 2 * kid_error(real, fake)  # same subsets: mean and std both within the per-subset bound, per side
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=0, abs=gap)
    assert ours.std == pytest.approx(theirs["kernel_inception_distance_std"], rel=0, abs=gap)
    assert ours == kid(real, fake, n_subsets=20, subset_size=50, seed=7)
    assert ours != kid(real, fake, n_subsets=20, subset_size=50, seed=8)


def test_kid_near_zero_for_same_distribution_and_clipped_subset():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((200, 16))
    same = kid(a, b, n_subsets=10)  # subset_size 1000 is clipped to 200
    shifted = kid(a, b + 0.5, n_subsets=10)
    # Statistical, not rounding: MMD²_u is unbiased, and the subsets' spread bounds their mean's (seeded data)
    assert abs(same.mean) < 3 * same.std
    assert shifted.mean > 10 * same.std


def test_kid_errors(real_fake):
    real, fake = real_fake
    with pytest.raises(MetricInputError, match="dimensions differ"):
        kid(real, fake[:, :5])
    with pytest.raises(MetricInputError, match="at least 2"):
        kid(real, fake[:1])
    with pytest.raises(MetricInputError, match="index 2"):
        bad = fake.copy()
        bad[2, 0] = np.inf
        kid(real, bad)


def test_prdc_matches_reference_package(real_fake, capsys):
    real, fake = real_fake
    ours = compute_prdc(real, fake, nearest_k=5)
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    capsys.readouterr()  # the package prints the set sizes
    # Exact: no distance is within its rounding error of a radius, so every comparison comes out the same.
    assert knn_ball_margin(real, fake, 5) > 4
    assert ours.precision == ref["precision"]
    assert ours.recall == ref["recall"]
    assert ours.coverage == ref["coverage"]
    assert ours.density == pytest.approx(ref["density"], rel=4 * EPS64)  # same count, divided in another order
    assert 0 < ours.precision < 1 and 0 < ours.recall < 1


def test_precision_recall_match_torch_fidelity(real_fake):
    real, fake = real_fake
    ours = compute_prdc(real, fake, nearest_k=5)
    # torch-fidelity's convention: features_1 = generated, features_2 = real.
    theirs = prc_features_to_metric(
        torch.from_numpy(fake), torch.from_numpy(real), prc_neighborhood=5, prc_batch_size=128, verbose=False
    )
    # Same counts (no comparison within rounding of a tie, so `<=` vs `<` agree too); theirs is a float32 mean of
    # 0/1 values: an exact sum, then one division, within EPS32 of a value <= 1.
    assert knn_ball_margin(real, fake, 5) > 4
    assert ours.precision == pytest.approx(theirs["precision"], rel=0, abs=EPS32)
    assert ours.recall == pytest.approx(theirs["recall"], abs=EPS32)


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_prdc_independent_of_chunk_size(real_fake, chunk):
    real, fake = real_fake
    assert knn_ball_margin(real[:120], fake[:90], 5) > 4  # exact: blocking changes no comparison (see numerics)
    assert compute_prdc(real[:120], fake[:90], chunk_size=chunk) == compute_prdc(real[:120], fake[:90])


def test_knn_radii_match_brute_force(real_fake):
    real, _ = real_fake
    dists = scipy.spatial.distance.cdist(real, real)
    expected = np.sort(dists, axis=1)[:, 5]
    # |√a - √b| <= |a - b| / √b for squared distances within sq_distance_error of each other (two routes)
    tol = 2 * sq_distance_error(real) / expected.min()
    for chunk in (64, 4096):
        np.testing.assert_allclose(knn_radii(real, 5, chunk_size=chunk), expected, rtol=0, atol=tol)


def test_prdc_extremes_and_errors(real_fake):
    real, fake = real_fake
    same = compute_prdc(real, real.copy())
    assert same.precision == 1.0 and same.recall == 1.0 and same.coverage == 1.0
    far = compute_prdc(real, fake + 100.0)
    assert far == (0.0, 0.0, 0.0, 0.0)
    with pytest.raises(MetricInputError, match="at least 6"):
        compute_prdc(real, fake[:5])
    with pytest.raises(MetricInputError, match="dimensions differ"):
        compute_prdc(real, fake[:, :3])


def test_kid_with_subsets_equal_to_both_sets_is_computed_once(real_fake):
    real, fake = real_fake
    n = len(fake)
    ours = kid(real[:n], fake, n_subsets=100, subset_size=1000)
    theirs = _tf_kid(real[:n], fake, kid_subsets=3, kid_subset_size=n)
    assert (ours.subset_size, ours.n_subsets, ours.std) == (n, 1, 0.0)
    # Same subsets, two float64 implementations, each within kid_error (kernel and n² sums' rounding, numerics)
    assert ours.mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=0, abs=2 * kid_error(real[:n], fake))
    clipped = kid(real, fake, n_subsets=5, subset_size=1000)
    assert (clipped.subset_size, clipped.n_subsets) == (n, 5)


def test_prdc_is_undefined_when_every_knn_ball_is_empty(real_fake):
    from histosynth.benchmark.prdc import DegenerateNeighborhoods

    real, fake = real_fake
    with pytest.raises(DegenerateNeighborhoods, match="every real sample has at least 5 exact duplicates"):
        compute_prdc(np.zeros((20, 8)), np.zeros((20, 8)))
    with pytest.raises(DegenerateNeighborhoods, match="every fake sample"):
        compute_prdc(real, np.tile(fake[:1], (30, 1)))
    assert issubclass(DegenerateNeighborhoods, MetricInputError)
    half = np.concatenate([real[:200], np.tile(real[:1], (200, 1))])  # half duplicates: defined, still computed
    assert 0 < compute_prdc(half, fake).precision <= 1
