"""The downstream task: train a segmenter on dataset A (synthetic, real or a mix), test it on held-out real dataset B.

Two kinds share everything here but their data, model, loss and scores (a `Kind` strategy): `TISSUE` (DeepLabv3+,
tissue.py) and `NUCLEI` (HoVer-Net, hovernet.py + hover_post.py + nuclei_metrics.py, in nuclei_task.py).

One run trains one model per seed on A's split, predicts B's split and scores each seed's predictions; every metric
is reported as the mean over seeds with a Student-t interval over seeds (mean +- t_{n-1} s / sqrt(n)): with the few
seeds a training budget allows (3 by default) a bootstrap over seeds has too few distinct resamples to mean
anything, and the t-interval states its assumption (seed-to-seed variation roughly normal). With one seed there is
no interval; intervals are clipped to the metric's range ([0, 1], ratios >= 0). A training set scored beside a
real-trained one also gets the ratio of its headline metric (mIoU, PQ) to the real row's, seed by seed (seed s of
both), with its own interval. What a seed varies: the model's initialization (decoder; the encoder starts from the same ImageNet
weights), the batches, crops and augmentations.

Tissue metrics are pooled over the test set from one summed confusion matrix (IoU_c = TP / (TP + FP + FN),
Dice_c = 2 TP / (2 TP + FP + FN), means over the foreground classes present in the reference), pixels labeled 255
left out; the mean over images of each image's foreground mIoU is reported beside it, since the HTD paper does not
say which it uses.

Training runs in the one training loop (histosynth.training, training.py) and is resumable: every
`checkpoint_every` steps the model, optimizer, schedule, step, loss log and both random states (numpy batches, torch
dropout) are written atomically under a folder keyed by the training data's content hash, the settings and the seed,
so a killed run replays from its last checkpoint to the same weights, and a finished one is not trained again.

Data parallel (`torchrun --nproc_per_node N -m histosynth.cli bench seg ...`): as in generator training,
`batch_size` is per process, so N processes train on a global batch of N x batch_size. Every process draws the
same global crop plan from the shared seeded generator and takes its own consecutive share (rank r: crops
r*B..(r+1)*B-1), so N processes with batch B see exactly the samples one process with batch N*B sees, step for
step. DistributedDataParallel averages the gradients (the mean of the per-process mean losses: the global mean
when every crop has as many labeled pixels); the logged loss is that mean too. What still differs from one
process: BatchNorm statistics are per process (torch's SyncBatchNorm is GPU-only), dropout masks are drawn per
process, and float sums run in another order, so N processes reach the same metric as one only up to the
seed-to-seed spread (tests/integration/test_distributed_downstream.py). Each process writes its own dropout RNG
state into the shared checkpoint (the process count is part of the checkpoint key); rank 0 scores the test set
once and the others receive its scores.
"""


from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch

from histosynth.benchmark.downstream.data import check_disjoint, load_set, remap_set
from histosynth.benchmark.downstream.group import process_group
from histosynth.benchmark.downstream.kinds import TrainConfig, kind_of
from histosynth.benchmark.downstream.scores import CONFIDENCE, metric_results, score_training_set
from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.subjects import subject_of
from histosynth.errors import InputError


def run_downstream(trains: dict[str, tuple[Path, str]], test: tuple[Path, str], model: str = "deeplabv3plus",
                   preset: str = "tiny", config: TrainConfig | None = None, seeds: list[int] | None = None,
                   mapping: dict[str, str] | None = None, real: str | None = None, checkpoints: Path | None = None,
                   weights: str | Path | None = None, device: str = "cpu", task: str = "seg",
                   stop: Callable[[int, float], bool] | None = None, reference_cache: Path | None = None) -> BenchmarkRun:
    """Train `model` on each of `trains` ({name: (folder, split)}), test on `test` (folder, split); one BenchmarkRun.

    `real` names the real-trained entry of `trains`: the others get a ratio-to-real row. Labels of a training set
    in another schema go through tissue.class_remap with `mapping`. With `reference_cache`, the `real` entry's
    per-seed scores are cached there (score_training_set), so repeated runs against one real set train it once.
    """
    start = time.perf_counter()
    group = process_group(device)
    if group.world > 1 and device == "cuda":  # one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', group.rank)}"
    kind = kind_of(model)
    config = config or kind.config(preset)
    config.check()
    seeds = list(seeds if seeds is not None else range(3))
    if not seeds:
        raise InputError("--seeds must be >= 1")
    test_set = load_set(*test, kind.label, name=Path(test[0]).name)
    sets = {}
    for name, (path, split) in trains.items():
        if Path(path).resolve() == Path(test[0]).resolve() and split == test[1]:
            raise InputError(f"training set {name!r} is the test set ({path}, split {split!r}); test on held-out data")
        data = remap_set(load_set(path, split, kind.label, name=name), test_set.schema, mapping)
        check_disjoint(data, test_set, f"training set {name!r} ({path})")
        sets[name] = data
    scored = {name: score_training_set(kind, name, data, test_set, preset, config, seeds, checkpoints, weights, device,
                                       stop, group, reference_cache if name == real else None)
              for name, data in sets.items()}
    baseline = scored.get(real) if real else None
    role = {name: f"train:{name}" if task == "tstr" else "train" for name in scored}
    results = []
    for name, s in scored.items():
        for result in metric_results(kind, s, test_set, baseline):
            result.subject = role[name]
            results.append(result)
    data_refs = {role[name]: s.ref for name, s in scored.items()}
    subjects = {role[name]: subject_of(trains[name][0], trains[name][1], s.ref) for name, s in scored.items()}
    data_refs["test"] = test_set.ref
    return BenchmarkRun(
        task=task, results=results, data=data_refs, subjects=subjects,
        settings={"model": kind.model, "preset": preset, "train": config.record(), "seeds": seeds,
                  "test_split": test[1], "train_splits": {n: s for n, (_, s) in trains.items()}, "schema": test_set.schema,
                  "mapping": mapping, "real": real, "device": device, "averaging": kind.averaging,
                  "threads": torch.get_num_threads(),
                  "interval": f"{CONFIDENCE:.0%} Student t over seeds", "mpp": test_set.mpp, "processes": group.world,
                  "batch": "train.batch_size per process; global batch = batch_size x processes",
                  "train_seconds": {n: s.train_seconds for n, s in scored.items()}},
        wall_time_s=time.perf_counter() - start)
