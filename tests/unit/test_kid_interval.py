"""The KID bootstrap interval: its statistic is KID's, and it separates equal from shifted distributions."""

import numpy as np
import pytest

from histosynth.benchmark.kid import kid, poly_kernel
from histosynth.benchmark.kid_interval import kid_bootstrap_ci


def test_whole_set_statistic_equals_kid_with_one_subset_of_everything():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 16)), rng.normal(0.3, 1.0, size=(40, 16))
    point, low, high = kid_bootstrap_ci(x, y, n_boot=50)
    reference = kid(x, y, subset_size=40).mean
    # Same sums in another order: numpy's pairwise summation of n² kernel values errs by O(log n² eps max|k|)
    # per mean (Higham 2002, sec. 4.2); 100 eps max|k| bounds it with room.
    kmax = max(np.abs(poly_kernel(a, b, 1 / 16)).max() for a, b in ((x, x), (y, y), (x, y)))
    assert point == pytest.approx(reference, abs=100 * np.finfo(float).eps * kmax)
    assert low < high


def test_interval_covers_zero_for_one_distribution_and_excludes_it_for_a_shift():
    rng = np.random.default_rng(1)
    same = kid_bootstrap_ci(rng.normal(size=(60, 8)), rng.normal(size=(50, 8)), seed=2)
    shifted = kid_bootstrap_ci(rng.normal(size=(60, 8)), rng.normal(1.0, 1.0, size=(50, 8)), seed=2)
    assert same[1] < 0.0 < same[2]
    assert 0.0 < shifted[1] < shifted[0] < shifted[2]
