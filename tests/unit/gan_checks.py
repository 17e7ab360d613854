"""Checks shared by test_gan_pix2pix.py and test_gan_spade.py: bad inputs, and SIGKILL resume. For the latter,
`histosynth train` killed after step 3 (the checkpoint of step 2 on disk) and resumed must end byte-identical to a run that never
stopped: G and D, both optimizers, both LR schedules and the step counter come back from the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import histosynth.cli as cli
from histosynth.dataset import build_dataset
from histosynth.generators import weights_hash
from histosynth.generators.training import STATE_FILE, latest_checkpoint

KILLED = textwrap.dedent("""
    import signal, sys
    import histosynth.baselines.gan.base as base
    import histosynth.cli as cli

    run_training = base.run_training

    def with_stop(*args, on_step=None, **kwargs):
        def stop(step):
            if step == 3:  # steps 1..3 done, the checkpoint of step 2 on disk, step 3 not saved
                print("after step 3", flush=True)  # the test reads this line and kills us while we wait here
                signal.pause()
        return run_training(*args, on_step=stop, **kwargs)

    base.run_training = with_stop
    sys.exit(cli.main(sys.argv[1:]))
""")
SAVED = {"model.safetensors", "model_1.safetensors", "optimizer.bin", "optimizer_1.bin", "custom_checkpoint_0.pkl",
         "custom_checkpoint_1.pkl"}
"""G and D, their Adam states and their two LR schedules (accelerate's custom checkpoints 0 and 1)."""


def check_sigkill_resume(name: str, tmp_path: Path, capsys) -> Path:
    """Kill and resume `name`'s tiny training, train it straight too, assert both end with the same bytes; returns
    the resumed model folder (the data are in tmp_path / "data")."""
    build_dataset("simulator", tmp_path / "data", {"n": 5, "size": 32, "seed": 0, "mpp": 4.0})

    def args(out: Path, *extra: str) -> list[str]:
        return [str(a) for a in ["train", name, "--data", tmp_path / "data", "--preset", "tiny", "--steps", 6,
                                 "--checkpoint-every", 2, "--seed", 3, "--no-heterogeneity", "--out", out, *extra]]

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, *args(killed)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    guard = threading.Timer(300, proc.kill)  # a hung run fails the test instead of blocking it forever
    guard.start()
    try:
        where = proc.stdout.readline().strip()
        assert where == "after step 3", f"never reached the stop: {proc.stderr.read()[-3000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(killed / "training").name == "step-00000002" and not (killed / "config.json").exists()

    assert cli.main(args(killed, "--resume")) == 0
    assert "to step 6 (from step 2)" in capsys.readouterr().out
    assert cli.main(args(tmp_path / "straight")) == 0
    for component in ("generator", "discriminator"):
        assert weights_hash(killed, [component]) == weights_hash(tmp_path / "straight", [component])
    a, b = latest_checkpoint(killed / "training"), latest_checkpoint(tmp_path / "straight" / "training")
    assert a.name == b.name == "step-00000006" and json.loads((a / STATE_FILE).read_text())["step"] == 6
    files = sorted(p.name for p in a.iterdir())
    assert SAVED | {"random_states_0.pkl"} <= set(files) and files == sorted(p.name for p in b.iterdir())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in SAVED)
    return killed


def check_bad_inputs(name: str, tiny_data: list, tmp_path: Path, capsys) -> None:
    """A GAN baseline refuses, with one clear message each: sampling before training, a condition without a map,
    a map in another schema, and (through the CLI, leaving nothing behind) training data without maps."""
    import pytest

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.errors import InputError
    from histosynth.generators import build_generator
    from histosynth.schema import Sample

    gen = build_generator(name, "tiny")
    with pytest.raises(RuntimeError, match="train first, or build with num_classes"):
        gen.sample(tiny_data[:1], seed=0)
    gen.train(tiny_data, {"steps": 1, "heterogeneity": None, "progress": False})
    no_map = Sample(image=tiny_data[0].image, provenance=tiny_data[0].provenance)
    with pytest.raises(InputError, match="no tissue map"):
        gen.sample([no_map], seed=0)
    wrong = Sample(image=tiny_data[0].image, tissue=tiny_data[0].tissue, tissue_schema="pseudo-tissue-k5",
                   provenance=tiny_data[0].provenance)
    with pytest.raises(InputError, match="'pseudo-tissue-k5'.*trained on 'simulator-tissue'"):
        gen.sample([wrong], seed=0)
    data, out = tmp_path / "unlabeled", tmp_path / "model"
    write_dataset([Sample(image=s.image, provenance=s.provenance) for s in tiny_data], data,
                  CardInfo("unlabeled", "simulator images without maps"))
    capsys.readouterr()  # the writer's progress bar
    assert cli.main(["train", name, "--data", str(data), "--preset", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "has no tissue map" in err[0]
    assert not out.exists()


def assert_class_color_order(gen, held: list) -> None:
    """Generated images follow their held-out maps: every pair of classes the simulator paints clearly apart
    (> 10 levels of green, the channel H&E classes differ most in; stroma and epithelium are 1 level apart and are
    not compared) comes out in the same order."""
    import numpy as np

    ids = np.concatenate([h.tissue.reshape(-1) for h in held])
    green_real = np.concatenate([h.image[..., 1].reshape(-1) for h in held]).astype(float)
    green_fake = np.concatenate([o.image[..., 1].reshape(-1) for o in gen.sample(held, seed=0)]).astype(float)
    classes = np.unique(ids)
    real = {c: green_real[ids == c].mean() for c in classes}
    fake = {c: green_fake[ids == c].mean() for c in classes}
    pairs = [(a, b) for a in classes for b in classes if real[a] > real[b] + 10]
    assert len(pairs) >= 6
    assert all(fake[a] > fake[b] for a, b in pairs), (real, fake)
