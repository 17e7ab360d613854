"""LayoutSampler: determinism, jitter kept in the patch at the minimum distance, class densities (and their scaling)
matched within a derived confidence interval, draws unlike any real layout, simulator and empty layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from histosynth.errors import InputError
from histosynth.generators.conditioning.batch import NucleiLayout
from histosynth.generators.conditioning.layouts import MIN_DISTANCE_UM, Layout, LayoutSampler
from histosynth.schema import Nuclei, Provenance, Sample, SampleValidationError
from histosynth.sources import build_source

DRAWS = 300
Z = 4.0  # two-sided normal quantile for p ~ 6e-5 per comparison, so ~20 comparisons stay below ~1e-3 family-wise


@pytest.fixture(scope="module")
def simulated() -> list[Sample]:
    return list(build_source("simulator", n=16, size=256, seed=0))


@pytest.fixture(scope="module")
def sampler(simulated: list[Sample]) -> LayoutSampler:
    return LayoutSampler.from_samples(simulated)


def as_sample(drawn: Layout) -> Sample:
    """The drawn nuclei on a blank patch of their size: constructing the Sample validates them."""
    image = np.zeros((drawn.height, drawn.width, 3), np.uint8)
    return Sample(image=image, provenance=Provenance(source="layouts", mpp=drawn.mpp), nuclei=drawn.nuclei)


def min_squared_distance(xy: np.ndarray) -> float:
    """Smallest squared distance between two rows of `xy` (inf with fewer than two)."""
    if len(xy) < 2:
        return math.inf
    pts = xy.astype(np.float64)
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(axis=2)
    return float(d2[~np.eye(len(pts), dtype=bool)].min())


def test_draw_is_a_function_of_seed_and_index(sampler: LayoutSampler) -> None:
    one = sampler.draw(3, 7)
    again = sampler.draw(3, 7)
    among = list(sampler.draws(3, 10))[7]
    for other in (again, among):
        assert other.nuclei.equals(one.nuclei) and other.source == one.source
    for other in (sampler.draw(4, 7), sampler.draw(3, 8)):
        assert not other.nuclei.equals(one.nuclei)


def test_drawn_nuclei_stay_in_the_patch_and_apart(simulated: list[Sample]) -> None:
    # two scales, so the minimum distance in pixels (4 um / mpp) differs between layouts
    finer = list(build_source("simulator", n=4, size=128, seed=1, mpp=0.25))
    sampler = LayoutSampler.from_samples(simulated[:8] + finer)
    for drawn in sampler.draws(0, 100):
        xy = drawn.nuclei.centroids
        assert drawn.nuclei.instances is None and drawn.unplaced == 0
        assert ((xy >= 0) & (xy <= [drawn.width - 1, drawn.height - 1])).all()
        # 1e-12: float64 rounding of the threshold itself
        assert min_squared_distance(xy) >= (MIN_DISTANCE_UM / drawn.mpp) ** 2 * (1 - 1e-12)
        as_sample(drawn)


def test_crowded_real_nuclei_are_spread_to_the_minimum_distance() -> None:
    crowd = Nuclei.from_list("pannuke", [(50 + 0.1 * k, 50.0, 1 + k % 2) for k in range(10)])
    sampler = LayoutSampler([Layout(crowd, 100, 100, 0.5)])
    for drawn in sampler.draws(5, 20):
        assert drawn.unplaced == 0
        assert np.bincount(drawn.nuclei.class_ids, minlength=3)[1:].tolist() == [5, 5]
        assert min_squared_distance(drawn.nuclei.centroids) >= (MIN_DISTANCE_UM / 0.5) ** 2


@pytest.mark.parametrize("scale", [1.0, 0.5, 1.5, {2: 0.5, 4: 2.0}], ids=["real", "half", "more", "per-class"])
def test_class_densities_match_the_scaled_real_ones(sampler: LayoutSampler, scale: float | dict[int, float]) -> None:
    scaled = LayoutSampler(sampler.layouts, density_scale=scale)
    drawn = list(scaled.draws(11, DRAWS))
    assert all(d.unplaced == 0 for d in drawn)  # else counts could fall short of their expectation
    area = sampler.layouts[0].area_mm2  # all simulated patches are 256 px at 0.5 mpp
    classes = sampler.classes
    real = np.array([np.bincount(lay.nuclei.class_ids, minlength=256)[classes] for lay in sampler.layouts], float)
    got = np.array([np.bincount(d.nuclei.class_ids, minlength=256)[classes] for d in drawn], float)
    s = np.array([scale.get(c, 1.0) if isinstance(scale, dict) else scale for c in classes])
    # Per draw: pick i uniformly; class c keeps Binomial(n_ic, min(1, s_c)) nuclei and gains
    # floor(e) + Bernoulli(frac(e)) with e = (s_c - 1) n_ic when s_c > 1. So E[n_c | i] = s_c n_ic and
    # Var(n_c) = Var_i(s_c n_ic) + E_i[n_ic p (1 - p) + f (1 - f)], classes independent given i.
    # The mean of DRAWS independent draws is within Z standard errors (CLT).
    p = np.minimum(s, 1.0)
    f = np.maximum(s - 1.0, 0.0) * real % 1.0
    within = real * p * (1 - p) + f * (1 - f)
    expected = s * real.mean(axis=0)
    var = (s * real).var(axis=0) + within.mean(axis=0)
    total_var = (real @ s).var() + within.sum(axis=1).mean()
    target = scaled.target_densities()
    assert np.allclose([target[c] for c in classes], expected / area)
    assert np.all(np.abs(got.mean(axis=0) / area - expected / area) <= Z * np.sqrt(var / DRAWS) / area)
    assert abs(got.sum(axis=1).mean() - expected.sum()) <= Z * math.sqrt(total_var / DRAWS)
    # Sharper, given each draw's source: sum_j (n_jc - s_c n_{i_j c}) has mean 0 and variance sum_j within_{i_j c}
    # (0 at s_c = 1, where the counts must be exact).
    sources = [d.source for d in drawn]
    assert np.all(np.abs((got - s * real[sources]).sum(axis=0)) <= Z * np.sqrt(within[sources].sum(axis=0)))


def test_thinning_to_half_density_halves_the_counts(sampler: LayoutSampler) -> None:
    real = np.array([len(lay.nuclei) for lay in sampler.layouts], float)
    counts = np.array([len(d.nuclei) for d in LayoutSampler(sampler.layouts, density_scale=0.5).draws(2, DRAWS)])
    # n | i ~ Binomial(n_i, 1/2): Var(n) = Var_i(n_i / 2) + E_i[n_i / 4]
    se = math.sqrt(((real / 2).var() + (real / 4).mean()) / DRAWS)
    assert abs(counts.mean() - real.mean() / 2) <= Z * se
    assert sampler.target_densities() == {c: 2 * v for c, v in
                                          LayoutSampler(sampler.layouts, density_scale=0.5).target_densities().items()}


def test_drawn_layouts_are_no_copies(sampler: LayoutSampler) -> None:
    real_sets = [sorted(map(tuple, lay.nuclei.centroids.tolist())) for lay in sampler.layouts]
    for drawn in sampler.draws(1, 60):
        xy = drawn.nuclei.centroids.astype(np.float64)
        assert sorted(map(tuple, drawn.nuclei.centroids.tolist())) not in real_sets
        source = sampler.layouts[drawn.source].nuclei.centroids.astype(np.float64)
        # a centroid can only stay put when all its jitter candidates failed: that must be rare
        stayed = (((xy[:, None, :] - source[None, :, :]) ** 2).sum(axis=2) < 1e-6).any(axis=1)
        assert stayed.mean() < 0.5


def test_densities_pool_counts_over_areas() -> None:
    a = NucleiLayout(np.array([[1, 1], [2, 2], [30, 3]], np.float32), np.array([1, 1, 1], np.uint8))
    b = NucleiLayout(np.array([[10, 10], [40, 20], [190, 49]], np.float32), np.array([1, 2, 1], np.uint8))
    sampler = LayoutSampler([Layout(a, 100, 100, 0.5), Layout(b, 50, 200, 1.0)], schema="pannuke")
    # areas 0.0025 + 0.01 mm^2; class 1: 5 nuclei, class 2: 1
    assert sampler.densities() == pytest.approx({1: 400.0, 2: 80.0, 3: 0.0, 4: 0.0, 5: 0.0})
    drawn = sampler.draw(0, 0)
    assert (drawn.height, drawn.width, drawn.mpp) == ((100, 100, 0.5), (50, 200, 1.0))[drawn.source]
    assert drawn.nuclei.schema == "pannuke"


def test_empty_layouts_draw_empty_nuclei() -> None:
    empty = list(build_source("simulator", n=3, size=64, seed=2, nuclei_density=0.0))
    assert all(len(s.nuclei) == 0 for s in empty)
    sampler = LayoutSampler.from_samples(empty, density_scale=2.0)
    assert set(sampler.densities().values()) == {0.0}
    for drawn in sampler.draws(0, 5):
        assert len(drawn.nuclei) == 0 and drawn.nuclei.centroids.shape == (0, 2)
        as_sample(drawn)


def test_bad_input_is_refused_with_a_clear_error(simulated: list[Sample]) -> None:
    layout = NucleiLayout(np.array([[5, 5]], np.float32), np.array([1], np.uint8))
    with pytest.raises(InputError, match="no real layouts"):
        LayoutSampler([])
    with pytest.raises(InputError, match="give the nuclei schema"):
        LayoutSampler([Layout(layout, 10, 10, 0.5)])
    with pytest.raises(InputError, match="several nuclei schemas"):
        LayoutSampler([Layout(simulated[0].nuclei, 256, 256, 0.5)], schema="lizard")
    with pytest.raises(SampleValidationError, match="real layout 0: nuclei.centroids: nucleus 0 .* outside"):
        LayoutSampler([Layout(layout, 4, 4, 0.5)], schema="pannuke")
    with pytest.raises(InputError, match="mpp of real layout 0 must be a finite number > 0"):
        LayoutSampler([Layout(layout, 10, 10, 0.0)], schema="pannuke")
    with pytest.raises(InputError, match=r"density_scale names \[9\]"):
        LayoutSampler([Layout(layout, 10, 10, 0.5)], schema="pannuke", density_scale={9: 2.0})
    with pytest.raises(InputError, match="has no mpp"):
        LayoutSampler.from_samples([simulated[0].with_provenance(mpp=None)])
    with pytest.raises(InputError, match="seed and index"):
        LayoutSampler([Layout(layout, 10, 10, 0.5)], schema="pannuke").draw(-1, 0)
