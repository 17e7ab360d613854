"""Whole-slide TIFF reading shared by the slide readers (camelyon16, panda, and later TCGA): pyramid levels,
microns per pixel, lazy region reads, level choice for a requested mpp, tiling and tissue detection.

Library decision: tifffile alone (BSD-3, maintained, already a dependency; `imagecodecs` supplies the JPEG /
JPEG 2000 / LZW / Deflate codecs). tifffile parses SVS, generic tiled pyramids (levels as pages or SubIFDs) and
exposes each page's tile offsets plus a per-tile `decode` function, so a region read decodes only the tiles
(or strips) it overlaps: never the whole level. zarr (tifffile's `aszarr`) would offer the same through an
array interface, but it is not installed and is not needed for rectangular reads; openslide/tiffslide are not
dependencies either (openslide needs a system library).

Coordinates: level-0 pixel indices, x = column, y = row, as in `histosynth.schema`. A `Window` is a rectangle
of the slide in level-0 *edge* coordinates (pixel i spans [i, i+1)) plus an output size; `Window.to_pixels`
maps level-0 pixel-index coordinates (annotation vertices) into the output patch, so labels drawn from
polygons line up with the pixels read.

Microns per pixel of level 0, in order: the Aperio description (`MPP = 0.2520`), the TIFF XResolution with
ResolutionUnit centimeter or inch, the caller's `default_mpp`. Values outside 0.05..100 um/px are treated as
absent (a 72 dpi default tag would otherwise claim 353 um/px). Level mpp = level-0 mpp x downsample.

Level choice: the coarsest level whose mpp is at most the requested mpp (+2.5 %); when that level is within
2.5 % of the request the window snaps to its pixel grid and is read without resampling (provenance records the
level's exact mpp); otherwise the region is resampled with Pillow (Lanczos for images, nearest for label
masks) from the chosen level. Reads outside the slide raise `WSIError` naming the file; `pad=True` fills the
part beyond the border with `fill` instead (tile grids use it for sub-pixel rounding at the last row/column).
Sparse (absent) tiles read as `fill` too: white (255) for slides, 0 for label masks.

Tissue: Otsu on the luminance of a low-resolution level (clamped to 180..225) gives each slide a threshold;
pixels darker than it but brighter than 25 (scanner black, padding) are tissue, cleaned by a 3x3 opening and
closing. `TissueMap` keeps that mask for tile selection (`min_tissue`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.errors import InputError
from histosynth.sources.folder import FormatError

MPP_TOLERANCE = 0.025
PLAUSIBLE_MPP = (0.05, 100.0)
THUMBNAIL_PIXELS_PER_TILE = 8  # tissue mask resolution: at least this many mask pixels across a tile
MAX_THUMBNAIL_PIXELS = 16_000_000  # ~48 MB of RGB: the largest level read whole for a tissue mask
TISSUE_THRESHOLD_RANGE = (180.0, 225.0)  # Otsu on luminance, clamped: glass is brighter than ~225, tissue darker than ~180
DARK_LIMIT = 25.0  # darker than this is scanner black / pen / padding, not stained tissue
_JPEG_COMPRESSIONS = {6, 7, 33007, 34892}


class WSIError(FormatError):
    """A slide cannot be read as asked; the message names the file."""


@dataclass(frozen=True)
class Level:
    """One pyramid level: its size, downsample from level 0 per axis, and microns per pixel."""

    index: int
    width: int
    height: int
    downsample_x: float
    downsample_y: float
    mpp: float


@dataclass(frozen=True)
class Window:
    """A slide rectangle in level-0 edge coordinates (pixel i spans [i, i+1)) and the output patch size."""

    x: float
    y: float
    width: float
    height: float
    out_width: int
    out_height: int
    mpp: float  # microns per output pixel

    @property
    def origin(self) -> tuple[int, int]:
        """Rounded level-0 top-left (provenance x, y)."""
        return int(round(self.x)), int(round(self.y))

    def to_pixels(self, xy: np.ndarray) -> np.ndarray:
        """Map (k, 2) level-0 pixel-index (x, y) coordinates to pixel-index coordinates of the output patch."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.out_width / self.width, self.out_height / self.height
        return np.stack([(xy[:, 0] + 0.5 - self.x) * sx - 0.5, (xy[:, 1] + 0.5 - self.y) * sy - 0.5], axis=1)


def mpp_from_page(page: object) -> float | None:
    """Level-0 microns per pixel from an Aperio description or resolution tags; None when absent or implausible."""
    lo, hi = PLAUSIBLE_MPP
    match = re.search(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)", getattr(page, "description", "") or "")
    if match and lo <= float(match.group(1)) <= hi:
        return float(match.group(1))
    tag = page.tags.get("XResolution")  # type: ignore[attr-defined]
    unit_tag = page.tags.get("ResolutionUnit")  # type: ignore[attr-defined]
    if tag is None:
        return None
    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
    if not num or not den:
        return None
    per_unit = num / den
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default unit: inch
    microns = {3: 1e4, 2: 25400.0}.get(unit)
    if microns is None:
        return None
    mpp = microns / per_unit
    return mpp if lo <= mpp <= hi else None


class Slide:
    """A pyramidal (or single-level) TIFF opened lazily: levels, mpp and region reads without loading a level."""

    def __init__(self, path: str | Path, default_mpp: float | None = None) -> None:
        """Open `path`; `default_mpp` is level 0's um/px when the file carries none."""
        import tifffile

        self.path = Path(path)
        if not self.path.is_file():
            raise WSIError(f"{self.path}: slide file not found")
        try:
            self._tif = tifffile.TiffFile(self.path)
            pages = self._level_pages()
        except WSIError:
            self.close()
            raise
        except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ...
            self.close()
            raise WSIError(f"{self.path}: not a readable TIFF slide ({type(err).__name__}: {err})") from err
        base = pages[0]
        if base.dtype != np.uint8:
            self.close()
            raise WSIError(f"{self.path}: only 8-bit slides are supported, level 0 is {base.dtype}")
        mpp = mpp_from_page(base)
        if mpp is None:
            if default_mpp is None:
                self.close()
                raise WSIError(f"{self.path}: no microns-per-pixel in the file (no Aperio 'MPP =' and no XResolution in "
                               f"centimeter/inch units); pass default_mpp")
            mpp = float(default_mpp)
        self.mpp = mpp
        w0, h0 = int(base.imagewidth), int(base.imagelength)
        self._pages = pages
        self.levels = [
            Level(i, int(p.imagewidth), int(p.imagelength), w0 / int(p.imagewidth), h0 / int(p.imagelength), mpp * w0 / int(p.imagewidth))
            for i, p in enumerate(pages)
        ]
        self.samples = int(base.samplesperpixel)

    def _level_pages(self) -> list:
        """Level pages, finest first: tifffile's pyramid of the first series, else every tiled page of the same aspect."""
        series = self._tif.series
        if not series:
            raise WSIError(f"{self.path}: the TIFF holds no image")
        pages = [level.keyframe for level in series[0].levels]
        if len(pages) == 1:
            base = pages[0]
            for page in self._tif.pages[1:]:
                page = page.aspage() if hasattr(page, "aspage") else page
                if (page.is_tiled and page.samplesperpixel == base.samplesperpixel and page.dtype == base.dtype
                        and page.imagewidth < base.imagewidth and page.imagelength < base.imagelength):
                    ds_x, ds_y = base.imagewidth / page.imagewidth, base.imagelength / page.imagelength
                    if abs(ds_x / ds_y - 1.0) < 0.05:
                        pages.append(page)
        pages.sort(key=lambda p: -int(p.imagewidth))
        return [p for i, p in enumerate(pages) if i == 0 or p.imagewidth != pages[i - 1].imagewidth]

    @property
    def width(self) -> int:
        return self.levels[0].width

    @property
    def height(self) -> int:
        return self.levels[0].height

    def close(self) -> None:
        """Close the file handle."""
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def level_for(self, mpp: float) -> Level:
        """The coarsest level whose mpp does not exceed `mpp` (+2.5 %): downsampling from it loses nothing."""
        if not mpp > 0:
            raise InputError(f"{self.path}: mpp must be positive, got {mpp}")
        fitting = [lv for lv in self.levels if lv.mpp <= mpp * (1 + MPP_TOLERANCE)]
        return fitting[-1] if fitting else self.levels[0]

    def window(self, x: float, y: float, size: int, mpp: float, height: int | None = None) -> Window:
        """A size x height patch at `mpp` with level-0 top-left (x, y), snapped to a level's grid when one is within 2.5 %."""
        out_h = size if height is None else height
        level = self.level_for(mpp)
        if abs(level.mpp / mpp - 1.0) <= MPP_TOLERANCE:
            lx, ly = math.floor(x / level.downsample_x + 0.5), math.floor(y / level.downsample_y + 0.5)  # half up
            return Window(lx * level.downsample_x, ly * level.downsample_y, size * level.downsample_x,
                          out_h * level.downsample_y, size, out_h, level.mpp)
        scale = mpp / self.mpp  # level-0 pixels per output pixel
        return Window(float(x), float(y), size * scale, out_h * scale, size, out_h, float(mpp))

    def window_level(self, window: Window) -> Level:
        """The level `read` uses for `window`."""
        return self.level_for(window.mpp)

    def read(self, window: Window, resample: str = "lanczos", pad: bool = False, fill: int = 255) -> np.ndarray:
        """The window as (out_height, out_width, samples) uint8, read from `window_level` and resampled if needed."""
        if resample not in ("lanczos", "nearest"):
            raise ValueError(f"resample must be 'lanczos' or 'nearest', got {resample!r}")
        level = self.window_level(window)
        bx, by = window.x / level.downsample_x, window.y / level.downsample_y
        bw, bh = window.width / level.downsample_x, window.height / level.downsample_y
        eps = 1e-6
        ix0, iy0 = math.floor(bx + eps), math.floor(by + eps)
        ix1, iy1 = math.ceil(bx + bw - eps), math.ceil(by + bh - eps)
        region = self.read_level(level.index, ix0, iy0, ix1 - ix0, iy1 - iy0, pad=pad, fill=fill)
        aligned = max(abs(bx - ix0), abs(by - iy0), abs(bx + bw - ix1), abs(by + bh - iy1)) < 1e-6
        if aligned and (ix1 - ix0, iy1 - iy0) == (window.out_width, window.out_height):
            return region
        return _resize(region, (bx - ix0, by - iy0, bx - ix0 + bw, by - iy0 + bh), window.out_width, window.out_height, resample)

    def read_level(self, level: int, x: int, y: int, width: int, height: int, pad: bool = False, fill: int = 255) -> np.ndarray:
        """Pixels [y, y+height) x [x, x+width) of level `level` as (height, width, samples) uint8, decoding only overlapping tiles."""
        if not 0 <= level < len(self.levels):
            raise WSIError(f"{self.path}: no level {level} (the slide has levels 0..{len(self.levels) - 1})")
        if width < 1 or height < 1:
            raise WSIError(f"{self.path}: empty region {width}x{height} requested at level {level}")
        lv = self.levels[level]
        inside = x >= 0 and y >= 0 and x + width <= lv.width and y + height <= lv.height
        cx0, cy0, cx1, cy1 = max(x, 0), max(y, 0), min(x + width, lv.width), min(y + height, lv.height)
        where = f"region x={x}, y={y}, {width}x{height} at level {level}"
        if not inside and (not pad or cx0 >= cx1 or cy0 >= cy1):
            raise WSIError(f"{self.path}: {where} lies {'partly ' if cx0 < cx1 and cy0 < cy1 else ''}outside the slide "
                           f"({lv.width}x{lv.height} at that level)")
        if inside:
            return self._read_page(self._pages[level], x, y, width, height, where, fill)
        out = np.full((height, width, self.samples), fill, dtype=np.uint8)
        out[cy0 - y : cy1 - y, cx0 - x : cx1 - x] = self._read_page(self._pages[level], cx0, cy0, cx1 - cx0, cy1 - cy0, where, fill)
        return out

    def _read_page(self, page, x: int, y: int, width: int, height: int, where: str, fill: int) -> np.ndarray:
        """Decode the tiles/strips of `page` overlapping the rectangle and assemble it (`fill` where a tile is absent)."""
        spp = int(page.samplesperpixel)
        separate = page.planarconfig == 2 and spp > 1
        if page.is_tiled:
            if page.imagedepth > 1:
                raise WSIError(f"{self.path}: 3-D tiled pages are not supported")
            seg_h, seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            seg_h, seg_w = min(int(page.rowsperstrip) or int(page.imagelength), int(page.imagelength)), int(page.imagewidth)
        across = math.ceil(page.imagewidth / seg_w)
        per_plane = across * math.ceil(page.imagelength / seg_h)
        rows = range(y // seg_h, (y + height - 1) // seg_h + 1)
        cols = range(x // seg_w, (x + width - 1) // seg_w + 1)
        planes = range(spp) if separate else range(1)
        kwargs: dict = {"_fullsize": bool(page.is_tiled)}
        if page.compression in _JPEG_COMPRESSIONS:
            kwargs["jpegtables"] = page.jpegtables
            kwargs["jpegheader"] = page.jpegheader
        decode = page.decode
        fh = self._tif.filehandle
        out = np.full((height, width, spp), fill, dtype=np.uint8)
        for plane in planes:
            for r in rows:
                for c in cols:
                    index = plane * per_plane + r * across + c
                    offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
                    data = None
                    if offset and count:
                        with fh.lock:
                            fh.seek(offset)
                            data = fh.read(count)
                    try:
                        segment, (s, _, sy, sx, _), _ = decode(data, index, **kwargs)
                    except Exception as err:
                        raise WSIError(f"{self.path}: cannot decode {'tile' if page.is_tiled else 'strip'} {index} of the "
                                       f"{page.imagewidth}x{page.imagelength} page for {where} ({type(err).__name__}: {err})") from err
                    if segment is None:
                        continue
                    segment = segment[0]  # (length, width, contig samples)
                    top, left = max(sy, y), max(sx, x)
                    bottom, right = min(sy + segment.shape[0], y + height), min(sx + segment.shape[1], x + width)
                    if top >= bottom or left >= right:
                        continue
                    block = segment[top - sy : bottom - sy, left - sx : right - sx]
                    if separate:
                        out[top - y : bottom - y, left - x : right - x, s] = block[..., 0]
                    else:
                        out[top - y : bottom - y, left - x : right - x] = block.reshape(bottom - top, right - left, spp)
        return out


def _resize(region: np.ndarray, box: tuple[float, float, float, float], width: int, height: int, resample: str) -> np.ndarray:
    """Resample the `box` (x0, y0, x1, y1, edge coordinates) of a uint8 (H, W, C) region to (height, width, C), per channel."""
    from PIL import Image

    method = Image.Resampling.LANCZOS if resample == "lanczos" else Image.Resampling.NEAREST
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(region[:, :, c])).resize((width, height), method, box=box))
                for c in range(region.shape[2])]
    return np.stack(channels, axis=2)


def luminance(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an RGB uint8 image as float32 (first channel for one-channel images)."""
    if image.ndim == 3 and image.shape[2] >= 3:
        return image[:, :, :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (image[:, :, 0] if image.ndim == 3 else image).astype(np.float32)


def tissue_threshold(thumbnail: np.ndarray) -> float:
    """Luminance below which a pixel is tissue: Otsu on the slide thumbnail, clamped to 180..225 so an all-glass or
    all-tissue slide does not split itself in two."""
    from skimage.filters import threshold_otsu

    lum = luminance(thumbnail)
    lo, hi = TISSUE_THRESHOLD_RANGE
    if lum.size == 0 or float(lum.max() - lum.min()) < 1.0:
        return hi
    return float(np.clip(threshold_otsu(lum), lo, hi))


def tissue_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean tissue mask: luminance below `threshold` (and above `DARK_LIMIT`), then a 3x3 opening (drops dust
    specks) and closing (fills pinholes); square elements with edge replication keep straight borders and patch
    edges intact."""
    from scipy import ndimage

    lum = luminance(image)
    mask = ((lum < threshold) & (lum > DARK_LIMIT)).astype(np.uint8)
    mask = ndimage.grey_opening(mask, size=(3, 3), mode="nearest")
    mask = ndimage.grey_closing(mask, size=(3, 3), mode="nearest")
    return mask.astype(bool)


class TissueMap:
    """A slide's low-resolution tissue mask and threshold, for choosing tiles and labeling glass vs tissue."""

    def __init__(self, slide: Slide, tile_footprint: float) -> None:
        """Pick the coarsest level with at least `THUMBNAIL_PIXELS_PER_TILE` pixels across a tile of `tile_footprint` level-0 px."""
        candidates = [lv for lv in slide.levels if lv.downsample_x <= tile_footprint / THUMBNAIL_PIXELS_PER_TILE]
        level = candidates[-1] if candidates else slide.levels[0]
        if level.width * level.height > MAX_THUMBNAIL_PIXELS:
            small = [lv for lv in slide.levels if lv.width * lv.height <= MAX_THUMBNAIL_PIXELS]
            if not small:
                raise WSIError(f"{slide.path}: no pyramid level of at most {MAX_THUMBNAIL_PIXELS} pixels for the tissue mask "
                               f"(smallest: {slide.levels[-1].width}x{slide.levels[-1].height}); is the slide a pyramid?")
            level = small[0]
        self.level = level
        thumbnail = slide.read_level(level.index, 0, 0, level.width, level.height)
        self.threshold = tissue_threshold(thumbnail)
        self.mask = tissue_mask(thumbnail, self.threshold)

    def fraction(self, window: Window) -> float:
        """Tissue fraction of the mask pixels under `window`."""
        lv = self.level
        x0, y0 = int(window.x / lv.downsample_x), int(window.y / lv.downsample_y)
        x1 = max(x0 + 1, math.ceil((window.x + window.width) / lv.downsample_x))
        y1 = max(y0 + 1, math.ceil((window.y + window.height) / lv.downsample_y))
        cell = self.mask[y0:y1, x0:x1]
        return float(cell.mean()) if cell.size else 0.0


def grid_windows(slide: Slide, size: int, mpp: float, stride: int | None = None) -> Iterator[Window]:
    """Row-major windows of size x size output pixels at `mpp`, `stride` output pixels apart, lying inside the slide."""
    step = (stride or size) * mpp / slide.mpp  # level-0 pixels between tiles
    probe = slide.window(0, 0, size, mpp)
    for row in range(max(0, math.floor((slide.height - probe.height) / step + 1e-9) + 1)):
        for col in range(max(0, math.floor((slide.width - probe.width) / step + 1e-9) + 1)):
            window = slide.window(col * step, row * step, size, mpp)
            if window.x + window.width <= slide.width + 1e-6 and window.y + window.height <= slide.height + 1e-6:
                yield window


def tissue_windows(slide: Slide, size: int, mpp: float, stride: int | None, min_tissue: float,
                   skipped: Counter[str] | None = None) -> tuple[TissueMap, Iterator[Window]]:
    """The slide's TissueMap and the grid windows with at least `min_tissue` tissue on it; `skipped` counts the
    tiles dropped as glass and the slides too small for one tile (to explain an empty result)."""
    tissue = TissueMap(slide, size * mpp / slide.mpp)
    skipped = Counter() if skipped is None else skipped

    def kept() -> Iterator[Window]:
        grid = 0
        for window in grid_windows(slide, size, mpp, stride):
            grid += 1
            if tissue.fraction(window) >= min_tissue:
                yield window
            else:
                skipped[f"tile(s) dropped as glass (tissue fraction below --min-tissue={min_tissue:g})"] += 1
        if grid == 0:
            skipped[f"slide(s) smaller than one {size} px tile at {mpp:g} um/px"] += 1

    return tissue, kept()


def check_slide_args(name: str, size: int, mpp: float, stride: int | None, min_tissue: float, n: int | None) -> None:
    """Reject impossible tiling options with a message naming the source."""
    if size < 1:
        raise InputError(f"{name}: size must be a positive number of pixels, got {size}")
    if not mpp > 0:
        raise InputError(f"{name}: mpp must be positive, got {mpp}")
    if stride is not None and stride < 1:
        raise InputError(f"{name}: stride must be a positive number of pixels, got {stride}")
    if not 0.0 <= min_tissue <= 1.0:
        raise InputError(f"{name}: min_tissue is a fraction in 0..1, got {min_tissue}")
    if n is not None and n < 0:
        raise InputError(f"{name}: n must be >= 0, got {n}")
