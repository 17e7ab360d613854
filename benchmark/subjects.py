"""Who made a scored dataset: read from its rows' provenance, so a results file names its generator checkpoint.

Every generated row records generator, generator_version and checkpoint_hash (histosynth.schema.Provenance). A set
whose rows all name one generator checkpoint is that generator's output; rows with no generator are real data;
anything else (several checkpoints, or real and generated rows mixed) is a dataset.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from histosynth.benchmark.results import DataRef, Subject
from histosynth.disk import DatasetFormatError, shard_paths

PROVENANCE_COLUMNS = ("source", "generator", "generator_version", "checkpoint_hash")


def row_makers(path: Path, split: str) -> set[tuple]:
    """The distinct (source, generator, version, checkpoint) tuples of a split's rows."""
    seen: set[tuple] = set()
    for shard in shard_paths(path, split):
        try:
            table = pq.read_table(shard, columns=list(PROVENANCE_COLUMNS))
        except Exception as err:  # pyarrow raises several types for damaged or foreign files
            raise DatasetFormatError(f"{shard}: cannot read the provenance columns ({err})") from err
        seen.update(zip(*(table.column(c).to_pylist() for c in PROVENANCE_COLUMNS), strict=True))
    return seen


def subject_of(path: Path | str, split: str, ref: DataRef) -> Subject:
    """The Subject of the set `ref` read from folder `path` (split `split`)."""
    rows = row_makers(Path(path), split)
    generators = {(g, v, c) for _, g, v, c in rows}
    if len(generators) == 1 and None not in next(iter(generators)):
        name, version, checkpoint = next(iter(generators))
        return Subject("generator", name, ref.content_hash, version=version, checkpoint_hash=checkpoint,
                       repo=ref.repo, revision=ref.revision)
    if generators == {(None, None, None)}:
        sources = sorted({s for s, *_ in rows if s})
        return Subject("real", "+".join(sources) or ref.name, ref.content_hash, repo=ref.repo, revision=ref.revision)
    return Subject("dataset", ref.name, ref.content_hash, repo=ref.repo, revision=ref.revision)
