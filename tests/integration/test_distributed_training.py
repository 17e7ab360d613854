"""`histosynth train` under torchrun with 2 CPU processes: one memory-mapped copy of the training set shared by
both ranks, the model saved once, and a resumed multi-process run continuing from the checkpoint."""

import json
import os
import sys

import pytest

from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.generators.training import latest_checkpoint
from histosynth.sources import build_source


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "sim"
    write_dataset(build_source("simulator", n=5, size=32, seed=4, mpp=4.0), out, CardInfo("sim", "test"))
    return out


def torchrun_train(data, out, steps, run_in_group, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "--",
               "histosynth.cli", "train", "htd", "--preset", "tiny", "--data", data, "--out", out,
               "--steps", str(steps), "--batch-size", "2", "--checkpoint-every", "1", "--no-heterogeneity", *extra]
    code, stdout, stderr = run_in_group(command, env)
    assert code == 0, stderr[-3000:]
    return stdout


def test_two_process_training_shares_one_spill_and_resumes(data, tmp_path, run_in_group):
    out = tmp_path / "model"
    torchrun_train(data, out, 2, run_in_group)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["data"]["patches"] == 5 and config["training"]["steps"] == 2
    spill = out / "training" / "arrays"
    manifest = json.loads((spill / "manifest.json").read_text())
    assert manifest["n"] == 5 and (spill / "images.u8").stat().st_size == 5 * 32 * 32 * 3
    assert sorted(p.name for p in (out / "training").iterdir() if p.name.startswith("arrays")) == ["arrays"]
    spilled_at = (spill / "images.u8").stat().st_ino
    assert latest_checkpoint(out / "training").name == "step-00000002"

    torchrun_train(data, out, 3, run_in_group, "--resume")
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["resumed_from_step"] == 2 and config["training"]["steps"] == 3
    assert latest_checkpoint(out / "training").name == "step-00000003"
    assert (spill / "images.u8").stat().st_ino == spilled_at  # the same data: the spill was reused, not rewritten
