"""The `simulator` source: procedural H&E-like patches with exact tissue maps and nuclei instances.

Real datasets never give pixel-exact labels for everything at once; the simulator does, so pseudo-labelers
(nuclei detection F1, tissue phenotyping) and segmentation models can be tested against a known truth.

How a patch is made (all sizes are in microns and converted with `mpp`, so a patch at 0.25 um/px shows the
same tissue at twice the pixels):
- tissue map: 1-4 classes of `simulator-tissue` (stroma, epithelium, tumor, necrosis), each a smooth random
  field with a per-patch bias; the arg-max gives organic regions, and the biases make some patches
  heterogeneous and some nearly homogeneous. About half the patches get white holes (lumen / fat, id 0);
- appearance by Beer-Lambert stain mixing: per-pixel hematoxylin and eosin concentrations with class
  textures (stroma: eosin-rich wavy collagen fibers; epithelium: lighter, moderate H; tumor: denser and
  purpler; necrosis: pale pink with granular debris; background: near white), optical density
  OD = c_H * h + c_E * e with the Ruifrok-Johnston vectors h, e of `skimage.color.rgb_from_hed` (no DAB),
  slight blur and noise, RGB = 255 * exp(-OD). `skimage.color.rgb2hed` therefore recovers c_H and c_E (scaled
  by 1 / ln(1e6)) up to noise and 8-bit rounding;
- nuclei: star-shaped ellipses of `pannuke` classes, placed at class-dependent densities inside compatible
  tissue (`NUCLEUS_TISSUE`): tumor -> neoplastic (large, pleomorphic, dark), epithelium -> epithelial
  (medium, round), stroma -> connective (spindles along the local fiber direction) and inflammatory (small,
  round, very dark, clustered), necrosis -> dead (small, pale to pyknotic, fragmented chromatin). Overlapping
  candidates are rejected and nuclei keep a clearance of `GAP_PX` pixels, so every 8-connected blob of the
  nuclei mask is exactly one instance; nuclei may be cut by the patch border. Instances smaller than
  `MIN_NUCLEUS_PIXELS` after clipping, or whose centroid falls outside compatible tissue, are dropped before
  rendering, so the image shows exactly the labeled nuclei, each as extra hematoxylin with a darker rim and
  chromatin texture. Tissue does not depend on `nuclei_density`: the same seed at another density gives the
  same tissue map with more or fewer nuclei.

Intended for 0.1-2 um/px; nuclei are at least 1.5 px in semi-axis whatever the scale.

Determinism: sample i of seed s uses a generator seeded with `sample_seed(s, i)`, derived from
`np.random.SeedSequence([s, i])`; it is identical whatever `n` is, and `simulate_patch(prov.seed, ...)`
reproduces a sample from its provenance. Same seed, same numpy/scipy/BLAS build => byte-identical arrays
(the smooth fields go through float32 matrix products, so another BLAS may move a region boundary by a pixel).

Speed: see perf/RESULTS.md. The matrix products are tiny, so OMP_NUM_THREADS=1 is the better setting for
generating many patches in parallel processes.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Iterator

import numpy as np
from scipy import ndimage
from skimage.color import rgb_from_hed

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.schema import Nuclei, Provenance, Sample
from histosynth.sources.base import Source, SourceMeta

TISSUE_SCHEMA = "simulator-tissue"
NUCLEI_SCHEMA = "pannuke"
_TISSUE = get_schema(TISSUE_SCHEMA)
_NUCLEI = get_schema(NUCLEI_SCHEMA)
BACKGROUND = 0
STROMA, EPITHELIUM, TUMOR, NECROSIS = (_TISSUE.id_of(n) for n in ("stroma", "epithelium", "tumor", "necrosis"))
NEOPLASTIC, INFLAMMATORY, CONNECTIVE, DEAD, EPITHELIAL = (
    _NUCLEI.id_of(n) for n in ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
)

NUCLEUS_TISSUE: dict[int, int] = {
    NEOPLASTIC: TUMOR, EPITHELIAL: EPITHELIUM, CONNECTIVE: STROMA, INFLAMMATORY: STROMA, DEAD: NECROSIS,
}
"""Nucleus class (`pannuke`) -> the tissue class (`simulator-tissue`) its centroid always lies in."""

MIN_NUCLEUS_PIXELS = 6
"""Smallest instance kept (after clipping by the patch border)."""

GAP_PX = 1.5
"""Minimum clearance between two nuclei, in pixels: instances never touch, so each mask blob is one nucleus."""

MIN_SIZE = 32
"""Smallest patch side in pixels (smaller patches hold too little tissue for regions and nuclei)."""

# Ruifrok & Johnston optical-density vectors, exactly those behind skimage.color.rgb2hed.
_H_OD = rgb_from_hed[0].astype(np.float32)
_E_OD = rgb_from_hed[1].astype(np.float32)


def _per_tissue(values: dict[int, float]) -> np.ndarray:
    table = np.zeros(_TISSUE.num_classes, dtype=np.float32)
    for class_id, value in values.items():
        table[class_id] = value
    return table


# Base hematoxylin and eosin concentrations (natural-log OD units), indexed by tissue id.
_BASE_H = _per_tissue({BACKGROUND: 0.015, STROMA: 0.14, EPITHELIUM: 0.22, TUMOR: 0.36, NECROSIS: 0.10})
_BASE_E = _per_tissue({BACKGROUND: 0.03, STROMA: 0.80, EPITHELIUM: 0.42, TUMOR: 0.52, NECROSIS: 0.45})


@dataclass(frozen=True)
class _NucleusType:
    """Shape, density and stain of one nucleus class (lengths in microns)."""

    class_id: int
    per_10k_um2: float  # candidate centers per 100 x 100 um of compatible tissue at nuclei_density 1
    semi_major_um: tuple[float, float]
    aspect: tuple[float, float]  # minor / major
    irregularity: float  # amplitude of the boundary's angular harmonics (pleomorphism)
    stain: tuple[float, float]  # hematoxylin OD range
    rim: float  # extra H at the nuclear membrane, relative
    chromatin: float  # relative amplitude of the chromatin texture
    along_fibers: bool = False
    clustered: bool = False


_TYPES: tuple[_NucleusType, ...] = (
    _NucleusType(NEOPLASTIC, 60.0, (4.0, 6.5), (0.6, 0.95), 0.10, (1.5, 2.1), 0.30, 0.35),
    _NucleusType(EPITHELIAL, 55.0, (2.8, 3.8), (0.75, 1.0), 0.03, (1.15, 1.5), 0.25, 0.20),
    _NucleusType(CONNECTIVE, 12.0, (4.5, 7.0), (0.22, 0.38), 0.02, (1.5, 1.9), 0.10, 0.15, along_fibers=True),
    _NucleusType(INFLAMMATORY, 8.0, (2.1, 2.8), (0.85, 1.0), 0.02, (2.2, 2.7), 0.05, 0.10, clustered=True),
    _NucleusType(DEAD, 30.0, (1.2, 2.4), (0.55, 1.0), 0.15, (0.8, 2.0), 0.0, 0.70),
)


def sample_seed(seed: int, index: int) -> int:
    """The 63-bit seed of sample `index` of a run seeded `seed` (from SeedSequence([seed, index]); fits int64)."""
    lo, hi = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return int(((int(hi) << 32) | int(lo)) & ((1 << 63) - 1))


def simulate_patch(
    rng_or_seed: np.random.Generator | int,
    size: int = 256,
    mpp: float = 0.5,
    nuclei_density: float = 1.0,
    *,
    provenance: Provenance | None = None,
) -> Sample:
    """One validated simulated patch (image, tissue map, nuclei with instances) of `size` x `size` pixels.

    `rng_or_seed` is a numpy Generator (consumed) or an int seed (then recorded in the provenance);
    `nuclei_density` scales the expected nucleus count (0 draws none); `provenance` overrides the default
    `Provenance(source="simulator", level=0, mpp=mpp, seed=...)`.
    """
    size = _check_size(size)
    mpp = _check_positive("mpp", mpp)
    nuclei_density = _check_positive("nuclei_density", nuclei_density, allow_zero=True)
    if isinstance(rng_or_seed, np.random.Generator):
        rng, seed = rng_or_seed, None
    else:
        seed = _check_seed("rng_or_seed", rng_or_seed)
        rng = np.random.default_rng(seed)
    if provenance is None:
        provenance = Provenance(source="simulator", level=0, mpp=mpp, seed=seed)

    tissue, fiber_u, h_tex, e_tex = _tissue(rng, size, mpp)
    instances, class_of = _nuclei(rng, tissue, fiber_u, mpp, nuclei_density)
    nuclei = Nuclei.from_instance_map(NUCLEI_SCHEMA, instances, class_of)
    image = _render(rng, tissue, h_tex, e_tex, nuclei.instances, nuclei.class_ids, mpp)
    return Sample(image=image, provenance=provenance, tissue=tissue, tissue_schema=TISSUE_SCHEMA, nuclei=nuclei)


class SimulatorSource(Source):
    """`n` procedural H&E-like patches with exact tissue maps, nuclei instances and classed centroids.

    Sample i is `simulate_patch(sample_seed(seed, i), size, mpp, nuclei_density)` with provenance
    slide_id "sim-{seed}", x = i * size, y = 0 (the samples tile a virtual one-row slide), level 0.
    """

    meta = SourceMeta(
        name="simulator",
        description="procedural H&E-like tissue (Beer-Lambert H&E stain mixing) with exact tissue maps, "
        "non-overlapping nuclei instances and classed centroids",
        license="CC0-1.0",
        citation="Ruifrok & Johnston, Quantification of histochemical staining by color deconvolution, "
        "Anal. Quant. Cytol. Histol. 23(4), 2001 (stain vectors)",
        native_mpp=0.5,
        tissue_schema=TISSUE_SCHEMA,
        nuclei_schema=NUCLEI_SCHEMA,
    )

    def __init__(
        self, n: int = 64, size: int = 256, seed: int = 0, mpp: float = 0.5, nuclei_density: float = 1.0
    ) -> None:
        """`n` patches of `size` px (>= 32) at `mpp` um/px; `seed` >= 0; `nuclei_density` scales nucleus counts."""
        self.n = _check_count(n)
        self.size = _check_size(size)
        self.seed = _check_seed("seed", seed)
        self.mpp = _check_positive("mpp", mpp)
        self.nuclei_density = _check_positive("nuclei_density", nuclei_density, allow_zero=True)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[Sample]:
        for index in range(self.n):
            yield self.sample(index)

    def sample(self, index: int) -> Sample:
        """Sample `index` (random access; the same patch whatever `n` is)."""
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"simulator: sample index must be >= 0, got {index}")
        per_sample = sample_seed(self.seed, index)
        prov = Provenance(source="simulator", slide_id=f"sim-{self.seed}", x=index * self.size, y=0, level=0,
                          mpp=self.mpp, seed=per_sample)
        return simulate_patch(per_sample, self.size, self.mpp, self.nuclei_density, provenance=prov)


# ----------------------------------------------------------------------------------------- argument checks


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise InputError(f"simulator: {name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"simulator: {name} must be an integer, got {value!r}") from None


def _check_size(size: object) -> int:
    value = _as_int("size", size)
    if value < MIN_SIZE:
        raise InputError(f"simulator: size must be >= {MIN_SIZE} pixels, got {value}")
    return value


def _check_count(n: object) -> int:
    value = _as_int("n", n)
    if value < 0:
        raise InputError(f"simulator: n must be >= 0, got {value}")
    return value


def _check_seed(name: str, seed: object) -> int:
    value = _as_int(name, seed)
    if value < 0:
        raise InputError(f"simulator: {name} must be a non-negative integer, got {value}")
    return value


def _check_positive(name: str, value: object, allow_zero: bool = False) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"simulator: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise InputError(f"simulator: {name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return number


# -------------------------------------------------------------------------------------------- generation


def _lattice_weights(n: int, step: float, pad: int = 3) -> np.ndarray:
    """(n, m) weights of Gaussian bumps spaced `step` apart covering positions 0..n-1, rows of unit norm."""
    centers = (np.arange(int(np.ceil(n / step)) + 2 * pad, dtype=np.float32) - pad) * step
    z = ((np.arange(n, dtype=np.float32)[:, None] - centers[None, :]) / step) ** 2
    w = np.where(z < 60.0, np.exp(-0.5 * np.minimum(z, 60.0)), 0.0).astype(np.float32)  # no denormals: they are slow
    return w / np.sqrt((w**2).sum(axis=1, keepdims=True))


def _smooth_fields(rng: np.random.Generator, count: int, size: int, scale_px: float) -> np.ndarray:
    """`count` smooth Gaussian random fields (count, size, size), unit variance, correlation length ~scale_px.

    A lattice of white-noise weights convolved with a Gaussian bump, done as two small matrix products
    (separable), so large scales cost no more than small ones.
    """
    w = _lattice_weights(size, max(scale_px / 2.0, 1.0))
    noise = rng.standard_normal((count, w.shape[1], w.shape[1]), dtype=np.float32)
    return np.stack([w @ layer @ w.T for layer in noise])


def _fibers(rng: np.random.Generator, size: int, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Collagen texture in [0, 1] and the fiber coordinate u (px) whose level sets the fibers follow.

    u is a tilted plane warped by a smooth field (wavy bundles); the texture is anisotropic noise, short
    across u and long along the fibers, evaluated on a (u, v) grid and sampled back to the pixels.
    """
    um = 1.0 / mpp
    theta = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = -np.sin(theta) * xx + np.cos(theta) * yy + _smooth_fields(rng, 1, size, 45.0 * um)[0] * (5.0 * um)
    v = np.cos(theta) * xx + np.sin(theta) * yy
    u0, v0 = float(u.min()) - 1, float(v.min()) - 1
    nu, nv = int(u.max() - u0) + 3, int(v.max() - v0) + 3
    wu = _lattice_weights(nu, max(rng.uniform(0.6, 1.2) * um, 1.0))
    wv = _lattice_weights(nv, rng.uniform(8.0, 20.0) * um)
    grid = wu @ rng.standard_normal((wu.shape[1], wv.shape[1]), dtype=np.float32) @ wv.T
    field = ndimage.map_coordinates(grid, [u - u0, v - v0], order=1, mode="nearest")
    return 1.0 / (1.0 + np.exp(-3.5 * (field + 0.1))), u


def _fine_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Pixel-scale texture: white noise blurred by `sigma_px`, rescaled to unit variance."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), sigma_px)
    return field / max(float(field.std()), 1e-6)


def _tissue(rng: np.random.Generator, size: int, mpp: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tissue map, stroma fiber coordinate (px; fibers run along its level sets) and H/E class textures."""
    um = 1.0 / mpp  # pixels per micron
    k = int(rng.choice([1, 2, 3, 4], p=[0.2, 0.35, 0.3, 0.15]))
    classes = rng.choice([STROMA, EPITHELIUM, TUMOR, NECROSIS], size=k, replace=False, p=[0.35, 0.25, 0.25, 0.15])
    fields = _smooth_fields(rng, k, size, rng.uniform(30.0, 80.0) * um)
    bias = rng.normal(0.0, 0.7, size=k).astype(np.float32)
    tissue = np.asarray(classes, dtype=np.uint8)[np.argmax(fields + bias[:, None, None], axis=0)]
    if rng.random() < 0.5:
        holes = _smooth_fields(rng, 1, size, rng.uniform(10.0, 30.0) * um)[0]
        tissue[holes > rng.uniform(1.3, 2.3)] = BACKGROUND

    fibers, fiber_u = _fibers(rng, size, mpp)
    mottle = _smooth_fields(rng, 1, size, 3.0 * um)[0]
    grain = _fine_noise(rng, size, 0.8)

    h_tex = np.zeros((size, size), dtype=np.float32)
    e_tex = np.zeros((size, size), dtype=np.float32)
    s, ep, t, nc = (tissue == c for c in (STROMA, EPITHELIUM, TUMOR, NECROSIS))
    e_tex[s] = (0.15 + 0.95 * fibers[s] + 0.08 * mottle[s] - 1.0) * _BASE_E[STROMA]
    e_tex[ep] = 0.06 * mottle[ep] + 0.03 * grain[ep]
    h_tex[ep] = 0.03 * mottle[ep]
    e_tex[t] = 0.07 * mottle[t] + 0.03 * grain[t]
    h_tex[t] = 0.06 * mottle[t] + 0.02 * grain[t]
    e_tex[nc] = 0.08 * mottle[nc] + 0.06 * grain[nc]
    debris = grain[nc] > 1.8  # karyorrhectic dust: scattered hematoxylin specks
    h_tex[nc] = np.where(debris, 0.35 * (grain[nc] - 1.3), 0.02 * grain[nc])
    return tissue, fiber_u, h_tex, e_tex


def _candidates(
    rng: np.random.Generator, tissue: np.ndarray, mpp: float, density: float
) -> list[tuple[_NucleusType, np.ndarray]]:
    """Candidate centers (m, 2) as (row, col) per nucleus type, Poisson in number, inside compatible tissue."""
    size = tissue.shape[0]
    out = []
    clusters = None
    for kind in _TYPES:
        mask = tissue == NUCLEUS_TISSUE[kind.class_id]
        area_um2 = float(mask.sum()) * mpp * mpp
        rate = kind.per_10k_um2 * density * area_um2 / 1e4
        if kind.clustered:
            rate *= float(rng.lognormal(0.0, 0.8))  # some stroma is inflamed, some is not
        count = int(rng.poisson(rate)) if rate > 0 else 0
        if count == 0:
            continue
        if kind.clustered:
            if clusters is None:
                clusters = _smooth_fields(rng, 1, size, 25.0 / mpp)[0]
            weights = np.where(mask, np.exp(2.0 * clusters), 0.0).ravel()
            flat = rng.choice(weights.size, size=count, p=weights / weights.sum())
        else:
            flat = rng.choice(np.flatnonzero(mask), size=count)
        centers = np.stack(np.unravel_index(flat, tissue.shape), axis=1).astype(np.float64)
        centers += rng.uniform(-0.5, 0.5, size=centers.shape)
        out.append((kind, centers))
    return out


def _nuclei(
    rng: np.random.Generator, tissue: np.ndarray, fiber_u: np.ndarray, mpp: float, density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping nuclei: an int32 instance map (ids in drawing order, gaps allowed) and class per id."""
    size = tissue.shape[0]
    instances = np.zeros(tissue.shape, dtype=np.int32)
    classes = [0]
    batches = _candidates(rng, tissue, mpp, density) if density > 0 else []
    if not batches:
        return instances, np.zeros(1, dtype=np.uint8)
    kinds = [kind for kind, c in batches for _ in range(len(c))]
    centers = np.concatenate([c for _, c in batches])
    order = rng.permutation(len(kinds))
    du_dy, du_dx = np.gradient(fiber_u)
    min_axis = 1.5  # px: thinner ellipses can rasterize into disconnected pixels
    for i in order:
        kind = kinds[i]
        cy, cx = centers[i]
        a = max(rng.uniform(*kind.semi_major_um) / mpp, min_axis)
        b = max(a * rng.uniform(*kind.aspect), min_axis)
        if kind.along_fibers:
            r, c = min(max(int(round(cy)), 0), size - 1), min(max(int(round(cx)), 0), size - 1)
            angle = math.atan2(du_dx[r, c], -du_dy[r, c]) + rng.normal(0.0, 0.15)  # perpendicular to grad u
        else:
            angle = rng.uniform(0.0, np.pi)
        harmonics = rng.uniform(-1.0, 1.0, size=3) * kind.irregularity / 1.5
        phases = rng.uniform(0.0, 2 * np.pi, size=3)

        reach = a * (1 + 2 * kind.irregularity) + GAP_PX + 1  # the harmonics add at most 2 * irregularity
        r0, r1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, size)
        c0, c1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, size)
        dy = np.arange(r0, r1, dtype=np.float64)[:, None] - cy
        dx = np.arange(c0, c1, dtype=np.float64)[None, :] - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        radius = np.hypot(u / a, v / b)  # 1 on the ellipse
        bound = np.ones_like(radius)
        if kind.irregularity > 0:
            phi = np.arctan2(v / b, u / a)
            bound = bound + sum(h * np.cos((j + 2) * phi + p) for j, (h, p) in enumerate(zip(harmonics, phases, strict=False)))
        inside = radius <= bound
        grown = radius <= bound + GAP_PX / b  # b <= a, so the radial growth is >= GAP_PX pixels everywhere
        window = instances[r0:r1, c0:c1]
        if window[grown].any() or inside.sum() < MIN_NUCLEUS_PIXELS:
            continue
        window[inside] = len(classes)
        classes.append(kind.class_id)

    class_of = np.asarray(classes, dtype=np.uint8)
    return _drop_unfit(instances, class_of, tissue), class_of


def _drop_unfit(instances: np.ndarray, class_of: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """Erase instances that are too small or whose centroid lies outside their compatible tissue."""
    n = len(class_of) - 1
    if n == 0:
        return instances
    flat = instances.ravel()
    counts = np.bincount(flat, minlength=n + 1)[1:]
    rows, cols = np.indices(instances.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        cy = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1:] / counts
        cx = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1:] / counts
    keep = counts >= MIN_NUCLEUS_PIXELS
    tissue_at = np.zeros(n, dtype=np.int64)
    tissue_at[keep] = tissue[np.rint(cy[keep]).astype(int), np.rint(cx[keep]).astype(int)]
    wanted = np.array([NUCLEUS_TISSUE.get(int(c), -1) for c in class_of[1:]])
    keep &= tissue_at == wanted
    lut = np.concatenate([[0], np.where(keep, np.arange(1, n + 1), 0)]).astype(np.int32)
    return lut[instances]


def _render(
    rng: np.random.Generator,
    tissue: np.ndarray,
    h_tex: np.ndarray,
    e_tex: np.ndarray,
    instances: np.ndarray,
    class_ids: np.ndarray,
    mpp: float,
) -> np.ndarray:
    """RGB uint8 by Beer-Lambert mixing of the H and E concentration maps (nuclei added as hematoxylin)."""
    size = tissue.shape[0]
    h = _BASE_H[tissue] + h_tex
    e = _BASE_E[tissue] + e_tex
    n = len(class_ids)
    if n:
        by_class = {kind.class_id: kind for kind in _TYPES}
        kinds = [by_class[int(c)] for c in class_ids]
        level = np.array([0.0] + [rng.uniform(*k.stain) for k in kinds], dtype=np.float32)
        rim = np.array([0.0] + [k.rim for k in kinds], dtype=np.float32)
        chromatin = np.array([0.0] + [k.chromatin for k in kinds], dtype=np.float32)
        inside = instances > 0
        # Nuclei never touch, so the distance to the nearest non-nucleus pixel is the depth inside one's own nucleus.
        depth = ndimage.distance_transform_edt(inside).astype(np.float32)
        clumps = _fine_noise(rng, size, max(0.4 / mpp, 0.6))
        inst = instances.astype(np.intp)
        membrane = 1 + rim[inst] * np.exp(-(depth - 1) / 1.2)
        nuclear = level[inst] * membrane * np.clip(1 + chromatin[inst] * clumps, 0.25, 2.0)
        h = np.where(inside, 0.3 * h + nuclear, h)
        e = np.where(inside, 0.45 * e, e)
    h *= rng.uniform(0.85, 1.15)  # staining strength varies between slides
    e *= rng.uniform(0.85, 1.15)
    blur = max(0.3 / mpp, 0.4)
    h = ndimage.gaussian_filter(np.maximum(h, 0), blur)
    e = ndimage.gaussian_filter(np.maximum(e, 0), blur)
    od = h[..., None] * _H_OD + e[..., None] * _E_OD
    od += rng.normal(0.0, 0.02, size=od.shape).astype(np.float32)
    return np.clip(np.rint(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)
