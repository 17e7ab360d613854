"""Completion masks: Palette's "hybrid" mask (a random box OR'ed with brush strokes) and the frozen held-out set.

Masks are bool (H, W), True = the region to fill, as `Sample.completion_mask` and benchmark.lpips_masked expect.

Rules ported from Palette (Janspiry/Palette-Image-to-Image-Diffusion-Models, data/util/mask.py: random_bbox,
bbox2mask, brush_stroke_mask; the "hybrid" mode of data/dataset.py), defaults given on a 256 px canvas:
- Box: a corner (top0, left0) drawn in [margin, size - margin - box_max) per axis, then shrunk by d in
  [0, box_delta / 2] per axis from the top-left only: rows [top0 + d, top0 + box_max). (Palette's comment says the
  center stays fixed; its code keeps the bottom-right corner fixed, which is what is ported.)
- Brush: 1 to max_loops - 1 strokes (Palette's `randint(1, max_loops)` excludes max_loops, so its "up to 4 loops"
  draws 1-3); each a polyline of 4-11 segments from a uniform start point, segment lengths r ~ N(R, R/2) clipped
  to [0, 2R] with R = diagonal / 8, turning angles uniform around 2 pi / 5 (spread 2 pi / 15) with alternate
  vertices reflected (2 pi - a), vertices clipped to the canvas; drawn with a width in [12, 39] (Palette's
  `randint(12, 40)`) and a disk of diameter `width` on every vertex. Palette's random flips at the end are no-ops
  (it discards the result of `Image.transpose`), so none are made here.
- At 256 px the result matches Palette's rules drawn with PIL in distribution (tests/unit/test_masks.py).
Differences from Palette, on purpose:
- Scaling: Palette's box is always drawn on a fixed 256 px canvas and its brush width is in pixels whatever the
  image size (only the stroke length follows the diagonal). Here every length (box size, delta, margin, width) is
  scaled by patch size / 256, per axis for the box and by the geometric mean of the axes for the width, so the
  masked area fraction does not depend on the patch size.
- Positions, sizes and widths are drawn as continuous values over the span of Palette's integer draws and
  rasterized by pixel centers (pixel i covers [i, i + 1)); Palette draws integers and truncates vertices. Strokes are drawn with skimage.draw (polygon per segment + disks), not PIL.
- Randomness: mask `index` of a set with seed `seed` uses its own PCG64 stream seeded by SeedSequence([seed, index]),
  so it is a pure function of (seed, index, size): the same draws at every size give the same shape, scaled. Only
  the bit generator's uniform doubles are used (normals by Box-Muller here), because numpy's NEP 19 lets the
  Generator's other samplers change between versions, and the held-out set must not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
from skimage.draw import disk, polygon

from histosynth.errors import InputError, UnknownNameError
from histosynth.schema import Provenance, Sample

REFERENCE_SIZE = 256  # the canvas Palette's defaults are given on
MIN_SIZE = 16  # below this the scaled brush (12/256 of the patch) is under one pixel wide


@dataclass(frozen=True)
class HybridMaskConfig:
    """Palette's hybrid-mask parameters, lengths in pixels of a 256 px canvas (scaled to each patch)."""

    box_max: float = 128.0  # largest box side
    box_delta: float = 40.0  # the box shrinks by up to box_delta / 2 per axis
    box_margin: float = 20.0  # least distance from the box to the canvas edge
    vertices: tuple[int, int] = (4, 12)  # segments per stroke, [low, high)
    width: tuple[float, float] = (12.0, 39.0)  # stroke width, [low, high]
    max_loops: int = 4  # strokes per mask: 1 .. max_loops - 1
    mean_angle: float = 2 * math.pi / 5
    angle_range: float = 2 * math.pi / 15

    def __post_init__(self) -> None:
        # Palette's random_bbox checks, on the reference canvas.
        if not 0 < self.box_max <= REFERENCE_SIZE - 2 * self.box_margin:
            raise InputError(f"mask config: box_max {self.box_max} with margin {self.box_margin} does not fit "
                             f"a {REFERENCE_SIZE} px canvas")
        if not 0 <= self.box_delta / 2 < self.box_max or self.box_margin < 0:
            raise InputError(f"mask config: need 0 <= box_delta / 2 < box_max and box_margin >= 0, got "
                             f"{self.box_delta}, {self.box_max}, {self.box_margin}")
        if not 1 <= self.vertices[0] < self.vertices[1] or not 0 < self.width[0] < self.width[1] or self.max_loops < 2:
            raise InputError(f"mask config: need 1 <= vertices[0] < vertices[1], 0 < width[0] < width[1] and "
                             f"max_loops >= 2, got {self.vertices}, {self.width}, {self.max_loops}")


PALETTE = HybridMaskConfig()


@dataclass(frozen=True)
class Stroke:
    """One brush stroke: its polyline vertices as (x, y) in pixels (pixel i covers [i, i + 1)) and its width."""

    vertices: np.ndarray  # (k, 2) float
    width: float


class _Draws:
    """Uniform, integer and normal draws from one PCG64 stream, using only its uniform doubles (see module doc)."""

    def __init__(self, seed: int, index: int) -> None:
        self._rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, index])))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(self._rng.random())

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high)."""
        return min(low + int(self._rng.random() * (high - low)), high - 1)

    def normal(self, mean: float, std: float) -> float:
        u1, u2 = 1.0 - float(self._rng.random()), float(self._rng.random())  # u1 in (0, 1]: log(u1) is finite
        return mean + std * math.sqrt(-2.0 * math.log(u1)) * math.cos(2 * math.pi * u2)


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from a square side or an (H, W) pair; refuses patches too small for the scaled brush."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) != h or int(w) != w or min(h, w) < MIN_SIZE:
        raise InputError(f"mask size {size!r}: need whole pixel sizes of at least {MIN_SIZE}")
    return int(h), int(w)


def _pixel_span(start: float, stop: float) -> slice:
    """The pixels whose centers (i + 0.5) lie in [start, stop)."""
    return slice(math.ceil(start - 0.5), math.ceil(stop - 0.5))


def _random_box(draws: _Draws, shape: tuple[int, int], config: HybridMaskConfig) -> tuple[slice, slice]:
    """Palette's random_bbox, scaled per axis: (rows, cols) of the box."""
    spans = []
    for side in shape:
        scale = side / REFERENCE_SIZE
        box_max, margin = config.box_max * scale, config.box_margin * scale
        start = draws.uniform(margin, side - margin - box_max)
        shrink = draws.uniform(0.0, config.box_delta / 2 * scale)
        spans.append(_pixel_span(start + shrink, start + box_max))
    return spans[0], spans[1]


def _brush_strokes(draws: _Draws, shape: tuple[int, int], config: HybridMaskConfig) -> list[Stroke]:
    """Palette's brush_stroke_mask, widths scaled by the geometric mean of the axes' scales."""
    h, w = shape
    radius = math.hypot(h, w) / 8  # Palette's average_radius: already relative to the canvas
    width_scale = math.sqrt(h * w) / REFERENCE_SIZE
    strokes = []
    for _ in range(draws.integer(1, config.max_loops)):
        n = draws.integer(*config.vertices)
        low = config.mean_angle - draws.uniform(0.0, config.angle_range)
        high = config.mean_angle + draws.uniform(0.0, config.angle_range)
        x, y = draws.uniform(0.0, w), draws.uniform(0.0, h)
        vertices = [(x, y)]
        for i in range(n):
            angle = draws.uniform(low, high)
            if i % 2 == 0:
                angle = 2 * math.pi - angle
            r = min(max(draws.normal(radius, radius / 2), 0.0), 2 * radius)
            x = min(max(x + r * math.cos(angle), 0.0), float(w))
            y = min(max(y + r * math.sin(angle), 0.0), float(h))
            vertices.append((x, y))
        width = draws.uniform(config.width[0] * width_scale, config.width[1] * width_scale)
        strokes.append(Stroke(np.asarray(vertices, dtype=np.float64), width))
    return strokes


def draw_strokes(strokes: list[Stroke], shape: tuple[int, int]) -> np.ndarray:
    """Rasterize strokes (each segment a band of the stroke's width, each vertex a disk of its diameter) by pixel center."""
    mask = np.zeros(shape, dtype=bool)
    for stroke in strokes:
        half = stroke.width / 2
        points = stroke.vertices - 0.5  # skimage puts pixel i's center at i
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
            length = math.hypot(x1 - x0, y1 - y0)
            if length > 0:
                nx, ny = -(y1 - y0) / length * half, (x1 - x0) / length * half
                rows, cols = polygon(np.array([y0 + ny, y1 + ny, y1 - ny, y0 - ny]),
                                     np.array([x0 + nx, x1 + nx, x1 - nx, x0 - nx]), shape=shape)
                mask[rows, cols] = True
        for x, y in points:
            rows, cols = disk((y, x), half, shape=shape)
            mask[rows, cols] = True
    return mask


@dataclass(frozen=True)
class HybridParts:
    """The pieces of one hybrid mask before they are OR'ed: the box (rows, cols) and the strokes."""

    shape: tuple[int, int]
    box: tuple[slice, slice]
    strokes: list[Stroke] = field(default_factory=list)

    def mask(self) -> np.ndarray:
        """The hybrid mask: box OR strokes, bool (H, W), True = fill."""
        mask = draw_strokes(self.strokes, self.shape)
        mask[self.box] = True
        return mask


def hybrid_parts(seed: int, index: int, size: int | tuple[int, int], config: HybridMaskConfig = PALETTE) -> HybridParts:
    """The box and strokes of mask `index` of the set `seed` at `size` (a side or (H, W)); draws box first, then strokes."""
    shape = _shape(size)
    draws = _Draws(seed, index)
    box = _random_box(draws, shape, config)
    return HybridParts(shape, box, _brush_strokes(draws, shape, config))


def hybrid_mask(seed: int, index: int, size: int | tuple[int, int], config: HybridMaskConfig = PALETTE) -> np.ndarray:
    """Mask `index` of the set `seed`: bool (H, W), True = fill; a pure function of (seed, index, size, config)."""
    return hybrid_parts(seed, index, size, config).mask()


def hybrid_masks(seed: int, n: int, size: int | tuple[int, int], start: int = 0,
                 config: HybridMaskConfig = PALETTE) -> np.ndarray:
    """Masks start .. start + n - 1 of the set `seed`, stacked: bool (n, H, W)."""
    if n < 0 or start < 0:
        raise InputError(f"masks: need n >= 0 and start >= 0, got n={n}, start={start}")
    h, w = _shape(size)
    out = np.zeros((n, h, w), dtype=bool)
    for j in range(n):
        out[j] = hybrid_mask(seed, start + j, (h, w), config)
    return out


@dataclass(frozen=True)
class HeldoutSet:
    """A frozen, published mask set: Palette hybrid masks from one seed and config. Never edit one: add a version."""

    version: str
    seed: int
    config: HybridMaskConfig
    description: str

    def record(self) -> dict:
        """What a result records so its completion scores can be matched to others on the same masks."""
        return {"mask_set": "palette-hybrid", "version": self.version, "seed": self.seed,
                "scaled_to_patch": True, "reference_size": REFERENCE_SIZE}


# The standard held-out masks that completion scores are computed on. v1's seed is the date it was frozen.
HELDOUT_SETS: dict[str, HeldoutSet] = {
    "v1": HeldoutSet("v1", seed=20261201, config=PALETTE,
                     description="Palette hybrid masks with Palette's 256 px defaults scaled to the patch"),
}
HELDOUT_VERSION = "v1"  # the version completion benchmarks use unless told otherwise


def heldout_set(version: str = HELDOUT_VERSION) -> HeldoutSet:
    """The held-out mask set `version`; unknown versions name the known ones."""
    try:
        return HELDOUT_SETS[version]
    except KeyError:
        raise UnknownNameError(f"held-out mask set {version!r} is unknown; known: {', '.join(HELDOUT_SETS)}") from None


def heldout_mask(index: int, size: int | tuple[int, int], version: str = HELDOUT_VERSION) -> np.ndarray:
    """Mask `index` of the standard held-out set: bool (H, W), True = fill; the same for every generator."""
    held = heldout_set(version)
    if index < 0:
        raise InputError(f"held-out mask index must be >= 0, got {index}")
    return hybrid_mask(held.seed, index, size, held.config)


def heldout_masks(n: int, size: int | tuple[int, int], version: str = HELDOUT_VERSION, start: int = 0) -> np.ndarray:
    """The first `n` masks (from `start`) of the standard held-out set: bool (n, H, W)."""
    held = heldout_set(version)
    return hybrid_masks(held.seed, n, size, start, held.config)


def with_heldout_masks(samples: Iterable[Sample], version: str = HELDOUT_VERSION) -> Iterator[Sample]:
    """The samples, the j-th carrying held-out mask j at its own patch size as its completion mask."""
    for j, sample in enumerate(samples):
        yield replace(sample, completion_mask=heldout_mask(j, sample.image.shape[:2], version))


def heldout_mask_samples(n: int, size: int | tuple[int, int], version: str = HELDOUT_VERSION) -> Iterator[Sample]:
    """Rows that carry only held-out masks 0 .. n-1 (in order): the image is the mask drawn white on black, so a
    dataset viewer shows the masks; provenance names the set and its seed."""
    held = heldout_set(version)
    for j in range(n):  # one at a time: a large set never sits in memory
        mask = heldout_mask(j, size, version)
        image = np.repeat(mask[:, :, None], 3, axis=2).astype(np.uint8) * 255
        yield Sample(image=image, completion_mask=mask,
                     provenance=Provenance(source="heldout-masks", slide_id=f"palette-hybrid-{version}", seed=held.seed))
