"""`bench seg` under torchrun with 2 CPU processes: each rank trains on its share of every batch, gradients are
averaged, every rank writes its RNG states into the one shared checkpoint, rank 0 scores the test set once, and the
metric agrees with one process."""

import json
import math
import os
import sys

import numpy as np
import pytest
from scipy import stats

from histosynth.benchmark.downstream.data import LabeledSet, crop_plan
from histosynth.benchmark.downstream.group import Group
from histosynth.benchmark.results import BenchmarkRun, DataRef
from histosynth.cli import main
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.sources import build_source
from histosynth.training import STATE_FILE

SEEDS = 3
# Tiny preset (20 steps, 64 px crops); one process with batch 4 sees the same crops per step as two with batch 2.
TINY = ["--preset", "tiny", "--seeds", str(SEEDS), "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp")
    write_dataset(build_source("simulator", n=8, size=64, seed=11), root / "train", CardInfo("train", "t"))
    write_dataset({"test": build_source("simulator", n=4, size=64, seed=13)}, root / "test", CardInfo("test", "t"))
    return root


def test_rank_shares_of_the_crop_plan_are_one_process_plan_of_the_global_batch():
    maps = np.zeros((5, 48, 40), np.uint8)
    data = LabeledSet(np.zeros((5, 48, 40, 3), np.uint8), maps, "simulator", DataRef("d", "d", "h", 5))
    one = crop_plan(np.random.default_rng(7), data, 6, 16)
    shares = [crop_plan(np.random.default_rng(7), data, 3, 16, Group(rank, 2)) for rank in range(2)]
    assert shares[0][0] + shares[1][0] == one[0]  # rank r keeps crops 3r..3r+2 of the global plan
    assert shares[0][1:] == shares[1][1:] == one[1:]  # one rotation and flip for the whole global batch


def _miou(path) -> list[float]:
    run = BenchmarkRun.load(path)
    return next(r for r in run.results if r.metric == "miou").extra["per_seed"]


def test_two_processes_reach_the_one_process_miou_within_the_seed_spread(data, tmp_path, run_in_group, one_thread):
    args = ["bench", "seg", "--train", str(data / "train"), "--test", str(data / "test"), *TINY]
    one = ["--batch-size", "4", "--out", str(tmp_path / "one.json"), "--checkpoints", str(tmp_path / "c1")]
    assert main([*args, *one]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "--",
               "histosynth.cli", *args, "--batch-size", "2", "--out", tmp_path / "two.json",
               "--checkpoints", tmp_path / "c2"]
    code, stdout, stderr = run_in_group(command, env)
    assert code == 0, stderr[-3000:]
    assert stdout.count("results: ") == 1  # rank 0 alone writes and prints

    two = BenchmarkRun.load(tmp_path / "two.json")
    assert two.settings["processes"] == 2 and two.settings["train"]["batch_size"] == 2
    states = sorted((tmp_path / "c2").glob(f"*/step-*/{STATE_FILE}"))
    assert len(states) == SEEDS  # one checkpoint per seed, both ranks' RNG states in it
    assert all(len(list(p.parent.glob("random_states_*.pkl"))) == 2 for p in states)
    keys = {p.parent.parent.name for p in states}
    assert not keys & {p.parent.parent.name for p in (tmp_path / "c1").glob(f"*/step-*/{STATE_FILE}")}
    for state in states:
        assert len(json.loads(state.read_text())["losses"]) == 20

    one_miou, two_miou = np.array(_miou(tmp_path / "one.json")), np.array(_miou(tmp_path / "two.json"))
    # Same init and crops per step, but per-rank BatchNorm statistics, per-rank dropout masks and another float
    # reduction order: the runs diverge, so a 2-process run of seed s is at most as far from the 1-process run as
    # another seed. Under that model the difference of the seed means has variance <= 2 sigma^2 / n, and with the
    # seed-to-seed sigma pooled over both runs (2(n-1) degrees of freedom) |diff| / (s_p sqrt(2/n)) is at most
    # Student t: the bound below fails a correct implementation with probability <= 1% (two-sided). The runs are
    # deterministic (fixed seeds, one thread each, gloo sums in a fixed order): a pass is not a lucky draw per run.
    pooled = math.sqrt((one_miou.var(ddof=1) + two_miou.var(ddof=1)) / 2)
    assert pooled > 0  # the seeds differ: the yardstick is not degenerate
    bound = stats.t.ppf(0.995, 2 * (SEEDS - 1)) * pooled * math.sqrt(2 / SEEDS)
    assert abs(one_miou.mean() - two_miou.mean()) <= bound, (one_miou, two_miou, bound)



RESUME_SCRIPT = """
import sys
from pathlib import Path

import torch

from histosynth.benchmark.downstream.group import close_group
from histosynth.benchmark.downstream.kinds import TrainingStopped, train_config
from histosynth.benchmark.downstream.run import run_downstream

torch.set_num_threads(1)
data, checkpoints, stop_at = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
try:
    run_downstream({"train": (data / "train", "train")}, (data / "test", "test"), preset="tiny", seeds=[0],
                   config=train_config("tiny", steps=8, batch_size=2, checkpoint_every=4), checkpoints=checkpoints,
                   stop=(lambda step, loss: step == stop_at) if stop_at else None)
except TrainingStopped:
    print("stopped")
close_group()
"""


@pytest.mark.slow
def test_a_stopped_two_process_run_resumes_to_the_uninterrupted_losses(data, tmp_path, run_in_group):
    """Each rank restores its own dropout RNG from the shared checkpoint: the resumed run's losses and weights are
    bit-identical to the uninterrupted run's (restoring rank 0's state on every rank would change the losses after
    the resume point)."""
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(checkpoints, stop_at):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", script,
                   data, checkpoints, str(stop_at)]
        code, stdout, stderr = run_in_group(command, env)
        assert code == 0, stderr[-3000:]
        return stdout

    run(tmp_path / "whole", 0)
    assert run(tmp_path / "split", 4).count("stopped") == 2  # both ranks stop after step 4
    run(tmp_path / "split", 0)
    (whole,), (split,) = (list((tmp_path / name).glob(f"*/step-*/{STATE_FILE}")) for name in ("whole", "split"))
    assert whole.parent.parent.name == split.parent.parent.name  # the same training (key includes the 2 processes)
    assert json.loads(split.read_text())["losses"] == json.loads(whole.read_text())["losses"]
    assert (split.parent / "model.safetensors").read_bytes() == (whole.parent / "model.safetensors").read_bytes()
