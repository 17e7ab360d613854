"""`embedded`: the real CC0 H&E region CMU-1-Small-Region, shipped inside the package.

The SVS file (JPEG tiles, needs `imagecodecs`) is read with tifffile, resampled once to the requested
magnification, cut into a grid of patches, and tiles that are mostly background are dropped by an Otsu
tissue mask on luminance. Provenance x/y are level-0 pixels of the region (add (42673, 5576) for CMU-1
coordinates); see assets/CMU-1-Small-Region.NOTICE.md for origin and license.

Spatial split (`part`): the region's rows are cut once at `train_fraction` of its height; "train" tiles lie wholly
above the cut and "held-out" tiles wholly below it (tiles straddling it are dropped), so no pixel of a held-out
patch is in any training patch, whatever the strides of the two parts.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.errors import InputError
from histosynth.schema import Provenance, Sample
from histosynth.sources.base import Source, SourceMeta

SLIDE_ID = "CMU-1-Small-Region"
NATIVE_MPP = 0.499


def slide_path() -> Path:
    """Path of the shipped SVS file."""
    return Path(str(resources.files("histosynth") / "assets" / "cmu_small_region.svs"))


@lru_cache(maxsize=1)
def read_region() -> tuple[np.ndarray, float]:
    """The full-resolution region as (H, W, 3) uint8 and its microns per pixel (from the SVS description)."""
    import tifffile

    path = slide_path()
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            image = page.asarray()
            match = re.search(r"MPP\s*=\s*([0-9.]+)", page.description or "")
    except Exception as err:  # tifffile/imagecodecs raise many types on damaged files
        raise InputError(f"{path}: cannot read the embedded slide region ({err}); is imagecodecs installed?") from err
    image.setflags(write=False)
    return image, float(match.group(1)) if match else NATIVE_MPP


PARTS = ("train", "held-out")


def split_row(height: int, train_fraction: float) -> int:
    """The row where the training part ends and the held-out part begins (rows above it are training rows)."""
    return int(round(height * train_fraction))


MASK_STEP = 4  # the tissue mask is computed on every 4th pixel: plenty for tile selection, 16x cheaper
MPP_TOLERANCE = 0.025  # closer than this to the native mpp: no resampling, provenance records the native mpp


def tissue_mask(image: np.ndarray) -> np.ndarray:
    """Boolean tissue mask: Otsu threshold on smoothed luminance (tissue is darker than the glass), then a
    closing so pale tissue between stained structures counts too. No hole filling: tears are glass."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    luminance = ndimage.gaussian_filter(image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32), 2.0)
    mask = luminance < threshold_otsu(luminance)
    mask = ndimage.binary_closing(mask, iterations=3)
    return ndimage.binary_opening(mask, iterations=2)


def resample(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize by `scale` with an antialiased Lanczos filter (identity when scale is 1)."""
    if abs(scale - 1.0) < 1e-9:
        return image
    from PIL import Image

    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))


class EmbeddedSource(Source):
    """Patches of the shipped CMU-1-Small-Region at a chosen size and magnification."""

    meta = SourceMeta(
        name="embedded",
        description="CMU-1-Small-Region: real H&E (Aperio, 20x), 2220x2967 px, shipped with histosynth",
        license="CC0-1.0",
        url="http://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/",
        citation="OpenSlide test data, Carnegie Mellon University (CMU-1.svs)",
        native_mpp=NATIVE_MPP,
        pseudolabel_by_default=True,
    )

    def __init__(self, size: int = 256, mpp: float = 0.5, min_tissue: float = 0.5, n: int | None = None,
                 stride: int | None = None, part: str | None = None, train_fraction: float = 0.7) -> None:
        """`size` px patches at `mpp` um/px every `stride` px, keeping tiles with at least `min_tissue` tissue; at
        most `n` of them; with `part` ("train" or "held-out") only that side of the spatial split."""
        if size < 16:
            raise InputError(f"embedded: size must be at least 16 px, got {size}")
        if not 0.1 <= mpp <= 16:
            raise InputError(f"embedded: mpp must be within 0.1..16 um/px, got {mpp}")
        if not 0.0 <= min_tissue <= 1.0:
            raise InputError(f"embedded: min_tissue is a fraction in 0..1, got {min_tissue}")
        if n is not None and n < 0:
            raise InputError(f"embedded: n must be >= 0, got {n}")
        if stride is not None and stride < 1:
            raise InputError(f"embedded: stride must be >= 1 px, got {stride}")
        if part not in (None, *PARTS):
            raise InputError(f"embedded: part must be one of {', '.join(PARTS)}, got {part!r}")
        if not 0.0 < train_fraction < 1.0:
            raise InputError(f"embedded: train_fraction must be within (0, 1), got {train_fraction}")
        self.size, self.mpp, self.min_tissue, self.n = size, mpp, min_tissue, n
        self.stride = stride or size
        self.part, self.train_fraction = part, train_fraction
        self._grid: tuple[np.ndarray, float, float, list[tuple[int, int]]] | None = None

    def _tiles(self) -> tuple[np.ndarray, float, float, list[tuple[int, int]]]:
        """(resampled image, scale, actual mpp, kept tile corners), computed once per source."""
        if self._grid is None:
            region, native_mpp = read_region()
            scale = native_mpp / self.mpp
            if abs(scale - 1.0) <= MPP_TOLERANCE:
                scale, actual_mpp = 1.0, native_mpp
            else:
                actual_mpp = self.mpp
            image = resample(region, scale)
            mask = tissue_mask(image[::MASK_STEP, ::MASK_STEP])
            h, w = image.shape[:2]
            if h < self.size or w < self.size:
                raise InputError(f"embedded: the region is {w}x{h} px at {self.mpp} um/px, smaller than one {self.size} px patch")
            keep = []
            cell = -(-self.size // MASK_STEP)
            first, last = self._part_rows(h)
            for top in range(first, last - self.size + 1, self.stride):
                for left in range(0, w - self.size + 1, self.stride):
                    window = mask[top // MASK_STEP : top // MASK_STEP + cell, left // MASK_STEP : left // MASK_STEP + cell]
                    if window.mean() >= self.min_tissue:
                        keep.append((top, left))
            self._grid = (image, scale, actual_mpp, keep[: self.n] if self.n is not None else keep)
        return self._grid

    def _part_rows(self, height: int) -> tuple[int, int]:
        if self.part is None:
            return 0, height
        cut = split_row(height, self.train_fraction)
        return (0, cut) if self.part == "train" else (cut, height)

    def rows(self) -> tuple[int, int]:
        """[first, last) rows of the resampled region that this source's part covers (all rows without a part)."""
        return self._part_rows(self._tiles()[0].shape[0])

    def tile_boxes(self) -> list[tuple[int, int]]:
        """(top, left) of every kept tile, in pixels of the resampled region (`region()`)."""
        return list(self._tiles()[3])

    def region(self) -> np.ndarray:
        """This part's rows of the region at the source's magnification (tile boxes index the full region)."""
        first, last = self.rows()
        return self._tiles()[0][first:last]

    def __len__(self) -> int:
        return len(self._tiles()[3])

    def __iter__(self) -> Iterator[Sample]:
        image, scale, actual_mpp, tiles = self._tiles()
        for top, left in tiles:
            patch = np.ascontiguousarray(image[top : top + self.size, left : left + self.size])
            yield Sample(
                image=patch,
                provenance=Provenance(source="embedded", slide_id=SLIDE_ID, x=round(left / scale), y=round(top / scale), level=0, mpp=actual_mpp),
            )
