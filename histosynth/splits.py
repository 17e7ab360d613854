"""Train/test splits of a dataset folder by slide or by region, never by patch.

A group is what may not straddle the split:
- `slide`: every patch of one slide (provenance source + slide_id);
- `region`: a square block of one slide, `region_size` level-0 pixels on a side, holding the patches whose top-left
  corner (provenance x, y) lies in it. Patches do not cross a block border when the tiling does not overlap and the
  block side is a multiple of the tile's level-0 extent (the simulator's 256 px tiles and the 2048 px default);
  with overlapping tiles (stride < size) neighboring blocks share a strip one tile wide at their border.
The groups are shuffled with `seed` and the test split takes the shortest prefix of them whose sample count comes
closest to `test_fraction` of the whole (at least one group on each side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from histosynth.errors import InputError

SPLIT_BY = ("slide", "region")
DEFAULT_REGION_SIZE = 2048  # level-0 pixels: 8 x 8 tiles of 256 px
TEST_FRACTION_RANGE = (0.01, 0.99)
"""The test share a split may take: below 1% or above 99% one side is left with almost nothing."""


@dataclass(frozen=True)
class SplitSpec:
    """How to split: by `slide` or `region`, the test share, the shuffle seed and the region side."""

    by: str
    test_fraction: float
    seed: int = 0
    region_size: int = DEFAULT_REGION_SIZE

    @classmethod
    def from_fields(cls, fields: Mapping[str, Any], where: str) -> "SplitSpec":
        """A checked spec from a recipe's fields (by, test_fraction, seed, region_size; others are ignored), with
        the defaults `data build --split-by` uses; `where` names the fields in errors."""
        try:
            spec = cls(fields.get("by", "slide"), float(fields.get("test_fraction", 0.25)), int(fields.get("seed", 0)),
                       int(fields.get("region_size", DEFAULT_REGION_SIZE)))
        except (TypeError, ValueError) as err:
            raise InputError(f"{where}: {err}") from None
        spec.check()
        return spec

    def check(self) -> None:
        if self.by not in SPLIT_BY:
            raise InputError(f"--split-by must be one of {', '.join(SPLIT_BY)}, got {self.by!r}")
        low, high = TEST_FRACTION_RANGE
        if not low <= self.test_fraction <= high:  # also refuses NaN
            raise InputError(f"--test-fraction must be in [{low}, {high}] (each split needs a real share of the "
                             f"groups), got {self.test_fraction}")
        if self.region_size < 1:
            raise InputError(f"--region-size must be >= 1 level-0 pixels, got {self.region_size}")

    def describe(self) -> str:
        what = "slide" if self.by == "slide" else f"region ({self.region_size} px level-0 blocks of a slide)"
        return f"split by {what}, test fraction {self.test_fraction}, seed {self.seed}"


def group_keys(folder: Path | str, spec: SplitSpec, split: str = "train") -> list[str]:
    """The group of each row of `split`, in `iter_samples` order, read from the provenance columns only."""
    from histosynth.disk import open_shard, shard_paths

    keys = []
    for shard in shard_paths(folder, split):
        table = open_shard(shard).read(columns=["source", "slide_id", "x", "y"]).to_pydict()
        for i, (source, slide, x, y) in enumerate(zip(table["source"], table["slide_id"], table["x"], table["y"], strict=True)):
            if slide is None:
                raise InputError(f"{shard}: row {i} has no slide id; a split by {spec.by} needs each patch's slide")
            if spec.by == "slide":
                keys.append(f"{source}:{slide}")
                continue
            if x is None or y is None:
                raise InputError(f"{shard}: row {i} ({source}:{slide}) has no x/y position; a split by region needs it")
            keys.append(f"{source}:{slide}:{x // spec.region_size},{y // spec.region_size}")
    return keys


def choose_test_groups(keys: list[str], spec: SplitSpec) -> set[str]:
    """The groups of the test split (see the module docstring); refuses a set with a single group."""
    groups, counts = np.unique(np.asarray(keys, dtype=object), return_counts=True)
    if len(groups) < 2:
        only = groups[0] if len(groups) else "none"
        hint = " (try --split-by region)" if spec.by == "slide" else " (try a smaller --region-size)"
        raise InputError(f"a split by {spec.by} needs at least 2 {spec.by}s, the data has one: {only}{hint}")
    order = np.random.default_rng(spec.seed).permutation(len(groups))
    cumulative = np.cumsum(counts[order])[:-1]  # at least one group stays in train
    best = int(np.argmin(np.abs(cumulative - spec.test_fraction * len(keys))))
    return {str(g) for g in groups[order[: best + 1]]}


def write_split(folder: Path | str, out: Path | str, card, spec: SplitSpec, tissue_schema: str | None = None,
                nuclei_schema: str | None = None, overwrite: bool = True):
    """Write `folder`'s train split as a dataset at `out` with `train` and `test` splits by group; returns the
    summary (split sizes etc.)."""
    from histosynth.disk import iter_samples, write_dataset

    spec.check()
    keys = group_keys(folder, spec)
    test = choose_test_groups(keys, spec)
    in_test = [key in test for key in keys]

    def part(want: bool):
        return (s for s, t in zip(iter_samples(folder), in_test, strict=True) if t == want)

    card.description = f"{card.description} Splits: {spec.describe()}; {len(set(keys)) - len(test)} {spec.by}(s) " \
                       f"in train, {len(test)} in test."
    return write_dataset({"train": part(False), "test": part(True)}, out, card, tissue_schema, nuclei_schema,
                         overwrite=overwrite)


def split_groups(folder: Path | str, spec: SplitSpec, split: str) -> set[str]:
    """The set of groups in one split of a written dataset (for checks and tests)."""
    return set(group_keys(folder, spec, split))


__all__ = ["DEFAULT_REGION_SIZE", "SPLIT_BY", "SplitSpec", "choose_test_groups", "group_keys", "split_groups", "write_split"]
