"""The on-disk dataset: exactly the Hub repo layout, written atomically.

    DIR/README.md                                   dataset card with YAML metadata (configs, features)
    DIR/data/<split>-NNNNN-of-NNNNN.parquet         rows of `histosynth.rows`
    DIR/pseudolabels.json                           optional: how pseudo labels were made (histosynth.labels)

`datasets.load_dataset(DIR)` loads it with its features (the card's default config carries the shards' content
fingerprint, so each distinct content has its own datasets cache entry); `iter_samples(DIR)` streams `Sample`s
from the shards without copying them into the datasets cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm.auto import tqdm

from histosynth.atomic import atomic_directory, atomic_file
from histosynth.data_cards.card import CardInfo, render_card
from histosynth.errors import UserFacingError
from histosynth.rows import features_for, row_to_sample, sample_to_row
from histosynth.schema import Sample, SampleValidationError

DATA_DIR = "data"
PSEUDOLABELS_SIDECAR = "pseudolabels.json"  # pseudo-label hierarchy and settings (histosynth.labels)
SIDECAR_FILES = (PSEUDOLABELS_SIDECAR,)  # files a dataset folder may hold besides README.md and data/
MAX_SHARD_BYTES = 256 * 2**20  # Hub-friendly shard size
ROW_GROUP_ROWS = 64  # small row groups: image rows are large and streaming reads whole groups
_HASH_CHUNK = 8 * 2**20


class DatasetFormatError(UserFacingError, ValueError):
    """A folder is not a histosynth dataset, or its card/shards are inconsistent; the message names the file."""


@dataclass
class DatasetSummary:
    """Counts gathered while writing; they also fill the card's class tables."""

    split_sizes: dict[str, int] = field(default_factory=dict)
    tissue_schema: str | None = None
    nuclei_schema: str | None = None
    tissue_pixels: Counter = field(default_factory=Counter)
    nuclei_counts: Counter = field(default_factory=Counter)
    image_sizes: Counter = field(default_factory=Counter)

    def add(self, sample: Sample) -> None:
        self.image_sizes[(sample.height, sample.width)] += 1
        if sample.tissue is not None:
            ids, counts = np.unique(sample.tissue, return_counts=True)
            self.tissue_pixels.update(dict(zip(ids.tolist(), counts.tolist(), strict=False)))
        if sample.nuclei is not None:
            self.nuclei_counts.update(sample.nuclei.class_ids.tolist())


def shard_name(split: str, index: int, count: int) -> str:
    """Hub naming: train-00000-of-00003.parquet."""
    return f"{split}-{index:05d}-of-{count:05d}.parquet"


def fingerprint_of(digests: Mapping[str, str]) -> str:
    """The content fingerprint of a dataset from the sha256 digests of its data files ({"data/<name>": hex}).

    sha256 over "path NUL digest LF" lines in path order (the recipes' `dataset_hash` is the same sum). Shard names
    carry the split and the order, so moving rows between splits or shards changes it too.
    """
    lines = "".join(f"{name}\0{digests[name]}\n" for name in sorted(digests))
    return "sha256:" + hashlib.sha256(lines.encode("utf-8")).hexdigest()


def content_fingerprint(path: Path | str) -> str:
    """The content fingerprint (`fingerprint_of`) of the files under `path`/data, read once.

    Written into the card's default config (histosynth.data_cards.card.config_description) so that
    `datasets.load_dataset(folder)` caches each distinct content apart, whatever the folder's name.
    """
    folder = Path(path)
    digests = {}
    for file in sorted((folder / DATA_DIR).rglob("*")):
        if file.is_file():
            digest = hashlib.sha256()
            with open(file, "rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    digest.update(chunk)
            digests[file.relative_to(folder).as_posix()] = digest.hexdigest()
    return fingerprint_of(digests)


class _SplitWriter:
    """Buffers encoded rows and flushes parquet shards of at most `max_shard_bytes` of image data."""

    def __init__(self, folder: Path, split: str, schema: pa.Schema, max_shard_bytes: int) -> None:
        self.folder, self.split, self.schema, self.max_shard_bytes = folder, split, schema, max_shard_bytes
        self.rows: list[dict] = []
        self.bytes = 0
        self.shards: list[Path] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.bytes += sum(len(v["bytes"]) for v in row.values() if isinstance(v, dict) and v.get("bytes"))
        if self.bytes >= self.max_shard_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.rows and self.shards:
            return
        path = self.folder / f".{self.split}-{len(self.shards):05d}.parquet"
        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS)
        self.shards.append(path)
        self.rows, self.bytes = [], 0

    def finish(self) -> None:
        self.flush()
        for i, path in enumerate(self.shards):
            path.rename(self.folder / shard_name(self.split, i, len(self.shards)))


def _check_schema(sample: Sample, index: int, split: str, summary: DatasetSummary) -> None:
    pairs = (("tissue", sample.tissue_schema, summary.tissue_schema),
             ("nuclei", sample.nuclei.schema if sample.nuclei is not None else None, summary.nuclei_schema))
    for label, used, declared in pairs:
        if used is not None and used != declared:
            raise SampleValidationError(
                f"{split} sample {index} ({sample.where}) uses {label} schema {used!r} but the dataset uses "
                f"{declared!r}; one dataset has one schema per label (pass {label}_schema explicitly)"
            )


def write_dataset(
    samples: Iterable[Sample] | Mapping[str, Iterable[Sample]],
    out: Path | str,
    card: CardInfo,
    tissue_schema: str | None = None,
    nuclei_schema: str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    total: int | None = None,
    overwrite: bool = True,
) -> DatasetSummary:
    """Write samples (one iterable = split "train", or {split: iterable}) as a Hub-layout dataset at `out`.

    Schemas default to those of the first sample. The folder appears complete or not at all: a crash or an
    invalid sample leaves any previous dataset at `out` untouched.
    """
    splits = dict(samples) if isinstance(samples, Mapping) else {"train": samples}
    summary = DatasetSummary(tissue_schema=tissue_schema, nuclei_schema=nuclei_schema)
    with atomic_directory(out, overwrite=overwrite) as folder:
        data = folder / DATA_DIR
        data.mkdir()
        features = None
        for split, iterable in splits.items():
            writer = None
            count = 0
            for sample in tqdm(iterable, desc=f"writing {split}", unit="patch", total=total, leave=False):
                if features is None:
                    summary.tissue_schema = summary.tissue_schema or sample.tissue_schema
                    summary.nuclei_schema = summary.nuclei_schema or (sample.nuclei.schema if sample.nuclei is not None else None)
                    features = features_for(summary.tissue_schema, summary.nuclei_schema)
                if writer is None:
                    writer = _SplitWriter(data, split, features.arrow_schema, max_shard_bytes)
                _check_schema(sample, count, split, summary)
                writer.add(sample_to_row(sample))
                summary.add(sample)
                count += 1
            if writer is None:
                if features is None:
                    features = features_for(summary.tissue_schema, summary.nuclei_schema)
                writer = _SplitWriter(data, split, features.arrow_schema, max_shard_bytes)
            writer.finish()
            summary.split_sizes[split] = count
        assert features is not None
        readme = render_card(card, features, summary.split_sizes, summary.tissue_schema, summary.nuclei_schema,
                             dict(summary.tissue_pixels) or None, dict(summary.nuclei_counts) or None,
                             fingerprint=content_fingerprint(folder))
        (folder / "README.md").write_text(readme, encoding="utf-8")
    return summary


def read_metadata(path: Path | str) -> dict:
    """The YAML front matter of a dataset folder's README.md."""
    readme = Path(path) / "README.md"
    if not readme.is_file():
        raise DatasetFormatError(f"{readme}: missing; {path} is not a histosynth dataset folder")
    try:
        text = readme.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetFormatError(f"{readme}: not a UTF-8 text file ({err})") from None
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        raise DatasetFormatError(f"{readme}: no YAML front matter")
    try:
        meta = yaml.safe_load(text[4 : text.index("\n---", 4)])
    except yaml.YAMLError as err:
        raise DatasetFormatError(f"{readme}: invalid YAML front matter ({' '.join(str(err).split())})") from err
    if not isinstance(meta, dict) or "histosynth" not in meta:
        raise DatasetFormatError(f"{readme}: no `histosynth` block in the metadata; not written by histosynth")
    return meta


def shard_paths(path: Path | str, split: str = "train") -> list[Path]:
    """The parquet shards of `split`, in order; raises if any of the -of-N set is missing."""
    shards = sorted((Path(path) / DATA_DIR).glob(f"{split}-*-of-*.parquet"))
    if not shards:
        splits = sorted({p.name.split("-")[0] for p in (Path(path) / DATA_DIR).glob("*.parquet")})
        raise DatasetFormatError(f"{path}: no shards for split {split!r} (splits present: {splits or 'none'})")
    expected = int(shards[0].stem.rsplit("-of-", 1)[1])
    if len(shards) != expected:
        raise DatasetFormatError(f"{path}: split {split!r} has {len(shards)} of {expected} shards")
    return shards


def open_shard(shard: Path) -> pq.ParquetFile:
    """A parquet shard opened for reading; a truncated or foreign file raises DatasetFormatError naming it."""
    try:
        return pq.ParquetFile(shard)
    except (pa.ArrowException, OSError) as err:
        raise DatasetFormatError(f"{shard}: unreadable parquet shard ({err})") from err


def read_row_group(shard: Path, parquet: pq.ParquetFile, group: int) -> list[dict]:
    """The raw rows of one row group; a damaged group raises DatasetFormatError naming the shard."""
    try:
        return parquet.read_row_group(group).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DatasetFormatError(f"{shard}: unreadable parquet row group {group} ({err})") from err


def shard_row_to_sample(shard: Path, index: int, row: dict) -> Sample:
    """`row_to_sample` for row `index` (0-based, within the file) of `shard`: an invalid row names the file and row."""
    try:
        return row_to_sample(row)
    except SampleValidationError as err:
        raise DatasetFormatError(f"{shard}: row {index}: {err}") from err


def iter_samples(path: Path | str, split: str = "train") -> Iterator[Sample]:
    """Stream the Samples of one split, one row group at a time (never the whole set in memory)."""
    read_metadata(path)
    for shard in shard_paths(path, split):
        parquet, index = open_shard(shard), 0
        for group in range(parquet.num_row_groups):
            for row in read_row_group(shard, parquet, group):
                sample = shard_row_to_sample(shard, index, row)
                index += 1
                yield sample


def count_samples(path: Path | str, split: str = "train") -> int:
    """Number of rows of a split, from the parquet footers."""
    return sum(open_shard(s).metadata.num_rows for s in shard_paths(path, split))


def write_shard(samples: Iterable[Sample], path: Path | str, tissue_schema: str | None = None,
                nuclei_schema: str | None = None) -> DatasetSummary:
    """Write samples as ONE parquet shard file at `path` (rows and schema exactly as `write_dataset` writes them).

    The file appears complete or not at all (`histosynth.atomic.atomic_file`). Used by jobs that make a
    dataset one fixed chunk at a time (generation) and publish the shards together with `publish_shards`.
    Schemas default to those of the first sample.
    """
    path = Path(path)
    summary = DatasetSummary(tissue_schema=tissue_schema, nuclei_schema=nuclei_schema)
    rows, count = [], 0
    for sample in samples:
        if count == 0:
            summary.tissue_schema = summary.tissue_schema or sample.tissue_schema
            summary.nuclei_schema = summary.nuclei_schema or (sample.nuclei.schema if sample.nuclei is not None else None)
        _check_schema(sample, count, path.name, summary)
        rows.append(sample_to_row(sample))
        summary.add(sample)
        count += 1
    summary.split_sizes["train"] = count
    features = features_for(summary.tissue_schema, summary.nuclei_schema)
    with atomic_file(path) as partial:
        pq.write_table(pa.Table.from_pylist(rows, schema=features.arrow_schema), partial, row_group_size=ROW_GROUP_ROWS)
    return summary


def publish_shards(shards: Mapping[str, list[Path]], out: Path | str, card: CardInfo, summary: DatasetSummary,
                   overwrite: bool = True) -> Path:
    """Publish shard files ({split: [shard, ...]} in order) as a dataset folder at `out`, atomically.

    The shards are hard-linked (copied across filesystems) into the new folder under Hub names
    (`shard_name`), so the originals stay until the caller removes them; `summary` (split sizes, class counts,
    schemas) fills the card. All shards of a dataset must share one schema, as `write_shard` writes them.
    """
    with atomic_directory(out, overwrite=overwrite) as folder:
        data = folder / DATA_DIR
        data.mkdir()
        for split, files in shards.items():
            for i, source in enumerate(files):
                target = data / shard_name(split, i, len(files))
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
        features = features_for(summary.tissue_schema, summary.nuclei_schema)
        readme = render_card(card, features, summary.split_sizes, summary.tissue_schema, summary.nuclei_schema,
                             dict(summary.tissue_pixels) or None, dict(summary.nuclei_counts) or None,
                             fingerprint=content_fingerprint(folder))
        (folder / "README.md").write_text(readme, encoding="utf-8")
    return Path(out)
