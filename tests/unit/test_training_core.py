"""The one training loop (histosynth.training) and its three consumers: a run stopped or killed mid-way and resumed
ends with the weights and loss log of an uninterrupted run (the core, the generators' layer, the downstream
segmenters, the label-consistency segmenter); EMA is the diffusers EMA of the raw weights; snapshots see the EMA
weights and leave training unchanged; precision and threads are recorded."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from histosynth.training import (
    STATE_FILE,
    LoopConfig,
    RNGState,
    StepContext,
    TrainingStopped,
    TrainStep,
    latest_checkpoint,
    run_training,
)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bytes depend on the thread count: every run here uses one."""


class Regressor(TrainStep):
    """A small MLP with dropout: its randomness comes from all three sources a checkpoint must restore (the global
    torch RNG for dropout, the step's seeded generator for target noise, a sequential numpy stream for batches)."""

    def __init__(self) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.data = RNGState(1)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.net}

    def states(self) -> list:
        return [self.data]

    def batch(self, step, micro, rank, world, device):
        x = torch.from_numpy(self.data.generator.normal(size=(8, 4)).astype(np.float32)).to(device)
        return {"x": x, "y": x.sum(1, keepdim=True)}

    def __call__(self, ctx: StepContext, batch, generator, step):
        noise = 0.01 * torch.randn(batch["y"].shape, generator=generator)
        loss = (ctx.modules["model"](batch["x"]) - batch["y"] - noise).square().mean()
        ctx.apply(loss)
        return {"loss": loss}


SETTINGS = dict(steps=6, lr=1e-2, lr_schedule="cosine", warmup_steps=1, max_grad_norm=1.0, ema_decay=0.9,
                checkpoint_every=2, keep_checkpoints=2, progress=False, device="cpu")


def weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(folder=None, resume=False, stop=None, **changes):
    step = Regressor()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)  # the dropout stream of a fresh run
        result = run_training(step, step.batch, LoopConfig(**(SETTINGS | changes)), folder, resume=resume, stop=stop)
    return step, result


def test_a_stopped_and_resumed_run_repeats_no_step_and_skips_none(tmp_path):
    straight, whole = train()
    with pytest.raises(TrainingStopped, match="after step 3 of 6; rerun to resume from .*step-00000002"):
        train(tmp_path, stop=lambda step, loss: step == 3)
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    before = json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())["train_seconds"]
    torch.rand(11)  # the global RNG moves on; the checkpoint holds the one the run had
    resumed, result = train(tmp_path, resume=True)
    assert result.start_step == 2 and len(result.losses) == 4
    # training time adds up across the resume: the steps before it count once, from the checkpoint
    assert before > 0 and result.seconds_before == before and result.total_seconds == before + result.seconds
    assert json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())["train_seconds"] >= before
    assert result.loss_history == whole.loss_history and len(whole.loss_history) == 6
    assert same(weights(resumed.net), weights(straight.net))
    assert json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())["losses"] == whole.loss_history


KILLED = textwrap.dedent("""
    import signal, sys
    import torch
    sys.path.insert(0, sys.argv[2])
    from test_training_core import train

    torch.set_num_threads(1)

    def pause(step, loss):
        if step == 3:  # steps 1..3 done, the checkpoint of step 2 on disk, step 3 not saved
            print("after step 3", flush=True)
            signal.pause()
        return False

    train(sys.argv[1], stop=pause)
""")


def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(tmp_path), os.path.dirname(__file__)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        where = proc.stdout.readline().strip()  # blocks until the run reaches the point; "" if it died first
        assert where == "after step 3", proc.stderr.read()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL and latest_checkpoint(tmp_path).name == "step-00000002"
    resumed, result = train(tmp_path, resume=True)
    straight, whole = train()
    assert result.start_step == 2 and result.loss_history == whole.loss_history
    assert same(weights(resumed.net), weights(straight.net))


def test_the_ema_is_diffusers_warmup_ema_of_the_raw_weights_and_ends_in_the_modules():
    step = Regressor()
    raw = []
    params = list(step.net.parameters())
    shadow = [p.detach().clone() for p in params]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        run_training(step, step.batch, LoopConfig(**SETTINGS), on_step=lambda s: raw.append(
            [p.detach().clone() for p in params]))
    assert len(raw) == 6
    for t, current in enumerate(raw, start=1):  # decay 0 at step 1, then min(0.9, 1 - t^(-2/3)) (power 2/3)
        decay = 0.0 if t == 1 else min(0.9, 1 - t ** (-2 / 3))
        shadow = [s - (1 - decay) * (s - p) for s, p in zip(shadow, current, strict=True)]
    assert not all(torch.equal(a, b) for a, b in zip(raw[-1], params, strict=True))  # the EMA is not the raw weights
    for mine, theirs in zip(params, shadow, strict=True):
        torch.testing.assert_close(mine.detach(), theirs, rtol=1e-6, atol=1e-7)


def test_snapshots_see_the_ema_weights_at_their_steps_and_leave_training_unchanged():
    plain, _ = train()
    step = Regressor()
    seen = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        run_training(step, step.batch, LoopConfig(**(SETTINGS | {"snapshot_steps": (2, 6)})),
                     on_snapshot=lambda s, result: seen.update({s: (weights(step.net), list(result.losses))}))
    assert sorted(seen) == [2, 6] and len(seen[2][1]) == 2
    assert same(weights(step.net), weights(plain.net))  # saving snapshots changed nothing
    assert same(seen[6][0], weights(plain.net))  # the last snapshot is the final (EMA) model
    assert not same(seen[2][0], seen[6][0])


def test_precision_and_threads_are_recorded_and_a_resumed_auto_run_keeps_the_precision(tmp_path):
    dtypes = []
    step = Regressor()
    step.net[0].register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        result = run_training(step, step.batch, LoopConfig(**(SETTINGS | {"mixed_precision": "bf16", "threads": 2,
                                                                          "steps": 2})), tmp_path)
    assert result.precision == "bf16" and set(dtypes) == {torch.bfloat16}  # the layers really ran in bf16
    assert result.threads == 2 and torch.get_num_threads() == threads  # the count is put back after
    assert json.loads((latest_checkpoint(tmp_path) / STATE_FILE).read_text())["precision"] == "bf16"
    _, resumed = train(tmp_path, resume=True, mixed_precision="auto", steps=3)
    assert resumed.start_step == 2 and resumed.precision == "bf16"


def test_the_generators_layer_resumes_exactly_and_reports_a_damaged_checkpoint_as_a_checkpoint_error(tmp_path):
    from histosynth.generators.base import CheckpointError
    from histosynth.generators.training import run_training as generator_training

    def run(folder, resume=False, stop_at=None):
        step = Regressor()

        def on_step(done):
            if done == stop_at:
                raise KeyboardInterrupt  # what Ctrl-C does between two steps

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(5)
            result = generator_training(step, step.batch, LoopConfig(**SETTINGS), folder, resume, on_step=on_step)
        return step, result

    straight, whole = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "split", stop_at=5)
    resumed, result = run(tmp_path / "split", resume=True)
    assert result.start_step == 4 and result.loss_history == whole.loss_history
    assert same(weights(resumed.net), weights(straight.net))
    (latest_checkpoint(tmp_path / "split") / "model.safetensors").write_bytes(b"cut")
    with pytest.raises(CheckpointError, match="model.safetensors: damaged safetensors file, 3 bytes"):
        run(tmp_path / "split", resume=True)


@pytest.fixture(scope="module")
def nuclei_set(tmp_path_factory):
    from histosynth.benchmark.downstream.data import load_set
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    root = tmp_path_factory.mktemp("nuclei")
    write_dataset(build_source("simulator", n=3, size=64, seed=4, mpp=0.5), root / "sim", CardInfo("sim", "s"))
    return load_set(root / "sim", "train", "nuclei")


def test_a_downstream_training_stopped_and_resumed_ends_as_an_uninterrupted_one(nuclei_set, tmp_path):
    from histosynth.benchmark.downstream.kinds import kind_of
    from histosynth.benchmark.downstream.training import train_model
    from histosynth.classes import get_schema

    kind, k = kind_of("hovernet"), get_schema(nuclei_set.schema).num_classes
    config = kind.config("tiny", steps=4, batch_size=2, checkpoint_every=2)
    whole = train_model(kind, nuclei_set, k, "tiny", config, seed=1)
    with pytest.raises(TrainingStopped):
        train_model(kind, nuclei_set, k, "tiny", config, seed=1, checkpoints=tmp_path, stop=lambda s, loss: s == 3)
    torch.rand(11)
    resumed = train_model(kind, nuclei_set, k, "tiny", config, seed=1, checkpoints=tmp_path)
    assert resumed.resumed_at == 2 and resumed.losses == whole.losses and len(whole.losses) == 4
    assert same(weights(resumed.model), weights(whole.model))
    again = train_model(kind, nuclei_set, k, "tiny", config, seed=1, checkpoints=tmp_path)  # finished: read back
    assert again.resumed_at == 4 and again.losses == whole.losses and same(weights(again.model), weights(whole.model))


def test_a_checkpoint_of_the_old_downstream_format_is_refused_with_a_clear_error(nuclei_set, tmp_path):
    from histosynth.benchmark.downstream.kinds import kind_of
    from histosynth.benchmark.downstream.training import _fingerprint, train_model
    from histosynth.classes import get_schema
    from histosynth.errors import InputError

    kind, k = kind_of("hovernet"), get_schema(nuclei_set.schema).num_classes
    config = kind.config("tiny", steps=2, batch_size=2)
    old = tmp_path / _fingerprint(kind, nuclei_set, "tiny", config, k, 0, None) / "state.pt"
    old.parent.mkdir()
    old.write_bytes(b"old")
    with pytest.raises(InputError, match="state.pt: a checkpoint of an earlier histosynth version.*delete"):
        train_model(kind, nuclei_set, k, "tiny", config, seed=0, checkpoints=tmp_path)
    assert sorted(p.name for p in old.parent.iterdir()) == ["state.pt"]  # nothing trained or written beside it


def test_the_label_consistency_segmenter_stopped_and_resumed_ends_as_an_uninterrupted_one(tmp_path):
    from histosynth.benchmark.segmenter import train_segmenter

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    maps = rng.integers(0, 3, (8, 32, 32)).astype(np.uint8)
    options = dict(steps=4, batch_size=2, pretrained=False, checkpoint_every=2)
    whole = train_segmenter(images, maps, 3, **options)
    with pytest.raises(TrainingStopped):
        train_segmenter(images, maps, 3, **options, checkpoints=tmp_path / "ckpt", stop=lambda s, loss: s == 3)
    torch.rand(11)
    resumed = train_segmenter(images, maps, 3, **options, checkpoints=tmp_path / "ckpt")
    assert resumed.losses == whole.losses and len(whole.losses) == 4
    assert same(weights(resumed.model), weights(whole.model))
    cached = train_segmenter(images, maps, 3, **options, cache=tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [p.name for p in (tmp_path / "ckpt").iterdir()]
    assert same(weights(cached.model), weights(whole.model))  # the training state went once the model was cached
