"""Shared reader for nuclei datasets stored as (label file, image) pairs with an instance map (Lizard, CoNSeP,
MoNuSAC): argument checks, length, tiling and Sample assembly; each reader supplies how to pair and read files."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar, Iterator

import numpy as np

from histosynth.schema import Nuclei, Provenance, Sample
from histosynth.sources.base import Source
from histosynth.sources.folder import (
    check_count,
    check_native_mpp,
    check_tile_args,
    format_error,
    image_size,
    require_folder,
    take,
    tile_corners,
    too_small,
)


class InstanceTileSource(Source):
    """(label, image) pairs -> Samples of whole images or `size` px tiles `stride` apart, at most `n` of them."""

    expected: ClassVar[str]  # what `path` should hold, for the error when it is not a folder

    def __init__(self, path: str | Path, size: int | None, stride: int | None, n: int | None, mpp: float | None) -> None:
        name = self.meta.name
        self.path = require_folder(Path(path), self.expected)
        check_tile_args(name, size, stride)
        check_count(name, n)
        check_native_mpp(name, mpp, self.meta.native_mpp)
        self.size, self.stride, self.n = size, stride, n
        self.pairs = self.pair_files(self.path)

    @abstractmethod
    def pair_files(self, root: Path) -> list[tuple[Path, Path]]:
        """(label file, image file) pairs under `root`, in a stable order."""

    @abstractmethod
    def read_pair(self, label_path: Path, image_path: Path) -> tuple[np.ndarray, np.ndarray, dict[int, int] | np.ndarray]:
        """(RGB image, integer instance map, class of each instance id) for one pair."""

    def __len__(self) -> int:
        total = sum(len(tile_corners(*image_size(image), self.size, self.stride)) for _, image in self.pairs)
        return total if self.n is None else min(total, self.n)

    def _samples(self) -> Iterator[Sample]:
        schema = self.meta.nuclei_schema
        for label_path, image_path in self.pairs:
            image, inst, class_of = self.read_pair(label_path, image_path)
            if image.shape[:2] != inst.shape:
                raise format_error(label_path, f"instance map shape {inst.shape} does not match image {image_path.name} {image.shape[:2]}")
            corners = tile_corners(inst.shape[0], inst.shape[1], self.size, self.stride)
            if not corners:
                self.skipped[too_small(self.size)] += 1
            for top, left, h, w in corners:
                yield Sample(
                    image=np.ascontiguousarray(image[top : top + h, left : left + w]),
                    provenance=Provenance(self.meta.name, image_path.stem, x=left, y=top, level=0, mpp=self.meta.native_mpp),
                    nuclei=Nuclei.from_instance_map(schema, inst[top : top + h, left : left + w], class_of),
                )

    def __iter__(self) -> Iterator[Sample]:
        return take(self._samples(), self.n)
