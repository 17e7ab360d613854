"""Heterogeneous patch sampling and adaptive per-class crops (HTD).

Composition of a tissue map (`composition`): the fraction of each class among its *tissue* pixels, i.e. pixels
whose id is neither background (0) nor ignore (255), plus the tissue fraction of the whole patch.

Annotated data, HTD's 20-80% rule (`is_heterogeneous`): a patch is kept when
- at least `min_tissue` (default 0.5) of its pixels are tissue,
- it has at least two classes,
- its largest class covers at most `max_frac` (0.8) of the tissue, and
- its second-largest class covers at least `min_frac` (0.2).
With two classes the last two conditions are the same; with more, the second one stops a 70/15/15 patch from
counting as a two-tissue interface.

Pseudo-labeled data (`diversity_entropy`, `entropy_sample`): H(r) = -sum_i p_i log p_i (nats) over the tissue
fractions; patches are drawn without replacement with probability proportional to H^power (Efraimidis-Spirakis
keys, seeded), so tumor-stroma interfaces are preferred and homogeneous patches (H = 0) are never drawn.

Per-class visual crops (`class_crops`), HTD's d_i = d_base * (1 + alpha * complexity_i) clipped to [d_min, d_max]:
- complexity_i = 1 - 4 pi A / P^2 of the class region (one minus the isoperimetric quotient; A its area, P its
  perimeter, both in pixels): 0 for a disc, towards 1 for thin, ragged or fragmented regions. It is scale-free,
  so the same region gets the same complexity at any resolution;
- sizes are given at HTD's 256 px patch scale (d_base 100, d_min 50, d_max 200) and scaled by patch side / 256.
  The paper gives d in [50, 200] px but no d_base; with alpha 1 and complexity in [0, 1], d_base 100 makes the
  rule span [100, 200] px, reaching the paper's d_max for the most ragged regions (and the precursor code's
  crop search starts at 200 px). `CropSizing`'s defaults are the one definition; the generators' presets
  (CropConfig) derive theirs from it;
- the crop is a square of the largest size from d_i down to d_min whose pixels are at least `min_purity` of the
  class (1.0 by default: the paper states no threshold, the precursor code searches for all-ones windows) (all window sums at one size come from one integral image, so each size costs O(H W)); among equally
  pure windows the most interior one wins (largest distance to the region's edge at the window center), or a
  uniformly random one when an rng is given. A region too small for d_min gets its largest inscribed square
  (chessboard distance transform) instead, flagged by `size < d_min`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from histosynth.atomic import atomic_file
from histosynth.classes import BACKGROUND_ID, IGNORE_ID
from histosynth.errors import InputError

PAPER_PATCH = 256
"""Patch side at which HTD's crop sizes d in [50, 200] are given."""


@dataclass(frozen=True)
class Composition:
    """Class make-up of one tissue map: ids and fractions of tissue pixels, largest first."""

    class_ids: tuple[int, ...]
    fractions: tuple[float, ...]
    tissue_fraction: float

    @property
    def n_classes(self) -> int:
        return len(self.class_ids)

    @property
    def largest(self) -> float:
        return self.fractions[0] if self.fractions else 0.0

    @property
    def second(self) -> float:
        return self.fractions[1] if len(self.fractions) > 1 else 0.0

    @property
    def entropy(self) -> float:
        """Shannon entropy (nats) of the class fractions: HTD's tissue-diversity H(r)."""
        p = np.asarray(self.fractions, dtype=np.float64)
        p = p[p > 0]
        return float(-(p * np.log(p)).sum()) if p.size else 0.0


def composition(tissue_map: np.ndarray) -> Composition:
    """Fractions of each class among the tissue pixels (ids other than 0 and 255), sorted largest first."""
    counts = np.bincount(np.asarray(tissue_map, dtype=np.uint8).ravel(), minlength=256)
    counts[BACKGROUND_ID] = 0
    counts[IGNORE_ID] = 0
    tissue = int(counts.sum())
    ids = np.flatnonzero(counts)
    order = ids[np.lexsort((ids, -counts[ids]))]
    fractions = tuple(float(counts[i] / tissue) for i in order) if tissue else ()
    return Composition(tuple(int(i) for i in order), fractions, tissue / max(np.asarray(tissue_map).size, 1))


def is_heterogeneous(
    comp: Composition | np.ndarray, min_frac: float = 0.2, max_frac: float = 0.8, min_tissue: float = 0.5
) -> bool:
    """HTD's 20-80% rule (see the module docstring for the exact definition)."""
    if not 0.0 <= min_frac <= max_frac <= 1.0:
        raise InputError(f"need 0 <= min_frac <= max_frac <= 1, got {min_frac}, {max_frac}")
    c = comp if isinstance(comp, Composition) else composition(comp)
    return c.tissue_fraction >= min_tissue and c.n_classes >= 2 and c.largest <= max_frac and c.second >= min_frac


def diversity_entropy(tissue_map: np.ndarray) -> float:
    """H(r) of a tissue map (nats): 0 for one class, log(n) for n equal classes."""
    return composition(tissue_map).entropy


def entropy_sample(entropies: Sequence[float] | np.ndarray, n: int, seed: int = 0, power: float = 1.0) -> np.ndarray:
    """Indices (ascending) of up to `n` patches drawn without replacement with probability ~ H^power.

    Patches with H = 0 are never drawn, so fewer than `n` come back when fewer are heterogeneous.
    """
    h = np.asarray(entropies, dtype=np.float64)
    if (h < 0).any() or not np.isfinite(h).all():
        raise ValueError("entropy_sample: entropies must be finite and >= 0")
    weights = h**power
    candidates = np.flatnonzero(weights > 0)
    if n <= 0 or candidates.size == 0:
        return np.zeros(0, dtype=np.int64)
    u = np.random.default_rng(seed).random(h.size)[candidates]
    keys = np.log(u) / weights[candidates]  # Efraimidis-Spirakis: the n largest u^(1/w)
    top = candidates[np.argsort(-keys, kind="stable")[:n]]
    return np.sort(top)


# ---------------------------------------------------------------------------------------------- crops


@dataclass(frozen=True)
class CropSizing:
    """d_i = d_base * (1 + alpha * complexity_i), clipped to [d_min, d_max]; sizes at `reference` px patches.

    The defaults are HTD's crop sizes, defined only here (see the module docstring for d_base = 100 px).
    """

    d_base: float = 100.0
    alpha: float = 1.0
    d_min: float = 50.0
    d_max: float = 200.0
    reference: int = PAPER_PATCH
    min_purity: float = 1.0  # fraction of a crop's pixels that must be its class (precursor: all of them)

    def limits(self, patch_side: int) -> tuple[float, float, float]:
        """(d_base, d_min, d_max) scaled to a patch of side `patch_side`."""
        f = patch_side / self.reference
        return self.d_base * f, self.d_min * f, self.d_max * f

    def size_for(self, complexity: float, patch_side: int) -> int:
        """Target crop side for a region of this complexity (at least 1, at most the patch side)."""
        base, lo, hi = self.limits(patch_side)
        d = float(np.clip(base * (1.0 + self.alpha * complexity), lo, hi))
        return int(max(1, min(round(d), patch_side)))


def region_complexity(mask: np.ndarray) -> float:
    """1 - 4 pi A / P^2 of a binary region (0 for a disc, towards 1 for ragged or fragmented ones); 0 if empty."""
    from skimage.measure import perimeter

    area = float(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    p = float(perimeter(mask))
    if p <= 0:
        return 0.0
    return float(np.clip(1.0 - 4.0 * np.pi * area / (p * p), 0.0, 1.0))


def _window_sums(integral: np.ndarray, size: int) -> np.ndarray:
    """Sums of all size x size windows (indexed by top-left corner) from an integral image."""
    s = size
    return integral[s:, s:] - integral[:-s, s:] - integral[s:, :-s] + integral[:-s, :-s]


def square_crop(
    mask: np.ndarray, size: int, min_purity: float = 1.0, rng: np.random.Generator | None = None,
    interior: np.ndarray | None = None,
) -> tuple[int, int, float] | None:
    """(top, left, purity) of a size x size window at least `min_purity` inside `mask`, or None.

    Without `rng`, the purest window, ties broken by the largest `interior` value (default: the Euclidean
    distance transform of the mask) at its center; with `rng`, a uniformly random qualifying window.
    """
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    h, w = m.shape
    if size < 1 or size > min(h, w):
        return None
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)
    integral[1:, 1:] = m.cumsum(axis=0).cumsum(axis=1)
    purity = _window_sums(integral, size) / float(size * size)
    ok = purity >= min_purity - 1e-12
    if not ok.any():
        return None
    if rng is not None:
        choices = np.flatnonzero(ok)
        flat = int(choices[rng.integers(choices.size)])
    else:
        if interior is None:
            interior = ndimage.distance_transform_edt(m)
        best = purity == purity[ok].max()
        half = size // 2
        depth = interior[half : half + purity.shape[0], half : half + purity.shape[1]]
        flat = int(np.flatnonzero(best)[np.argmax(depth[best])])
    top, left = divmod(flat, purity.shape[1])
    return top, left, float(purity[top, left])


def largest_inscribed_square(mask: np.ndarray) -> tuple[int, int, int] | None:
    """(top, left, side) of the largest odd-sided square fully inside `mask` (None if the mask is empty)."""
    from scipy import ndimage

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    dist = ndimage.distance_transform_cdt(np.pad(m, 1), metric="chessboard")[1:-1, 1:-1]
    r = int(dist.max())
    cy, cx = np.unravel_index(int(dist.argmax()), dist.shape)
    return int(cy) - (r - 1), int(cx) - (r - 1), 2 * r - 1


@dataclass(frozen=True)
class ClassCrop:
    """A square crop of one class region: rows top..top+size, columns left..left+size."""

    class_id: int
    top: int
    left: int
    size: int
    purity: float
    complexity: float
    target: int  # d_i before fitting it into the region

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(top, left, bottom, right), half-open."""
        return self.top, self.left, self.top + self.size, self.left + self.size

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.size), slice(self.left, self.left + self.size)


def class_crops(
    tissue_map: np.ndarray, sizing: CropSizing = CropSizing(),
    rng: np.random.Generator | None = None, classes: Iterable[int] | None = None, shrink: float = 0.9,
) -> list[ClassCrop]:
    """One square crop per class present in the map (or in `classes`), sized by region complexity.

    Tries d_i, then sizes shrinking by `shrink` down to d_min, for a window of purity >= `sizing.min_purity`;
    falls back to the largest inscribed square. Classes 0 and 255 are
    never cropped.
    """
    purity_floor = sizing.min_purity
    from scipy import ndimage

    t = np.asarray(tissue_map)
    side = int(min(t.shape))
    present = [int(c) for c in np.unique(t) if c not in (BACKGROUND_ID, IGNORE_ID)]
    wanted = present if classes is None else [int(c) for c in classes if int(c) in present]
    _, d_min, _ = sizing.limits(side)
    out = []
    for class_id in wanted:
        mask = t == class_id
        complexity = region_complexity(mask)
        target = sizing.size_for(complexity, side)
        sizes = []
        s = float(target)
        while round(s) >= max(d_min, 1):
            if not sizes or round(s) != sizes[-1]:
                sizes.append(int(round(s)))
            s *= shrink
        if not sizes or sizes[-1] > max(int(np.ceil(d_min)), 1):
            sizes.append(max(int(np.ceil(d_min)), 1))
        interior = None if rng is not None else ndimage.distance_transform_edt(mask)  # random picks skip it
        found = None
        for size in sizes:
            hit = square_crop(mask, size, purity_floor, rng, interior)
            if hit is not None:
                found = (hit[0], hit[1], size, hit[2])
                break
        if found is None:
            square = largest_inscribed_square(mask)
            if square is None:
                continue
            found = (square[0], square[1], square[2], 1.0)
        out.append(ClassCrop(class_id, found[0], found[1], found[2], found[3], complexity, target))
    return out


# ------------------------------------------------------------------------------------- statistics


HIST_BINS = np.arange(11) / 10.0  # exact tenths: 0.6 falls in [0.6, 0.7)


@dataclass
class CompositionStats:
    """Per-patch composition summaries of a set of tissue maps, and how many satisfy the 20-80% rule."""

    min_frac: float = 0.2
    max_frac: float = 0.8
    min_tissue: float = 0.5
    largest: list[float] = field(default_factory=list)
    n_classes: list[int] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)
    heterogeneous: list[bool] = field(default_factory=list)

    def add(self, comp: Composition | np.ndarray) -> bool:
        """Record one patch; returns whether it satisfies the 20-80% rule."""
        c = comp if isinstance(comp, Composition) else composition(comp)
        ok = is_heterogeneous(c, self.min_frac, self.max_frac, self.min_tissue)
        self.largest.append(c.largest)
        self.n_classes.append(c.n_classes)
        self.entropy.append(c.entropy)
        self.heterogeneous.append(ok)
        return ok

    @property
    def n(self) -> int:
        return len(self.largest)

    @property
    def fraction_heterogeneous(self) -> float:
        return float(np.mean(self.heterogeneous)) if self.heterogeneous else 0.0

    def histogram(self) -> np.ndarray:
        """Patch counts per tenth of the largest-class fraction ([0, 0.1), ..., [0.9, 1.0])."""
        return np.histogram(np.asarray(self.largest, dtype=np.float64), bins=HIST_BINS)[0]

    def lines(self, label: str = "patches") -> list[str]:
        """Readable summary: the 20-80% fraction, the largest-class histogram, classes per patch, mean H."""
        lo, hi = round(100 * self.min_frac), round(100 * self.max_frac)
        n_het = int(np.sum(self.heterogeneous))
        out = [f"{label}: {self.n}; in {lo}-{hi}% (>= 2 classes, largest <= {hi}%, second >= {lo}%, "
               f">= {round(100 * self.min_tissue)}% tissue): {n_het} ({100 * self.fraction_heterogeneous:.1f}%)"]
        counts = self.histogram()
        out.append("  largest-class fraction: " + "  ".join(
            f"{HIST_BINS[i]:.1f}-{HIST_BINS[i + 1]:.1f}: {c}" for i, c in enumerate(counts)))
        classes = np.bincount(np.asarray(self.n_classes, dtype=np.int64)) if self.n_classes else np.zeros(1, int)
        out.append("  classes per patch: " + ", ".join(f"{k}: {int(c)}" for k, c in enumerate(classes) if c))
        mean_h = float(np.mean(self.entropy)) if self.entropy else 0.0
        out.append(f"  mean tissue-diversity entropy H: {mean_h:.3f} nats")
        return out


def save_composition_plot(stats: dict[str, CompositionStats], path: Path | str, title: str = "") -> Path:
    """PNG with, per named set of patches, the histogram of largest-class fractions (with the share satisfying
    the 20-80% rule in the legend) and the number of classes per patch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / max(len(stats), 1)
    centers = (HIST_BINS[:-1] + HIST_BINS[1:]) / 2
    max_classes = max((max(s.n_classes, default=0) for s in stats.values()), default=0)
    for i, (name, s) in enumerate(stats.items()):
        counts = s.histogram()
        shift = (i - (len(stats) - 1) / 2) * width * 0.1
        left.bar(centers + shift, counts, width=0.1 * width,
                 label=f"{name} (n={s.n}, {100 * s.fraction_heterogeneous:.0f}% in the 20-80% band)")
        per = np.bincount(np.asarray(s.n_classes, dtype=np.int64), minlength=max_classes + 1)
        right.bar(np.arange(max_classes + 1) + (i - (len(stats) - 1) / 2) * width, per, width=width, label=name)
    first = next(iter(stats.values()), CompositionStats())
    left.axvspan(0.0, first.max_frac, color="green", alpha=0.08, label=f"largest <= {first.max_frac:g} (with second >= {first.min_frac:g}: in band)")
    left.set_xlabel("largest class fraction of tissue")
    left.set_ylabel("patches")
    left.set_xlim(0, 1)
    left.legend(fontsize=7)
    right.set_xlabel("classes per patch")
    right.set_ylabel("patches")
    right.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_file(path) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)
    return path
