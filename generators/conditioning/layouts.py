"""`LayoutSampler`: new classed nuclei-centroid layouts made from real ones, keeping the real class densities.

With it the factory can condition the centroid-guided generators (Dual-LoRA, CoSyn-style, GANs) on nuclei layouts
that no slide had. Draw j of a run seeded s uses only numpy's SeedSequence([s, j, LAYOUT_STREAM]), so it never
depends on which other draws were made, or in which order.

One draw, with s_c the density scale of class c (1 keeps the real density):
1. resample: pick real layout i uniformly; the new patch has its size and mpp.
2. thin: keep each nucleus of class c with probability min(1, s_c).
3. jitter: in random order, move each kept nucleus by N(0, sigma^2) per axis (sigma = `jitter_um` / mpp pixels).
   The first of `tries` candidates that lies inside the patch and at least `min_distance_um` from every nucleus
   placed so far is taken. If none qualifies, the original position is taken if it qualifies; otherwise the
   nucleus goes to step 4. A candidate outside the patch is redrawn, not clipped: clipping would pile nuclei on
   the border line.
4. add: class c gets back the nuclei that step 3 could not place, plus floor(e) + Bernoulli(frac(e)) new ones,
   where e = (s_c - 1) n_ic when s_c > 1 (n_ic is layout i's count of class c). Each goes, in random order, to the
   first of `tries` uniform candidates in the patch that is at least `min_distance_um` from every nucleus there.
   This is dart throwing, the Poisson-disc rule; `tries` = 30 is Bridson's k.
So E[n_c | i] = s_c n_ic. Picks are uniform, so over draws E[n_c] / E[area] = s_c * lambda_c, where
lambda_c = sum_i n_ic / sum_i area_i is the real pooled density (`densities`, nuclei per mm^2). With equal patch
sizes this is each patch's expected density. The only shortfall comes from a nucleus that finds no room in step
4 (the patch is full at this minimum distance). Each draw counts those as `unplaced`.

Each patch's count is scaled rather than set to lambda_c * area, so the variation between patches stays: a
stroma patch stays sparse and a lymphoid aggregate stays dense. Setting every count to lambda_c * area would
make all patches alike, which real tissue is not.

Defaults, in microns, so they mean the same tissue at any magnification:
- `jitter_um` 2.5 is about one nucleus radius (H&E nuclei are ~5-10 um across). Each nucleus moves within about
  its own size, so every centroid moves while the arrangement (glands, rows of lymphocytes) stays.
- `min_distance_um` 4: two centroids closer than 4 um would lie inside one nucleus. Touching lymphocytes,
  radius ~3 um, are ~6 um apart, so real neighbors are allowed and nuclei never overlap. In the simulator,
  99.8% of nearest-neighbor distances are >= 4 um.

The drawn nuclei are centroids only (`instances` None) and validate as a Sample's nuclei. Generators that need
instance masks (CoSyn) draw their own instances around the centroids.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from numbers import Real
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.generators.conditioning.batch import NucleiLayout
from histosynth.schema import Nuclei, Sample

JITTER_UM = 2.5
MIN_DISTANCE_UM = 4.0
TRIES = 30
LAYOUT_STREAM = 2  # the third SeedSequence key of layout draws (the diffusion generator's crops use 1)


@dataclass(frozen=True)
class Layout:
    """One patch's classed nuclei with the patch's size in pixels and its microns per pixel."""

    nuclei: Nuclei | NucleiLayout
    height: int
    width: int
    mpp: float

    @property
    def area_mm2(self) -> float:
        return self.height * self.width * self.mpp**2 * 1e-6


@dataclass(frozen=True)
class DrawnLayout(Layout):
    """A drawn layout: `nuclei` is a centroid-only `Nuclei`, `source` is the index of the real layout it was made
    from, and `unplaced` counts the nuclei that found no room in the patch."""

    source: int = -1
    unplaced: int = 0


class LayoutSampler:
    """Fitted on real layouts (all of one nuclei schema); `draw(seed, j)` makes new ones (see the module doc)."""

    def __init__(self, layouts: Sequence[Layout], schema: str | None = None, *, jitter_um: float = JITTER_UM,
                 min_distance_um: float = MIN_DISTANCE_UM, density_scale: float | Mapping[int, float] = 1.0,
                 tries: int = TRIES) -> None:
        """`schema` names the nuclei schema. It may be left out when every layout is a `Nuclei`, which carries
        its own. `density_scale` scales the target density: a number scales every class, a {class id: scale}
        mapping scales the classes it names."""
        if len(layouts) == 0:
            raise InputError("layout sampler: no real layouts to fit on")
        for label, value, zero_ok in (("jitter_um", jitter_um, True), ("min_distance_um", min_distance_um, True)):
            _check_number(label, value, zero_ok)
        if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
            raise InputError(f"layout sampler: tries must be a positive integer, not {tries!r}")
        self.schema = _common_schema(layouts, schema)
        self.classes = get_schema(self.schema).foreground_ids
        self.layouts = [_checked(layout, self.schema, i) for i, layout in enumerate(layouts)]
        self.jitter_um = float(jitter_um)
        self.min_distance_um = float(min_distance_um)
        self.tries = tries
        self.scale = np.zeros(256, np.float64)
        self.scale[self.classes] = _scales(density_scale, self.classes, self.schema)

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], mpp: float | None = None, **options: Any) -> LayoutSampler:
        """Fit on Samples' nuclei. Each sample's mpp comes from its provenance, or from `mpp` for all samples when
        given."""
        layouts = []
        for sample in samples:
            if sample.nuclei is None:
                raise InputError(f"layout sampler: {sample.where} has no nuclei labels to fit on")
            scale = sample.provenance.mpp if mpp is None else mpp
            if scale is None:
                raise InputError(f"layout sampler: {sample.where} has no mpp in its provenance; give mpp")
            layouts.append(Layout(sample.nuclei, sample.height, sample.width, scale))
        return cls(layouts, **options)

    def densities(self) -> dict[int, float]:
        """The real pooled density per nucleus class, in nuclei per mm^2: all nuclei of the class divided by the
        area of all patches."""
        counts = np.zeros(256, np.int64)
        for layout in self.layouts:
            counts += np.bincount(layout.nuclei.class_ids, minlength=256)
        area = sum(layout.area_mm2 for layout in self.layouts)
        return {c: float(counts[c] / area) for c in self.classes}

    def target_densities(self) -> dict[int, float]:
        """What draws have in expectation: the real densities times the density scale."""
        return {c: density * float(self.scale[c]) for c, density in self.densities().items()}

    def draw(self, seed: int, index: int) -> DrawnLayout:
        """Layout `index` of a run seeded `seed`, a function of (seed, index) only."""
        try:
            keys = [operator.index(seed), operator.index(index)]
        except TypeError:
            keys = [-1]
        if min(keys) < 0:
            raise InputError(f"layout sampler: seed and index must be integers >= 0, got {seed!r}, {index!r}")
        rng = np.random.default_rng(np.random.SeedSequence([*keys, LAYOUT_STREAM]))
        source = int(rng.integers(len(self.layouts)))
        real = self.layouts[source]
        nuclei = real.nuclei
        step = 1.0 / real.mpp
        patch = _Patch(real.width, real.height, (self.min_distance_um * step) ** 2, len(nuclei) * 2 + 8)

        # 2. thin, 3. jitter (see the module doc)
        scale = self.scale[nuclei.class_ids]
        kept = np.flatnonzero(rng.random(len(nuclei)) < np.minimum(scale, 1.0))
        missing: list[int] = []
        for k in rng.permutation(kept):
            origin = nuclei.centroids[k].astype(np.float64)
            candidates = origin + rng.normal(0.0, self.jitter_um * step, (self.tries, 2))
            if not patch.place(np.vstack([candidates, origin]), nuclei.class_ids[k]):
                missing.append(int(nuclei.class_ids[k]))

        # 4. add: the nuclei jitter could not place, and the extra ones of scales above 1
        counts = np.bincount(nuclei.class_ids, minlength=256)
        extra = np.maximum(self.scale - 1.0, 0.0) * counts
        extra = np.floor(extra) + (rng.random(256) < extra - np.floor(extra))
        adds = np.concatenate([missing, np.repeat(np.arange(256), extra.astype(np.int64))]).astype(np.uint8)
        unplaced = 0
        for class_id in rng.permutation(adds):
            candidates = rng.random((self.tries, 2)) * [real.width - 1, real.height - 1]
            unplaced += not patch.place(candidates, class_id)

        drawn = Nuclei(self.schema, *patch.arrays())
        drawn.validate(f"layout {index} of seed {seed}", real.height, real.width)
        return DrawnLayout(drawn, real.height, real.width, real.mpp, source=source, unplaced=unplaced)

    def draws(self, seed: int, count: int, start: int = 0) -> Iterator[DrawnLayout]:
        """Layouts start .. start + count - 1 of a run seeded `seed`."""
        for index in range(start, start + count):
            yield self.draw(seed, index)


class _Patch:
    """Nuclei placed so far in one W x H patch, each at least sqrt(min_d2) pixels from every other one."""

    def __init__(self, width: int, height: int, min_d2: float, capacity: int) -> None:
        self.high = np.array([width - 1, height - 1], np.float64)
        self.min_d2 = min_d2
        self.xy = np.empty((capacity, 2), np.float64)
        self.ids: list[int] = []

    def place(self, candidates: np.ndarray, class_id: int) -> bool:
        """Place a nucleus at the first qualifying candidate; False if none qualifies."""
        # Rounded to float32 first, so the stored centroids themselves keep the distance and stay in the patch.
        xy = candidates.astype(np.float32).astype(np.float64)
        ok = ((xy >= 0) & (xy <= self.high)).all(axis=1)
        n = len(self.ids)
        if n:
            d2 = ((xy[:, None, :] - self.xy[None, :n, :]) ** 2).sum(axis=2)
            ok &= (d2 >= self.min_d2).all(axis=1)
        first = np.flatnonzero(ok)
        if first.size == 0:
            return False
        if n == len(self.xy):
            self.xy = np.concatenate([self.xy, np.empty_like(self.xy)])
        self.xy[n] = xy[first[0]]
        self.ids.append(int(class_id))
        return True

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.ids)
        return self.xy[:n].astype(np.float32).reshape(-1, 2), np.array(self.ids, np.uint8)


def _check_number(label: str, value: object, zero_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise InputError(f"layout sampler: {label} must be a finite number {bound}, not {value!r}")
    return float(value)


def _common_schema(layouts: Sequence[Layout], schema: str | None) -> str:
    """The one nuclei schema of all layouts: `schema`, or the one their `Nuclei` carry."""
    named = {layout.nuclei.schema for layout in layouts if isinstance(layout.nuclei, Nuclei)}
    if schema is not None:
        named.add(schema)
    if len(named) > 1:
        raise InputError(f"layout sampler: layouts of several nuclei schemas {sorted(named)}; fit one at a time")
    if not named:
        raise InputError("layout sampler: NucleiLayouts carry no schema; give the nuclei schema (schema=...)")
    return named.pop()


def _checked(layout: Layout, schema: str, i: int) -> Layout:
    """`layout` with centroid-only `Nuclei`, after the checks that a Sample's nuclei pass."""
    if not isinstance(layout, Layout):
        raise InputError(f"layout sampler: real layout {i} is a {type(layout).__name__}, not a Layout")
    _check_number(f"mpp of real layout {i}", layout.mpp, zero_ok=False)
    for side in (layout.height, layout.width):
        if isinstance(side, bool) or not isinstance(side, (int, np.integer)) or side < 1:
            raise InputError(f"layout sampler: real layout {i} has patch size {layout.height} x {layout.width}")
    nuclei = Nuclei(schema, layout.nuclei.centroids, layout.nuclei.class_ids)
    nuclei.validate(f"real layout {i}", int(layout.height), int(layout.width))
    return Layout(nuclei, int(layout.height), int(layout.width), float(layout.mpp))


def _scales(density_scale: float | Mapping[int, float], classes: list[int], schema: str) -> np.ndarray:
    """(len(classes),) float64: each class's density scale."""
    if not isinstance(density_scale, Mapping):
        return np.full(len(classes), _check_number("density_scale", density_scale, zero_ok=True))
    unknown = sorted(set(density_scale) - set(classes))
    if unknown:
        raise InputError(f"layout sampler: density_scale names {unknown}, not nucleus classes of schema "
                         f"{schema!r} (valid: {classes})")
    return np.array([_check_number(f"density_scale of class {c}", density_scale.get(c, 1.0), zero_ok=True)
                     for c in classes])
