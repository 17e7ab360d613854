"""`pannuke`: PanNuke nuclei patches (256 x 256, 19 tissues, 3 folds) from the released .npy files.

Format (per fold; the release nests them as `Fold 1/images/fold1/{images,types}.npy` and
`Fold 1/masks/fold1/masks.npy`, any nesting works):
- `images.npy` (N, H, W, 3), float64 holding 0..255 in the release (uint8 also accepted): checked to lie in
  0..255 and rounded to uint8 per patch; a patch lying wholly in 0..1 (a 0..1 float scale) is refused;
- `masks.npy` (N, H, W, 6): channels 0 Neoplastic, 1 Inflammatory, 2 Connective/Soft tissue, 3 Dead,
  4 Epithelial, 5 Background; channels 0..4 hold INSTANCE ids (0 = none), numbered per channel. An id whose
  pixels form several 8-connected blobs (a binary per-class mask) is refused; `label_components=True`
  (`--label-components`) instead makes each blob its own nucleus;
- `types.npy` (N,): the tissue name of each patch.
The three are opened memory-mapped (`np.load(mmap_mode="r")`): only the patch being yielded is read.
Folds are found under `path` by file name and paired by their folder path with `images`/`masks` removed;
they are read in sorted order.

Id mapping (schema `pannuke`, npy channel order): channel c (0..4) -> class id c + 1, so an instance in
channel 1 is inflammatory (id 2); the background channel is ignored. The five channels are merged into one
instance map (a pixel claimed by several channels keeps the lowest channel) and relabeled 1..n with exact
centroids by `Nuclei.from_instance_map`. PanNuke has no tissue map (tissue None).

Provenance: source "pannuke", slide_id "<tissue>/<fold>/<index>" (e.g. "Breast/fold1/42": PanNuke gives no
slide ids, so the tissue type and the patch's position in its fold stand in), x/y/level None, mpp 0.25.

Resolution: 0.25 um/px (40x) is what the PanNuke papers state for the release; some source images were
scanned at 20x and upsampled, so treat 0.25 as nominal (no source we found states the mpp per image: UNCERTAIN).

License: CC BY-NC-SA 4.0 (Gamper et al., "PanNuke Dataset Extension, Insights and Baselines", arXiv:2003.10778).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from histosynth.schema import Nuclei, Provenance, Sample
from histosynth.sources.base import Source, SourceMeta
from histosynth.sources.folder import check_count, check_native_mpp, format_error, require_folder, take

NATIVE_MPP = 0.25
NUCLEUS_CHANNELS = 5
MASK_CHANNELS = 6
FILES = ("images.npy", "masks.npy", "types.npy")


def _fold_key(path: Path, root: Path) -> tuple[str, ...]:
    """The folder of a fold file relative to `root`, without the `images`/`masks` level that separates the three files."""
    return tuple(part for part in path.parent.relative_to(root).parts if part.lower() not in ("images", "masks"))


def find_folds(root: Path) -> list[tuple[str, dict[str, Path]]]:
    """[(fold label, {file name: path})] for every fold under `root`, each with all three files."""
    groups: dict[tuple[str, ...], dict[str, Path]] = {}
    for name in FILES:
        for path in sorted(root.rglob(name)):
            files = groups.setdefault(_fold_key(path, root), {})
            if name in files:
                raise format_error(path, f"two {name} files belong to the same fold (the other is {files[name]})")
            files[name] = path
    if not groups:
        raise format_error(root, "no PanNuke fold found (expected images.npy, masks.npy and types.npy)")
    folds = []
    for key in sorted(groups):
        files = groups[key]
        missing = [n for n in FILES if n not in files]
        if missing:
            where = next(iter(files.values())).parent
            raise format_error(where, f"PanNuke fold {'/'.join(key) or root.name!r} lacks {missing}")
        folds.append((key[-1] if key else root.name, files))
    return folds


def _load(path: Path, mmap: bool) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise format_error(path, "holds pickled Python objects; only plain arrays are read") from None
        raise format_error(path, f"not a readable .npy array, truncated or damaged? ({err})") from None
    except (OSError, EOFError) as err:
        raise format_error(path, f"cannot read the .npy file ({err})") from None


def open_fold(files: dict[str, Path]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Memory-mapped images and masks and the tissue names of one fold, after checking shapes and dtypes."""
    images, masks = _load(files["images.npy"], True), _load(files["masks.npy"], True)
    types = _load(files["types.npy"], False)
    if images.ndim != 4 or images.shape[3] != 3:
        raise format_error(files["images.npy"], f"expected shape (N, H, W, 3), got {images.shape}")
    if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
        raise format_error(files["images.npy"], f"expected numeric pixels, got dtype {images.dtype}")
    if masks.ndim != 4 or masks.shape[3] != MASK_CHANNELS:
        raise format_error(files["masks.npy"], f"expected shape (N, H, W, {MASK_CHANNELS}), got {masks.shape}")
    if masks.shape[:3] != images.shape[:3]:
        raise format_error(files["masks.npy"], f"shape {masks.shape} does not match images.npy {images.shape}")
    if not (np.issubdtype(masks.dtype, np.integer) or np.issubdtype(masks.dtype, np.floating)):
        raise format_error(files["masks.npy"], f"expected numeric instance ids, got dtype {masks.dtype}")
    if types.ndim != 1 or len(types) != len(images):
        raise format_error(files["types.npy"], f"expected one tissue name per patch, shape ({len(images)},), got {types.shape}")
    if types.dtype.kind not in "US":
        raise format_error(files["types.npy"], f"expected tissue names (strings), got dtype {types.dtype}")
    names = [t.decode() if isinstance(t, bytes) else str(t) for t in types.tolist()]
    return images, masks, names


def patch_to_uint8(patch: np.ndarray, path: Path, index: int) -> np.ndarray:
    """A PanNuke image patch as uint8: values must be finite and within 0..255 (floats are rounded).

    A patch whose values all lie in 0..1 is refused: that is a 0..1 float scale (rounding it gives a black
    patch), or an image with no signal; an H&E patch on the 0..255 scale is never that dark everywhere.
    """
    values = np.asarray(patch) if patch.dtype == np.uint8 else np.asarray(patch, dtype=np.float64)
    if values.dtype != np.uint8 and not np.isfinite(values).all():
        raise format_error(path, f"patch {index}: non-finite pixel values")
    lo, hi = float(values.min()), float(values.max())
    if lo < 0 or hi > 255:
        raise format_error(path, f"patch {index}: pixel values {lo:g}..{hi:g} lie outside 0..255")
    if hi <= 1.0:
        raise format_error(path, f"patch {index}: pixel values {lo:g}..{hi:g} lie within 0..1; PanNuke images hold "
                           f"0..255 (a 0..1 float scale would round to a black patch): multiply the images by 255")
    return np.array(values) if values.dtype == np.uint8 else np.rint(values).astype(np.uint8)


def split_instances(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Every 8-connected component of each id as its own instance 1..n: (new map, n). Different ids stay apart."""
    from scipy import ndimage

    labels, n = ndimage.label(ids > 0, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return labels.astype(np.int64), 0
    pairs, dense = np.unique(np.stack([labels[ids > 0], ids[ids > 0]]), axis=1, return_inverse=True)
    out = np.zeros(ids.shape, dtype=np.int64)
    out[ids > 0] = dense.reshape(-1) + 1
    return out, pairs.shape[1]


def fragmented_ids(ids: np.ndarray) -> list[int]:
    """Instance ids whose pixels form more than one 8-connected component (binary masks, merged nuclei)."""
    from scipy import ndimage

    labels, n = ndimage.label(ids > 0, structure=np.ones((3, 3), dtype=bool))
    if n < 2:
        return []
    pairs = np.unique(np.stack([labels[ids > 0], ids[ids > 0]]), axis=1)  # (component, id) pairs
    found, counts = np.unique(pairs[1], return_counts=True)
    return found[counts > 1].tolist()


def merge_channels(mask: np.ndarray, path: Path, index: int, label_components: bool = False) -> Nuclei:
    """One (H, W, 6) PanNuke mask as `pannuke` Nuclei: channel c -> class c + 1, instances merged and relabeled.

    An id spread over several separate blobs (a binary per-class mask instead of instance ids) is an error, or
    with `label_components` each blob becomes its own instance.
    """
    merged = np.zeros(mask.shape[:2], dtype=np.int64)
    class_of: dict[int, int] = {}
    offset = 0
    for channel in range(NUCLEUS_CHANNELS):
        values = np.asarray(mask[:, :, channel])
        if np.issubdtype(values.dtype, np.floating) and (not np.isfinite(values).all() or (values != np.floor(values)).any()):
            raise format_error(path, f"patch {index}, channel {channel}: instance ids must be whole numbers")
        ids = values.astype(np.int64)
        if ids.size and ids.min() < 0:
            raise format_error(path, f"patch {index}, channel {channel}: negative instance id {ids.min()}")
        if label_components:
            ids, _ = split_instances(ids)
        else:
            split = fragmented_ids(ids)
            if split:
                raise format_error(path, f"patch {index}, channel {channel}: instance id(s) {split[:5]} each cover several "
                                   f"separate blobs; PanNuke masks hold one id per nucleus (a binary per-class mask?); "
                                   f"pass --label-components to make each connected blob its own nucleus")
        claimed = (ids > 0) & (merged == 0)
        merged[claimed] = ids[claimed] + offset
        for value in np.unique(ids[ids > 0]).tolist():
            class_of[value + offset] = channel + 1
        offset += int(ids.max()) if ids.size else 0
    return Nuclei.from_instance_map("pannuke", merged, class_of)


class PanNukeSource(Source):
    """PanNuke patches with merged, classed nuclei instances, streamed from memory-mapped folds."""

    meta = SourceMeta(
        name="pannuke",
        description="PanNuke: 7,904 256x256 patches of 19 tissues with 205k classed nuclei instances (40x)",
        license="CC-BY-NC-SA-4.0",
        url="https://warwick.ac.uk/fac/cross_fac/tia/data/pannuke",
        citation="Gamper et al., PanNuke: an open pan-cancer histology dataset for nuclei instance segmentation and "
                 "classification, ECDP 2019; Gamper et al., PanNuke Dataset Extension, Insights and Baselines, arXiv:2003.10778",
        native_mpp=NATIVE_MPP,
        nuclei_schema="pannuke",
    )

    def __init__(self, path: str | Path, n: int | None = None, mpp: float | None = None, label_components: bool = False) -> None:
        """All folds under `path` (a fold folder or the PanNuke root); at most `n` patches.

        `label_components`: masks whose ids mark classes rather than nuclei (each id several blobs) are read by
        making every 8-connected blob of an id one nucleus (touching nuclei of one class then stay merged).
        """
        self.path = require_folder(Path(path), "a PanNuke fold or the folder holding the folds")
        self.label_components = bool(label_components)
        check_count("pannuke", n)
        check_native_mpp("pannuke", mpp, NATIVE_MPP)
        self.n = n
        self.folds = find_folds(self.path)

    def __len__(self) -> int:
        total = sum(len(open_fold(files)[0]) for _, files in self.folds)
        return total if self.n is None else min(total, self.n)

    def _samples(self) -> Iterator[Sample]:
        for label, files in self.folds:
            images, masks, tissues = open_fold(files)
            if len(images) == 0:
                self.skipped["empty fold(s) (0 patches in images.npy)"] += 1
            for i in range(len(images)):
                image = patch_to_uint8(images[i], files["images.npy"], i)
                nuclei = merge_channels(masks[i], files["masks.npy"], i, self.label_components)
                yield Sample(image=image, provenance=Provenance("pannuke", f"{tissues[i]}/{label}/{i}", mpp=NATIVE_MPP), nuclei=nuclei)

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
