"""`folder`: a directory of plain image files, optionally with tissue-id masks; plus the plain-file helpers
that the patch-dataset readers (pannuke, lizard, consep, monusac) share.

Format: `path` holds images (.png, .jpg/.jpeg, .tif/.tiff; only the folder itself, not sub-folders, so a
`masks` folder inside it is not mistaken for images). With `masks`, every image `<stem>.<ext>` needs a mask
`<masks>/<stem>.<png|tif|tiff>`: one channel (8-bit grayscale or palette indices) whose values are tissue ids
of the class schema named by `schema` (ids of that schema plus 255 = ignore; anything else is an error naming
the mask file). Without masks the samples are unannotated (tissue None: "not labeled").

Id mapping: none; the masks already hold `schema` ids. Images are converted to RGB uint8 (alpha dropped,
grayscale expanded); 16-bit or float images are refused rather than guessed at.

License: whatever the user's images carry; the source records "user-supplied" and leaves it to the user.

Patches: `size=None` yields each image whole; with `size`, a grid of size x size tiles at `stride` (default
`size`) that covers the image edge to edge (the last row/column of tiles is moved flush with the border, so
tiles may overlap there; images smaller than `size` yield no tile and are counted in `skipped`). A folder
without any image file is an error. Provenance x, y are the tile's top-left
pixel in the image, level 0, and mpp is the `mpp` the user declares for the images (None if not given: no
resampling happens here).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np

from histosynth.classes import get_schema
from histosynth.errors import InputError
from histosynth.schema import Provenance, Sample
from histosynth.sources.base import Source, SourceMeta

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MASK_SUFFIXES = (".png", ".tif", ".tiff")
MPP_TOLERANCE = 0.025

T = TypeVar("T")


class FormatError(InputError):
    """An input file is missing or malformed; the message starts with the file and says what is wrong."""


def format_error(path: Path | str, problem: str) -> FormatError:
    """`FormatError("<path>: <problem>")`."""
    return FormatError(f"{path}: {problem}")


def require_folder(path: Path, expected: str) -> Path:
    """`path` if it is a folder; else a FormatError saying whether it is missing or a file, and what belongs there."""
    if not path.is_dir():
        raise format_error(path, f"{'not a folder' if path.exists() else 'no such folder'} (expected {expected})")
    return path


def take(items: Iterable[T], n: int | None) -> Iterator[T]:
    """The first `n` items (all when n is None), lazily."""
    return iter(items) if n is None else islice(items, n)


def check_count(name: str, n: int | None) -> None:
    """Reject a negative sample limit."""
    if n is not None and n < 0:
        raise InputError(f"{name}: n must be >= 0, got {n}")


def check_native_mpp(name: str, mpp: float | None, native: float) -> None:
    """Patch datasets are served at their native resolution: refuse a different requested mpp instead of ignoring it."""
    if mpp is not None and abs(mpp / native - 1.0) > MPP_TOLERANCE:
        raise InputError(f"{name}: the dataset is at {native} um/px and this reader does not resample nuclei labels; "
                         f"got mpp={mpp} (leave mpp unset or pass {native})")


def check_tile_args(name: str, size: int | None, stride: int | None) -> None:
    """Reject tile sizes and strides below 1."""
    if size is not None and size < 1:
        raise InputError(f"{name}: size must be a positive number of pixels, got {size}")
    if stride is not None and stride < 1:
        raise InputError(f"{name}: stride must be a positive number of pixels, got {stride}")


def cover_positions(length: int, size: int, stride: int) -> list[int]:
    """Tile starts 0, stride, ... plus a last one flush with the end, so size-long tiles cover 0..length."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def tile_corners(height: int, width: int, size: int | None, stride: int | None = None) -> list[tuple[int, int, int, int]]:
    """(top, left, tile height, tile width) of the tiles of an image: the whole image when size is None."""
    if size is None:
        return [(0, 0, height, width)]
    step = stride or size
    return [(top, left, size, size) for top in cover_positions(height, size, step) for left in cover_positions(width, size, step)]


def too_small(size: int | None) -> str:
    """The `skipped` reason for images that hold no whole tile."""
    return f"image(s) smaller than the {size} px tile size (--size)"


def _as_rgb(array: np.ndarray, path: Path) -> np.ndarray:
    if array.dtype != np.uint8:
        raise format_error(path, f"expected an 8-bit image, got dtype {array.dtype}")
    if array.ndim == 2:
        return np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return np.ascontiguousarray(array[:, :, :3])
    if array.ndim == 3 and array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    raise format_error(path, f"expected an RGB image (H, W, 3), got shape {array.shape}")


def read_rgb(path: Path | str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of a png/jpg (Pillow) or tif/svs (tifffile, first page) file; alpha is dropped."""
    path = Path(path)
    if not path.is_file():
        raise format_error(path, "image file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".svs"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                array = tif.pages[0].asarray()
        else:
            from PIL import Image

            with Image.open(path) as image:
                if image.mode in ("I;16", "I;16B", "I", "F"):
                    raise format_error(path, f"expected an 8-bit image, got Pillow mode {image.mode}")
                array = np.asarray(image.convert("RGB"))
    except FormatError:
        raise
    except Exception as err:  # Pillow/tifffile/imagecodecs raise many types on damaged files
        raise format_error(path, f"cannot read the image ({type(err).__name__}: {err})") from err
    return _as_rgb(array, path)


def image_size(path: Path | str) -> tuple[int, int]:
    """(height, width) of an image file from its header only (Pillow, or tifffile for tif/svs)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff", ".svs"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        from PIL import Image

        with Image.open(path) as image:
            return image.height, image.width
    except Exception as err:
        raise format_error(path, f"cannot read the image header ({type(err).__name__}: {err})") from err


def read_label_image(path: Path | str) -> np.ndarray:
    """A one-channel uint8 label image (grayscale or palette indices) as (H, W); RGB masks are refused."""
    path = Path(path)
    if not path.is_file():
        raise format_error(path, "mask file not found")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                array = tif.pages[0].asarray()
        else:
            from PIL import Image

            with Image.open(path) as image:
                if image.mode not in ("L", "P"):
                    raise format_error(path, f"expected a one-channel 8-bit mask (Pillow mode L or P), got mode {image.mode}")
                array = np.asarray(image)
    except FormatError:
        raise
    except Exception as err:
        raise format_error(path, f"cannot read the mask ({type(err).__name__}: {err})") from err
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim != 2 or array.dtype != np.uint8:
        raise format_error(path, f"expected a one-channel uint8 mask, got {array.dtype} of shape {array.shape}")
    return array


def load_mat(path: Path | str, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `keys` of a MATLAB .mat file (scipy.io.loadmat); missing file, bad file or missing keys raise FormatError."""
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise format_error(path, ".mat file not found")
    try:
        content = loadmat(path)
    except Exception as err:  # scipy raises ValueError/TypeError/MatReadError on damaged files
        raise format_error(path, f"cannot read the .mat file ({type(err).__name__}: {err})") from err
    missing = [k for k in keys if k not in content]
    if missing:
        present = sorted(k for k in content if not k.startswith("__"))
        raise format_error(path, f"missing key(s) {missing} (keys present: {present})")
    return {k: np.asarray(content[k]) for k in keys}


def integer_array(path: Path | str, key: str, array: np.ndarray, ndim: int) -> np.ndarray:
    """`array` as int64 after checking its dimensions and that every value is a whole number >= 0."""
    if array.ndim != ndim:
        raise format_error(path, f"{key}: expected {ndim} dimensions, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating) or array.dtype == np.bool_):
        raise format_error(path, f"{key}: expected numbers, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or (array != np.floor(array)).any():
            raise format_error(path, f"{key}: expected whole numbers, found non-integral or non-finite values")
    if array.min() < 0:
        raise format_error(path, f"{key}: negative value {array.min()}")
    return array.astype(np.int64)


def column(path: Path | str, key: str, array: np.ndarray) -> np.ndarray:
    """An (N, 1) or (N,) .mat column as an int64 vector."""
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim == 2 and array.shape == (1, 0):
        array = array.reshape(0)
    if array.ndim != 1:
        raise format_error(path, f"{key}: expected shape (N, 1), got {array.shape}")
    return integer_array(path, key, array, 1)


class FolderSource(Source):
    """Images of a folder, whole or tiled, with optional tissue-id masks of a named schema."""

    meta = SourceMeta(
        name="folder",
        description="a folder of png/jpg/tif images, optionally with same-stem uint8 tissue-id masks of a chosen schema",
        license="user-supplied",
        citation="",
    )

    def __init__(self, path: str | Path, masks: str | Path | None = None, schema: str | None = None, size: int | None = None,
                 stride: int | None = None, n: int | None = None, mpp: float | None = None) -> None:
        """Images in `path`; masks (same stem) in `masks`, holding ids of tissue schema `schema`; `mpp` is only recorded."""
        self.path = require_folder(Path(path), "a folder of images")
        check_tile_args("folder", size, stride)
        check_count("folder", n)
        if mpp is not None and not mpp > 0:
            raise InputError(f"folder: mpp must be positive, got {mpp}")
        self.masks = Path(masks) if masks is not None else None
        if self.masks is not None:
            if not self.masks.is_dir():
                raise format_error(self.masks, "masks folder not found")
            if schema is None:
                raise InputError("folder: masks need a schema (the tissue class schema their ids belong to, e.g. camelyon16)")
        elif schema is not None:
            raise InputError(f"folder: schema={schema!r} given but no masks folder")
        if schema is not None:
            found = get_schema(schema)
            if found.kind != "tissue":
                raise InputError(f"folder: schema {schema!r} is a {found.kind} schema; masks hold tissue ids")
        self.schema = schema
        self.size, self.stride, self.n, self.mpp = size, stride, n, mpp
        self.meta = replace(type(self).meta, tissue_schema=schema)
        self.images = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.images:
            raise format_error(self.path, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder (sub-folders are not searched)")

    def _mask_path(self, image: Path) -> Path:
        assert self.masks is not None
        for suffix in MASK_SUFFIXES:
            candidate = self.masks / f"{image.stem}{suffix}"
            if candidate.is_file():
                return candidate
        raise format_error(image, f"no mask {image.stem}{{{','.join(MASK_SUFFIXES)}}} in {self.masks}")

    def __len__(self) -> int:
        total = sum(len(tile_corners(*image_size(image), self.size, self.stride)) for image in self.images)
        return total if self.n is None else min(total, self.n)

    def _samples(self) -> Iterator[Sample]:
        valid = get_schema(self.schema).valid_ids() if self.schema else set()
        for image_path in self.images:
            image = read_rgb(image_path)
            mask = None
            if self.masks is not None:
                mask_path = self._mask_path(image_path)
                mask = read_label_image(mask_path)
                if mask.shape != image.shape[:2]:
                    raise format_error(mask_path, f"mask shape {mask.shape} does not match image {image_path.name} {image.shape[:2]}")
                unknown = sorted(set(np.unique(mask).tolist()) - valid)
                if unknown:
                    raise format_error(mask_path, f"values {unknown} are not ids of schema {self.schema!r} (valid: {sorted(valid)})")
            corners = tile_corners(image.shape[0], image.shape[1], self.size, self.stride)
            if not corners:
                self.skipped[too_small(self.size)] += 1
            for top, left, h, w in corners:
                yield Sample(
                    image=np.ascontiguousarray(image[top : top + h, left : left + w]),
                    provenance=Provenance("folder", image_path.stem, x=left, y=top, level=0, mpp=self.mpp),
                    tissue=None if mask is None else np.ascontiguousarray(mask[top : top + h, left : left + w]),
                    tissue_schema=self.schema,
                )

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
