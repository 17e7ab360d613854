"""Heterogeneous sampling of a whole dataset folder: keep 20-80% patches, or draw by tissue-diversity entropy.

Two streaming passes over the source folder: the first records every patch's composition, the second writes the
selected patches (atomically, with `write_dataset`). Statistics of the input and of the selection come back as
`CompositionStats` and can be drawn with `save_composition_plot`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tqdm.auto import tqdm

from histosynth.errors import InputError
from histosynth.labels.heterogeneity import CompositionStats, composition, entropy_sample
from histosynth.schema import Sample

if TYPE_CHECKING:
    from histosynth.disk import DatasetSummary


@dataclass
class SamplingResult:
    """What `sample_dataset` kept and the composition statistics of the input and of the selection."""

    selected: dict[str, list[int]]
    input_stats: CompositionStats
    selected_stats: CompositionStats
    summary: "DatasetSummary"


def sample_dataset(
    source: Path | str, out: Path | str, min_frac: float = 0.2, max_frac: float = 0.8, min_tissue: float = 0.5,
    by_entropy: int | None = None, seed: int = 0, power: float = 1.0, command: str = "", progress: bool = True,
    overwrite: bool = True,
) -> SamplingResult:
    """Write the heterogeneous patches of the dataset folder `source` to `out`.

    Default (annotated data): keep every patch satisfying the 20-80% rule (`is_heterogeneous`). With
    `by_entropy=N` (pseudo-labeled data): draw N patches over all splits with probability ~ H^power.
    """
    from histosynth.disk import iter_samples, read_metadata, write_dataset
    from histosynth.labels.pipeline import dataset_splits, derived_card

    meta = read_metadata(source)
    tissue_schema = meta["histosynth"].get("tissue_schema")
    if not tissue_schema:
        raise InputError(f"{source}: has no tissue maps; heterogeneous sampling needs them (pseudo-label it first "
                         "with `histosynth data pseudolabel`)")
    counts = dataset_splits(source)
    input_stats = CompositionStats(min_frac, max_frac, min_tissue)
    entropies: list[float] = []
    flags: list[bool] = []
    for split in counts:
        for sample in tqdm(iter_samples(source, split), desc=f"composition of {split}", total=counts[split],
                           unit="patch", disable=not progress, leave=False):
            if sample.tissue is None:
                raise InputError(f"{source}: {split} {sample.where} has no tissue map")
            comp = composition(sample.tissue)
            flags.append(input_stats.add(comp))
            entropies.append(comp.entropy)
    if by_entropy is not None:
        chosen = set(entropy_sample(entropies, by_entropy, seed, power).tolist())
    else:
        chosen = {i for i, ok in enumerate(flags) if ok}
    selected: dict[str, list[int]] = {}
    offset = 0
    for split, n in counts.items():
        selected[split] = [i - offset for i in range(offset, offset + n) if i in chosen]
        offset += n
    selected_stats = CompositionStats(min_frac, max_frac, min_tissue)

    def keep(split: str) -> Iterator[Sample]:
        wanted = set(selected[split])
        for i, sample in enumerate(iter_samples(source, split)):
            if i in wanted:
                selected_stats.add(composition(sample.tissue))  # type: ignore[arg-type]
                yield sample

    rule = (f"{by_entropy} patches drawn with probability proportional to H^{power} (tissue-diversity entropy)"
            if by_entropy is not None else
            f"patches whose tissue composition lies within {round(100 * min_frac)}-{round(100 * max_frac)}% "
            f"(>= 2 classes, largest <= {max_frac}, second >= {min_frac}, >= {min_tissue} tissue)")
    card = derived_card(source, f"Heterogeneous patches of `{Path(source).name}` (HTD sampling): {rule}.", command,
                        ["heterogeneous"])
    summary = write_dataset({split: keep(split) for split in counts}, out, card, tissue_schema,
                            meta["histosynth"].get("nuclei_schema"), overwrite=overwrite)
    return SamplingResult(selected, input_stats, selected_stats, summary)

