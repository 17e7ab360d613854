"""Generation to a dataset: resumable, deterministic whatever the number of processes.

    generate_dataset(checkpoint, conditions_dir, n=1000, out=out_dir, seed=0, chunk_size=64)

- Sample i uses condition i mod M (M condition patches) and seed `derive_seed(seed, i)`.
- The n samples are cut into fixed global chunks of `chunk_size`; chunk c is written as the shard
  `train-<c>-of-<chunks>.parquet` (named by chunk, never by process) in a work folder beside `out`
  (`.<out name>.work-<job key>/.chunks/`; the key hashes every setting that changes the bytes, so a changed
  command never reuses stale shards; the hidden `.chunks` keeps loaders from taking it for a dataset). A shard
  file appears complete or not at all.
- A job stopped by an error reports the work folder it keeps for a rerun, or removes it if no chunk finished.
- Under torchrun / accelerate, every process lists the finished chunks, then takes whole chunks of the rest
  round-robin; one process publishes. Each chunk is made the same way (same samples, same batches) whichever
  process makes it, so 1 process, N processes and a killed-and-rerun job write the same bytes.
- When every chunk is there, the dataset folder (README card + shards) is published atomically at `out`
  (histosynth.disk.publish_shards) and the work folder removed.
Multi-node runs need `out`'s parent on a filesystem all nodes share.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import shlex
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from histosynth.atomic import atomic_file, write_text_atomic
from histosynth.disk import (
    DatasetSummary,
    open_shard,
    publish_shards,
    read_metadata,
    read_row_group,
    shard_name,
    shard_paths,
    shard_row_to_sample,
    write_shard,
)
from histosynth.errors import InputError, UserFacingError
from histosynth.generators.base import Generator, GeneratorMeta, SampleOptions, TrainingData, derive_seed
from histosynth.schema import Sample

JOB_FILE = ".job.json"  # hidden too: datasets would load a top-level JSON file as a dataset
CHUNKS_DIR = ".chunks"  # finished chunk shards, hidden so that no loader takes a work folder for a dataset


class GenerationStopped(UserFacingError, ValueError):
    """A generation job stopped by an input error; the message says where its finished chunks were kept."""


class ConditionReader:
    """Random access to the Samples of a dataset folder, one parquet row group in memory at a time."""

    def __init__(self, path: Path | str, split: str = "train") -> None:
        self.path = Path(path)
        self.meta = read_metadata(self.path)
        self._groups: list[tuple[Path, int, int]] = []  # (shard, row group, first row)
        self._shard_first: dict[Path, int] = {}  # first row of each shard, for errors naming the row in its file
        total = 0
        for shard in shard_paths(self.path, split):
            self._shard_first[shard] = total
            metadata = open_shard(shard).metadata
            for g in range(metadata.num_row_groups):
                self._groups.append((shard, g, total))
                total += metadata.row_group(g).num_rows
        self._starts = [first for _, _, first in self._groups]
        self.total = total
        self._cached: tuple[int, list[dict]] | None = None

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.total:
            raise IndexError(f"condition {index} out of range 0..{self.total - 1}")
        g = bisect.bisect_right(self._starts, index) - 1
        if self._cached is None or self._cached[0] != g:
            shard, group, _ = self._groups[g]
            self._cached = (g, read_row_group(shard, open_shard(shard), group))
        shard = self._groups[g][0]
        return shard_row_to_sample(shard, index - self._shard_first[shard], self._cached[1][index - self._starts[g]])

    def fingerprint(self) -> str:
        """sha256 of the card and shard files' names and sizes: identifies the conditions cheaply."""
        digest = hashlib.sha256((self.path / "README.md").read_bytes())
        for shard in dict.fromkeys(s for s, _, _ in self._groups):
            digest.update(f"{shard.name}:{shard.stat().st_size}".encode())
        return digest.hexdigest()


def _summary_to_json(summary: DatasetSummary) -> dict[str, Any]:
    return {"split_sizes": summary.split_sizes, "tissue_schema": summary.tissue_schema,
            "nuclei_schema": summary.nuclei_schema, "tissue_pixels": {str(k): v for k, v in summary.tissue_pixels.items()},
            "nuclei_counts": {str(k): v for k, v in summary.nuclei_counts.items()},
            "image_sizes": [[h, w, n] for (h, w), n in summary.image_sizes.items()]}


def _merge(total: DatasetSummary, part: dict[str, Any]) -> None:
    for split, n in part["split_sizes"].items():
        total.split_sizes[split] = total.split_sizes.get(split, 0) + n
    total.tissue_schema = total.tissue_schema or part["tissue_schema"]
    total.nuclei_schema = total.nuclei_schema or part["nuclei_schema"]
    total.tissue_pixels.update(Counter({int(k): v for k, v in part["tissue_pixels"].items()}))
    total.nuclei_counts.update(Counter({int(k): v for k, v in part["nuclei_counts"].items()}))
    total.image_sizes.update(Counter({(h, w): n for h, w, n in part["image_sizes"]}))


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, sort_keys=True, indent=1))


def _stopped(err: BaseException, work: Path, sole_process: bool) -> BaseException | None:
    """Account for the work folder when a job stops on an error: an unused one is removed (one process only, as
    other processes may still write to it); kept chunks are reported. Returns a replacement error for the
    user-facing kind, None when `err` itself (now carrying a note) should propagate."""
    finished = sorted((work / CHUNKS_DIR).glob("train-*-of-*.parquet"))
    if not finished and sole_process:
        shutil.rmtree(work, ignore_errors=True)
        return None
    note = (f"partial work kept in {work} ({len(finished)} finished chunk(s)): resume with the same command, "
            f"or delete {work}")
    if isinstance(err, UserFacingError):
        return GenerationStopped(f"{err}; {note}")
    err.add_note(note)
    return None


def work_folder(out: Path, key: str) -> Path:
    """Where the finished chunk shards of a job with this key wait until the dataset is published."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.work-{key}"


def generate_dataset(checkpoint: Path | str, conditions: Path | str, n: int, out: Path | str, *, seed: int = 0,
                     chunk_size: int = 64, steps: int | None = None, sampler: str | None = None,
                     guidance: float | None = None, eta: float | None = None, batch_size: int | None = None,
                     generator_name: str | None = None, device: str | None = None,
                     on_chunk: Callable[[int], None] | None = None, progress: bool = True,
                     task: str = "synthesis", masks: Path | str | None = None) -> Path:
    """Generate `n` samples from the generator saved at `checkpoint` into the dataset folder `out` (see module doc).

    Rerunning the same call after a crash reuses the finished chunks. `on_chunk(c)` runs after chunk c is saved.
    `task` "completion" fills a mask per condition c = i mod M: row c mod M' of the dataset `masks` (nearest-resized
    to the condition), else the condition's own completion_mask, else held-out mask c (histosynth.masks), so
    every generator completes condition c through the same hole.
    """
    import torch
    from accelerate import PartialState

    from histosynth.generators import load_generator

    if n < 1 or chunk_size < 1:
        raise InputError(f"n and chunk_size must be >= 1, got n={n}, chunk_size={chunk_size}")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    for name, value in (("guidance", guidance), ("eta", eta)):
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value}")
    if device is not None:
        try:
            torch.device(device)
        except RuntimeError as err:
            raise InputError(f"device {device!r}: {err}") from None
    state = PartialState(cpu=not torch.cuda.is_available())
    gen = load_generator(checkpoint, device=device or state.device)
    if generator_name is not None and gen.meta.name != generator_name:
        raise InputError(f"{checkpoint} holds a {gen.meta.name!r} generator, not {generator_name!r}")
    reader = ConditionReader(conditions)
    if len(reader) == 0:
        raise InputError(f"{conditions}: no condition samples")
    options = SampleOptions(steps=steps, sampler=sampler, guidance=guidance, eta=eta, batch_size=batch_size, task=task)
    if task not in gen.meta.tasks:
        raise InputError(f"{gen.meta.name} does only {', '.join(gen.meta.tasks)}, not {task!r}")
    if masks is not None and task != "completion":
        raise InputError(f"--masks {masks}: masks are for completion; this job's task is {task!r}")
    mask_reader = ConditionReader(masks) if masks is not None else None
    if mask_reader is not None and len(mask_reader) == 0:
        raise InputError(f"{masks}: no mask rows")
    resolved = {k: getattr(gen.resolve_options(options), k) for k in ("steps", "sampler", "guidance", "eta", "batch_size")}
    job = {"generator": gen.meta.name, "version": gen.meta.version, "checkpoint_hash": gen.checkpoint_hash,
           "conditions": reader.fingerprint(), "n": n, "seed": seed, "chunk_size": chunk_size, **resolved}
    if task != "synthesis":  # synthesis keys stay as they were before tasks existed
        from histosynth.masks import HELDOUT_VERSION

        job.update(task=task, masks=mask_reader.fingerprint() if mask_reader is not None else f"heldout-{HELDOUT_VERSION}")
    key = hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16]
    out = Path(out).absolute()
    work = work_folder(out, key)
    chunks = math.ceil(n / chunk_size)

    def shard(c: int) -> Path:
        return work / CHUNKS_DIR / shard_name("train", c, chunks)

    if state.is_main_process:
        (work / CHUNKS_DIR).mkdir(parents=True, exist_ok=True)
        _write_json(work / JOB_FILE, job)
    state.wait_for_everyone()
    todo = [c for c in range(chunks) if not shard(c).is_file()]
    state.wait_for_everyone()  # every process has listed the finished chunks before any writes new ones
    mine = todo[state.process_index :: state.num_processes]
    bar = tqdm(total=chunks, initial=chunks - len(todo), desc=f"generating {n} samples", unit="chunk",
               disable=not (progress and state.is_main_process))
    try:
        for c in mine:
            indices = range(c * chunk_size, min(n, (c + 1) * chunk_size))
            batch = [reader[i % len(reader)] for i in indices]
            if task == "completion":
                batch = [with_completion_mask(cond, i % len(reader), mask_reader) for cond, i in zip(batch, indices, strict=True)]
            samples = gen.sample(batch, [derive_seed(seed, i) for i in indices], options)
            path = shard(c)
            with atomic_file(path) as staged:  # the shard's appearance commits the chunk (its summary is already there)
                summary = write_shard(samples, staged)
                _write_json(path.with_name(path.name + ".json"), _summary_to_json(summary))
            bar.update(state.num_processes)
            if on_chunk is not None:
                on_chunk(c)
        bar.close()
        state.wait_for_everyone()
        if state.is_main_process:
            missing = [c for c in range(chunks) if not shard(c).is_file()]
            if missing:
                raise GenerationStopped(f"chunks {missing[:5]} were not written; rerun the same command to finish")
            total = DatasetSummary()
            for c in range(chunks):
                _merge(total, json.loads(shard(c).with_name(shard(c).name + ".json").read_text(encoding="utf-8")))
            card = _card(gen, reader, job, Path(checkpoint), Path(conditions))
            publish_shards({"train": [shard(c) for c in range(chunks)]}, out, card, total)
            shutil.rmtree(work, ignore_errors=True)
    except BaseException as err:
        bar.close()
        replacement = _stopped(err, work, state.num_processes == 1)
        if replacement is not None:
            raise replacement from err
        raise
    state.wait_for_everyone()
    return out


def with_completion_mask(condition: Sample, index: int, masks: ConditionReader | None) -> Sample:
    """`condition` carrying the mask a completion job fills: row `index` mod M' of `masks` (nearest-resized to the
    condition), else its own completion_mask, else held-out mask `index`."""
    from dataclasses import replace

    from histosynth.masks import heldout_mask
    from histosynth.resize import resize_map

    shape = condition.image.shape[:2]
    if masks is not None:
        row = masks[index % len(masks)]
        if row.completion_mask is None:
            raise InputError(f"{masks.path}: row {index % len(masks)} has no completion_mask")
        mask = row.completion_mask
        if mask.shape != shape:
            if mask.shape[0] != mask.shape[1] or shape[0] != shape[1]:
                raise InputError(f"{masks.path}: row {index % len(masks)}'s mask is {mask.shape}, the condition {shape}; "
                                 "only square masks are resized")
            mask = resize_map(mask.view(np.uint8), shape[0]).astype(bool)
    elif condition.completion_mask is not None:
        return condition
    else:
        mask = heldout_mask(index, shape)
    return replace(condition, completion_mask=mask)


def label_sentence(meta: GeneratorMeta) -> str:
    """What a generated set's labels are, for its card (by the generator's label policy and outputs)."""
    labels = [part for part in ("tissue", "nuclei") if part in meta.outputs]
    if meta.label_policy == "copied":
        if labels == ["tissue"]:
            return "Each patch's tissue map is the map it was conditioned on."
        return f"Each patch's {' and '.join('tissue map' if p == 'tissue' else 'nuclei' for p in labels)} are those of the condition it was made from."
    if meta.label_policy == "generated":
        return "Each patch's labels were generated together with it."
    return "The patches carry no labels (completed patches carry their completion masks)." if "completion" in meta.tasks \
        else "The generator is unconditional: patches carry no labels."


def _card(gen: Generator, reader: ConditionReader, job: dict[str, Any], checkpoint: Path, conditions: Path):
    from histosynth.data_cards.card import CardInfo
    from histosynth.data_cards.model import default_license

    meta = gen.meta
    cond_sources = [s.split("|")[-1] for s in reader.meta.get("source_datasets", []) if s != "original"]
    trained_on = gen.train_report.data if gen.train_report is not None else TrainingData()
    train_sources = list(trained_on.source_datasets)
    sources = list(dict.fromkeys(cond_sources + train_sources))
    license = default_license(sources) if sources else str(reader.meta.get("license", "other"))
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in job.items()
                     if k in ("seed", "chunk_size", "steps", "sampler", "guidance", "eta", "batch_size") and v is not None)
    if job.get("task") == "completion":
        flags += " --task complete" + (" --masks MASKS" if not str(job["masks"]).startswith("heldout-") else "")
    command = (f"histosynth generate {meta.name} --checkpoint {shlex.quote(checkpoint.name)} "
               f"--conditions {shlex.quote(conditions.name)} --n {job['n']} {flags} --out OUT")
    return CardInfo(
        pretty_name=f"histosynth {meta.name} synthetic patches",
        description=f"{job['n']} patches generated by `{meta.name}` {meta.version} ({meta.summary}). "
                    + label_sentence(meta),
        license=license,
        source=f"Conditions: the dataset {conditions.name!r} ({len(reader)} patches, "
               f"{reader.meta.get('pretty_name', '')}). Generator trained on: {trained_on.description}.",
        source_datasets=sources,
        command=command,
        tags=[meta.name, "synthetic"],
        citation=meta.citation,
        generator=meta.name,
        generator_version=meta.version,
        checkpoint_hash=job["checkpoint_hash"],
        conditioning_source=f"{conditions.name} (sample i uses condition i mod {len(reader)})",
        seeds=f"sample i uses seed derive_seed({job['seed']}, i) = SeedSequence([{job['seed']}, i]) (63 bits)",
    )
