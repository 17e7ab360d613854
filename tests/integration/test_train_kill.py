"""`histosynth train` killed with SIGKILL mid-training, then resumed with --resume, ends exactly where an
uninterrupted run ends.

The trainer's guarantee (histosynth.generators.training): everything random in a step is drawn from
RNGs seeded by (seed, step, micro-step, rank) and a checkpoint holds model, optimizer, LR schedule, EMA and step,
so a run resumed from the checkpoint of step n repeats no step and skips none. A checkpoint being written when
the kill lands is a hidden `.step-N.partial` folder that resume ignores.

The writer is stopped at an exact point (it prints where, then waits), so the kill never lands before or after
the moment under test. Bytes depend on the CPU thread count, so every run here uses one thread.
"""

import json
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from safetensors.numpy import load_file

import histosynth.cli as cli
from histosynth.dataset import build_dataset
from histosynth.generators import weights_hash
from histosynth.generators.training import STATE_FILE, latest_checkpoint

COMPONENTS = ["controlnet", "unet"]
STEPS, EVERY = 6, 2

KILLED = textwrap.dedent("""
    import signal, sys
    import accelerate
    import histosynth.cli as cli
    import histosynth.generators.diffusion.generator as model

    def pause(where):
        print(where, flush=True)  # the test reads this line and kills us while we wait here
        signal.pause()

    if sys.argv[1] == "after-step":  # steps 1..3 done, checkpoint of step 2 on disk, step 3 not saved
        run_training = model.run_training

        def with_stop(*args, on_step=None, **kwargs):
            return run_training(*args, on_step=lambda step: step == 3 and pause("after step 3"), **kwargs)

        model.run_training = with_stop
    else:  # "while-saving": step 4's state written to its hidden partial folder, not yet renamed into place
        save_state = accelerate.Accelerator.save_state

        def save_then_stop(self, output_dir=None, **kwargs):
            result = save_state(self, output_dir, **kwargs)
            if output_dir.endswith(".step-00000004.partial"):
                pause("saving step 4")
            return result

        accelerate.Accelerator.save_state = save_then_stop
    sys.exit(cli.main(sys.argv[2:]))
""")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-kill")
    build_dataset("simulator", root / "data", {"n": 5, "size": 32, "seed": 0, "mpp": 4.0})
    return root / "data"


def train_args(data, out, *extra):
    return [str(a) for a in ["train", "htd", "--data", data, "--preset", "tiny", "--steps", STEPS,
                             "--checkpoint-every", EVERY, "--seed", 3, "--out", out, *extra]]


@pytest.mark.parametrize("stop", ["after-step", "while-saving"])
def test_killed_training_resumes_to_the_uninterrupted_result(data, tmp_path, one_thread, capsys, stop):
    import os

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, stop, *train_args(data, killed)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    guard = threading.Timer(300, proc.kill)  # a hung run fails the test instead of blocking it forever
    guard.start()
    try:
        where = proc.stdout.readline().strip()  # blocks until the run reaches the point; "" if it died first
        assert where in ("after step 3", "saving step 4"), f"never reached the stop: {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    training = killed / "training"
    assert latest_checkpoint(training).name == "step-00000002" and not (killed / "config.json").exists()
    if stop == "while-saving":
        assert (training / ".step-00000004.partial").is_dir(), "the kill landed while step 4 was being saved"

    assert cli.main(train_args(data, killed, "--resume")) == 0
    assert "to step 6 (from step 2)" in capsys.readouterr().out, "resumed from the last complete checkpoint"
    assert cli.main(train_args(data, tmp_path / "straight")) == 0
    assert weights_hash(killed, COMPONENTS) == weights_hash(tmp_path / "straight", COMPONENTS)
    a, b = latest_checkpoint(killed / "training"), latest_checkpoint(tmp_path / "straight" / "training")
    assert a.name == b.name == "step-00000006" and json.loads((a / STATE_FILE).read_text())["step"] == STEPS
    raw_a, raw_b = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert raw_a.keys() == raw_b.keys() and all(np.array_equal(raw_a[k], raw_b[k]) for k in raw_a)
    assert (a / "optimizer.bin").read_bytes() == (b / "optimizer.bin").read_bytes()
    assert not list(training.glob(".*.partial")), "the torn checkpoint was replaced when step 4 was saved again"
