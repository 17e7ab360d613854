"""Scores of downstream models: one model per seed, the mean over seeds with a Student-t interval, the ratio to a
real-trained row seed by seed, and a cache of the real rows' per-seed scores."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from histosynth.benchmark.downstream.data import LabeledSet
from histosynth.benchmark.downstream.group import ONE_PROCESS, Group
from histosynth.benchmark.downstream.kinds import Kind, TrainConfig
from histosynth.benchmark.downstream.training import _fingerprint, train_model
from histosynth.benchmark.results import DataRef, MetricResult, current_task_version
from histosynth.classes import get_schema

CONFIDENCE = 0.95
SCORES_VERSION = 1  # of the cached per-seed scores' format (score_training_set); the task version is keyed too


def t_interval(values: list[float], confidence: float = CONFIDENCE,
               bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float | None, float | None]:
    """(mean, low, high): Student-t interval of the mean over seeds, clipped to the metric's `bounds`; no interval
    for fewer than 2 values."""
    from scipy import stats

    array = np.asarray(values, np.float64)
    mean = float(array.mean())
    if len(array) < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


@dataclass
class SeedScores:
    """Per-seed scores of one training set: {metric: [value per seed]}."""

    name: str
    seeds: list[int]
    values: dict[str, list[float]]
    ref: DataRef
    train_seconds: list[float]


def score_training_set(kind: Kind, name: str, train: LabeledSet, test: LabeledSet, preset: str, config: TrainConfig,
                       seeds: list[int], checkpoints: Path | None, weights: str | Path | None, device: str,
                       stop: Callable[[int, float], bool] | None = None, group: Group = ONE_PROCESS,
                       score_cache: Path | None = None) -> SeedScores:
    """Train one model per seed on `train` (already in the test schema) and score each on `test` (rank 0 scores,
    the other ranks of a group receive its scores). With `score_cache`, a seed whose scores were computed before
    (same model, data contents, settings, seed, torch version and thread count) is read back instead of trained
    again: the real-data rows every submission is compared with are computed once."""
    num_classes = get_schema(test.schema).num_classes
    values: dict[str, list[float]] = {}
    seconds = []
    for seed in seeds:
        cached = _cached_scores(score_cache, kind, train, test, preset, config, num_classes, seed, weights, group)
        if cached is not None:
            scores, spent = cached
        else:
            trained = train_model(kind, train, num_classes, preset, config, seed, checkpoints, weights, device, stop,
                                  desc=f"{name} seed {seed}", group=group)
            spent = trained.seconds
            scores = group.broadcast(kind.scores(trained.model, test, preset, device) if group.main else None)
            _store_scores(score_cache, kind, train, test, preset, config, num_classes, seed, weights, group, scores,
                          spent)
        seconds.append(spent)
        for metric, value in scores.items():
            values.setdefault(metric, []).append(float(value))
    return SeedScores(name, list(seeds), values, train.ref, seconds)


def _score_key(kind: Kind, train: LabeledSet, test: LabeledSet, preset: str, config: TrainConfig, num_classes: int,
               seed: int, weights: str | Path | None, group: Group) -> str:
    key = {"train": _fingerprint(kind, train, preset, config, num_classes, seed, str(weights) if weights else None,
                                 group.world),
           "test": test.ref.content_hash, "test_schema": test.schema, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "scores_version": SCORES_VERSION,
           "task_version": current_task_version("tstr", {"model": kind.model})}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def _cached_scores(cache: Path | None, *key_parts) -> tuple[dict[str, float], float] | None:
    if cache is None:
        return None
    path = Path(cache) / f"{_score_key(*key_parts)}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): float(v) for k, v in record["scores"].items()}, float(record["seconds"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing or damaged: computed again (and rewritten)


def _store_scores(cache: Path | None, kind: Kind, train: LabeledSet, test: LabeledSet, preset: str,
                  config: TrainConfig, num_classes: int, seed: int, weights: str | Path | None, group: Group,
                  scores: dict[str, float], seconds: float) -> None:
    if cache is None or not group.main:
        return
    from histosynth.atomic import write_text_atomic

    key = _score_key(kind, train, test, preset, config, num_classes, seed, weights, group)
    Path(cache).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(cache) / f"{key}.json", json.dumps({"scores": scores, "seconds": seconds}) + "\n")


def metric_results(kind: Kind, scores: SeedScores, test: LabeledSet, baseline: SeedScores | None = None
                   ) -> list[MetricResult]:
    """One MetricResult per metric: the mean over seeds with the t-interval; with a `baseline` (the real-trained
    row) also `<headline>_ratio_to_real`, the per-seed ratio paired by seed."""
    results = []
    series = dict(scores.values)
    ratio = f"{kind.headline}_ratio_to_real"
    if baseline is not None and baseline is not scores:
        series[ratio] = [a / b if b > 0 else float("nan")
                         for a, b in zip(scores.values[kind.headline], baseline.values[kind.headline], strict=True)]
    for metric, values in series.items():
        finite = [v for v in values if np.isfinite(v)]
        extra = {"train": scores.name, "n_train": scores.ref.n, "seeds": scores.seeds,
                 "per_seed": [v if np.isfinite(v) else None for v in values],
                 "interval": "Student t over seeds, clipped to the metric's range" if len(finite) > 1 else "none (one seed)",
                 "averaging": kind.averaging}
        if not finite:
            extra["undefined"] = "no seed gave a finite value (class absent from test reference and predictions)"
            results.append(MetricResult(metric, None, n_real=test.ref.n, extra=extra, higher_is_better=True))
            continue
        mean, low, high = t_interval(finite, bounds=(0.0, math.inf) if metric == ratio else (0.0, 1.0))
        results.append(MetricResult(metric, mean, ci_low=low, ci_high=high, ci_level=CONFIDENCE if low is not None else None,
                                    n_real=test.ref.n, extra=extra, higher_is_better=True))
    return results
