"""Dataset -> features under many encoders in one pass, with mergeable statistics and a content-hash cache.

Each image of a dataset is read and PNG-decoded once; each distinct input spec (size, resize filter, mean/std)
is prepared once per batch and fed to every encoder that shares it. Per encoder the pass keeps float64
streaming statistics (`StreamingStats`: mergeable across shards and processes) and, up to a cap, the
features themselves for the metrics that need samples (bootstrap CIs, KID, PRDC, memorization).

Results are cached under `cache_dir` keyed by the SHA-256 of the images' bytes + encoder + weight fingerprint
+ input spec + this module's FEATURE_CODE_VERSION, never by a user-chosen name; randomly initialized encoders
are never cached.

Scale-out: with `distributed=True` (under `torchrun --nproc_per_node N`), rows are split into contiguous
ranges with accelerate's `PartialState.split_between_processes`, each rank featurizes its range, and the
states and kept features are gathered and merged in rank order on every rank.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm.auto import tqdm

from histosynth.atomic import atomic_file
from histosynth.benchmark.encoders import ENCODERS, Encoder, load_encoder, preprocess
from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.results import DataRef
from histosynth.benchmark.stats import StreamingStats
from histosynth.cache_dirs import cache_dir
from histosynth.disk import DatasetFormatError, read_metadata, shard_paths
from histosynth.schema import PROVENANCE_FIELDS, Provenance

FEATURE_CODE_VERSION = "1"  # bump when preprocessing or pooling changes: invalidates cached statistics
DEFAULT_KEEP = 50_000
_ID_COLUMNS = PROVENANCE_FIELDS  # read next to the image, to name a sample in errors


def default_cache_dir() -> Path:
    """The feature-statistics cache: `features/` under histosynth's cache root (`histosynth.cache_dirs`)."""
    return cache_dir("features")


@dataclass
class EncoderFeatures:
    """What one encoder saw of one dataset: statistics of all rows and (up to the cap) the features themselves."""

    encoder: str
    stats: StreamingStats
    features: np.ndarray | None
    provenance: dict[str, str] = field(default_factory=dict)
    from_cache: bool = False


@dataclass
class FeatureRun:
    """Features of one dataset split under several encoders, and the reference to the data they came from."""

    data: DataRef
    encoders: dict[str, EncoderFeatures]


@dataclass
class _Rows:
    """Rows of a dataset split: shards, per-shard row counts, and the image-bytes content hash."""

    path: Path
    split: str
    shards: list[Path]
    counts: list[int]
    content_hash: str

    @property
    def total(self) -> int:
        return sum(self.counts)


def scan_rows(path: Path | str, split: str = "train") -> _Rows:
    """Read only the `image` bytes column once to count rows and hash the pixels' encoded content."""
    path = Path(path)
    read_metadata(path)
    digest = hashlib.sha256()
    counts = []
    shards = shard_paths(path, split)
    for shard in shards:
        rows = 0
        try:
            # One row group at a time: a whole shard's image column is up to 256 MB, which would make peak memory
            # grow with the dataset.
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=64, columns=["image"]):
                rows += batch.num_rows
                for cell in batch.column(0).field("bytes").to_pylist():
                    digest.update(hashlib.sha256(cell or b"").digest())
        except Exception as err:  # pyarrow raises several types for damaged files
            raise DatasetFormatError(f"{shard}: unreadable parquet shard ({err})") from err
        counts.append(rows)
    return _Rows(path, split, shards, counts, f"sha256:{digest.hexdigest()}")


def _decode(data: bytes, where: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    except Exception as err:
        raise DatasetFormatError(f"{where}: image cannot be decoded ({err})") from err
    return array


def _iter_images(rows: _Rows, start: int, stop: int) -> Iterator[tuple[str, np.ndarray]]:
    """(id, uint8 HxWx3) for global rows [start, stop), reading whole row groups and skipping the rest."""
    offset = 0
    for shard, count in zip(rows.shards, rows.counts, strict=False):
        if offset + count <= start or offset >= stop:
            offset += count
            continue
        parquet = pq.ParquetFile(shard)
        row = offset
        for group in range(parquet.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            if row + size <= start or row >= stop:
                row += size
                continue
            table = parquet.read_row_group(group, columns=["image", *_ID_COLUMNS]).to_pylist()
            for i, record in enumerate(table):
                index = row + i
                if start <= index < stop:
                    origin = Provenance(**{c: record.get(c) for c in _ID_COLUMNS}).describe()
                    where = f"{shard.name} row {index - offset} ({origin})"
                    yield where, _decode(record["image"]["bytes"], where)
            row += size
        offset += count


def _batches(images: Iterator[tuple[str, np.ndarray]], batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Stack consecutive same-shape images into (ids, N x H x W x 3) batches."""
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    for where, array in images:
        if arrays and (len(arrays) == batch_size or array.shape != arrays[0].shape):
            yield ids, np.stack(arrays)
            ids, arrays = [], []
        ids.append(where)
        arrays.append(array)
    if arrays:
        yield ids, np.stack(arrays)


def _prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run `iterator` in a background thread (PNG decoding overlaps the forward passes; PIL releases the GIL)."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def work() -> None:
        try:
            for item in iterator:
                items.put(item)
        except BaseException as err:  # re-raised in the consumer
            items.put(err)
        items.put(done)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    while True:
        item = items.get()
        if item is done:
            break
        if isinstance(item, BaseException):
            raise item
        yield item
    thread.join()


def cache_key(content_hash: str, encoder: Encoder, keep: int) -> str:
    """Key of a cached result: images + encoder + weights + input spec + feature code version + cap."""
    payload = json.dumps({"data": content_hash, "encoder": encoder.meta.name, "weights": encoder.weights_fingerprint,
                          "preprocess": encoder.meta.preprocess.key, "code": FEATURE_CODE_VERSION, "keep": keep}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _cache_paths(cache_dir: Path, key: str) -> tuple[Path, Path]:
    folder = cache_dir / "features" / key[:2]
    return folder / f"{key}.stats.npz", folder / f"{key}.features.npy"


def _load_cached(cache_dir: Path, key: str) -> tuple[StreamingStats, np.ndarray | None] | None:
    stats_path, feats_path = _cache_paths(cache_dir, key)
    if not stats_path.is_file():
        return None
    stats = StreamingStats.load(stats_path)
    features = np.load(feats_path) if feats_path.is_file() else None
    return stats, features


def _store_cached(cache_dir: Path, key: str, stats: StreamingStats, features: np.ndarray | None) -> None:
    stats_path, feats_path = _cache_paths(cache_dir, key)
    if features is not None:
        with atomic_file(feats_path) as partial, open(partial, "wb") as handle:
            np.save(handle, features)
    stats.save(stats_path)  # written last: its presence marks a complete entry


def _resolve_encoders(encoders: Sequence[str | Encoder], device: str, weights: dict[str, str] | None) -> list[Encoder]:
    resolved = []
    for item in encoders:
        if isinstance(item, Encoder):
            resolved.append(item)
        else:
            ENCODERS.get(item)  # unknown names fail before any weights are touched
            resolved.append(load_encoder(item, weights=(weights or {}).get(item), device=device))
    names = [e.meta.name for e in resolved]
    if len(set(names)) != len(names):
        raise MetricInputError(f"encoders listed twice: {names}")
    return resolved


@torch.inference_mode()
def _featurize(rows: _Rows, encoders: list[Encoder], start: int, stop: int, batch_size: int, keep: int,
               progress: bool) -> dict[str, tuple[StreamingStats, list[np.ndarray]]]:
    groups: dict[object, list[Encoder]] = {}
    for encoder in encoders:
        groups.setdefault(encoder.meta.preprocess, []).append(encoder)
    state = {e.meta.name: (StreamingStats(metadata={"encoder": e.meta.name}), []) for e in encoders}
    kept = 0
    bar = tqdm(total=stop - start, desc=f"features {rows.path.name}", unit="img", disable=not progress, leave=False)
    for ids, batch in _prefetch(_batches(_iter_images(rows, start, stop), batch_size)):
        room = max(0, keep - kept)
        for spec, members in groups.items():
            x = preprocess(batch, spec, members[0].device, layout="nhwc")
            for encoder in members:
                features = encoder(x).cpu().numpy()
                stats, kept_list = state[encoder.meta.name]
                try:
                    stats.update(features, ids)  # NaN/inf -> MetricInputError naming the sample
                except MetricInputError as err:
                    raise MetricInputError(f"{rows.path} (split {rows.split!r}): {encoder.meta.name} {err}") from None
                if room:
                    kept_list.append(features[:room].astype(np.float32))
        kept += min(room, len(ids))
        bar.update(len(ids))
    bar.close()
    return state


def _gather(state: dict[str, tuple[StreamingStats, list[np.ndarray]]], keep: int, distributed: bool):
    """Merge per-rank states in rank order (all ranks get the same result)."""
    local = {name: (stats, np.concatenate(kept) if kept else None) for name, (stats, kept) in state.items()}
    if not distributed:
        return local
    import torch.distributed as dist

    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    merged = {}
    for name in local:
        stats = StreamingStats.merged([p[name][0] for p in parts], metadata=local[name][0].metadata)
        arrays = [p[name][1] for p in parts if p[name][1] is not None]
        merged[name] = (stats, np.concatenate(arrays)[:keep] if arrays else None)
    return merged


def extract_features(
    path: Path | str,
    encoders: Sequence[str | Encoder],
    split: str = "train",
    batch_size: int = 32,
    device: str = "cpu",
    keep: int = DEFAULT_KEEP,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    weights: dict[str, str] | None = None,
    distributed: bool = False,
    progress: bool = True,
    name: str | None = None,
) -> FeatureRun:
    """Statistics (all rows) and features (first `keep` rows) of a dataset split under each encoder, in one pass.

    `encoders` are registry names (loaded with their real weights; `weights` maps a name to a local path) or
    already-built `Encoder`s (e.g. random weights in tests). Cached results are reused per encoder.
    """
    rows = scan_rows(path, split)
    if rows.total == 0:
        raise MetricInputError(f"{path}: split {split!r} has no rows to featurize")
    loaded = _resolve_encoders(encoders, device, weights)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    results: dict[str, EncoderFeatures] = {}
    todo: list[Encoder] = []
    for encoder in loaded:
        cacheable = use_cache and encoder.weights_fingerprint != "random-init"
        hit = _load_cached(cache, cache_key(rows.content_hash, encoder, keep)) if cacheable else None
        if hit is not None:
            results[encoder.meta.name] = EncoderFeatures(encoder.meta.name, hit[0], hit[1], encoder.provenance(), True)
        else:
            todo.append(encoder)
    if todo:
        start, stop = 0, rows.total
        is_main = True
        if distributed:
            from accelerate import PartialState

            process = PartialState(cpu=not torch.cuda.is_available())
            with process.split_between_processes(list(range(rows.total))) as mine:
                start, stop = (mine[0], mine[-1] + 1) if mine else (0, 0)
            is_main = process.is_main_process
        state = _featurize(rows, todo, start, stop, batch_size, keep, progress and is_main)
        for encoder_name, (stats, features) in _gather(state, keep, distributed).items():
            encoder = next(e for e in todo if e.meta.name == encoder_name)
            results[encoder_name] = EncoderFeatures(encoder_name, stats, features, encoder.provenance())
            if use_cache and encoder.weights_fingerprint != "random-init" and is_main:
                _store_cached(cache, cache_key(rows.content_hash, encoder, keep), stats, features)
    ordered = {e.meta.name: results[e.meta.name] for e in loaded}
    data = DataRef(name=name or Path(path).name, path=str(Path(path).resolve()), content_hash=rows.content_hash, n=rows.total)
    return FeatureRun(data, ordered)
