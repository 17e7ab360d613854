"""Training precision is decided per machine at run time and recorded (histosynth.speed, the training loop): "auto"
follows a cached measurement, a resumed run keeps its checkpoint's precision, one process can train in fp32 and
bf16 one after the other, and the model's report says which it was."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from histosynth.generators.training import (
    STATE_FILE,
    StepContext,
    TrainStep,
    resolve_mixed_precision,
    run_training,
)
from histosynth.speed import MIN_SPEEDUP, cpu_bf16_speedup, cpu_has_native_bf16, resolve_precision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "speed"


def test_auto_follows_the_measured_speedup_and_the_measurement_is_cached(cache):
    speedup = cpu_bf16_speedup()
    expected = "bf16" if cpu_has_native_bf16() and speedup >= MIN_SPEEDUP else "no"
    assert resolve_precision("auto") == expected
    if not cpu_has_native_bf16():
        assert speedup == 0.0
        return
    (record,) = cache.glob("bf16-*.json")
    saved = json.loads(record.read_text())
    assert saved["speedup"] == pytest.approx(saved["fp32_s"] / saved["bf16_s"]) and speedup == saved["speedup"]
    record.write_text(json.dumps({**saved, "speedup": 0.5}))  # a machine that measured bf16 slower keeps fp32
    assert resolve_precision("auto") == "no"


def test_explicit_settings_pass_through_and_unknown_ones_are_refused():
    assert resolve_precision("no") == "no" and resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        resolve_precision("fp8")


def test_a_resumed_auto_run_keeps_its_checkpoints_precision(tmp_path):
    for recorded in ("no", "bf16"):
        (tmp_path / recorded).mkdir()
        (tmp_path / recorded / STATE_FILE).write_text(json.dumps({"step": 3, "precision": recorded}))
        assert resolve_mixed_precision("auto", tmp_path / recorded) == recorded
    assert resolve_mixed_precision("no", tmp_path / "bf16") == "no"  # an explicit setting wins


class Regression(TrainStep):
    def __init__(self) -> None:
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 32), nn.SiLU(), nn.Linear(32, 1))
        self.net[0].register_forward_hook(lambda module, args, out: inner.append(out.dtype))

    def modules(self):
        return {"model": self.net}

    def __call__(self, ctx: StepContext, batch, generator, step):
        prediction = ctx.modules["model"](batch["x"])
        dtypes.append(prediction.dtype)
        loss = (prediction - batch["y"]).square().mean()
        ctx.apply(loss)
        return {"loss": loss}


dtypes: list[torch.dtype] = []
inner: list[torch.dtype] = []


def batch(step, micro, rank, world, device):
    rng = np.random.default_rng(step)
    x = torch.from_numpy(rng.normal(size=(16, 8)).astype(np.float32))
    return {"x": x, "y": x.sum(dim=1, keepdim=True)}


class Settings:
    steps, batch_size, grad_accum, lr, scale_lr, lr_schedule, warmup_steps = 6, 16, 1, 1e-2, False, "constant", 0
    weight_decay, adam_betas, max_grad_norm, ema_decay, checkpoint_every = 0.0, (0.9, 0.999), 1.0, None, 0
    keep_checkpoints, seed, progress = 1, 0, False

    def __init__(self, precision):
        self.mixed_precision = precision


def test_one_process_trains_in_fp32_then_bf16_then_fp32_and_the_forward_is_put_back():
    runs = {}
    for precision in ("no", "bf16", "no"):
        step = Regression()
        dtypes.clear()
        inner.clear()
        result = run_training(step, batch, Settings(precision))
        runs.setdefault(precision, []).append(result)
        assert result.precision == precision and set(dtypes) == {torch.float32}  # outputs come back in fp32
        assert "forward" not in step.net.__dict__  # the module is as it was (no bf16 at sampling time)
        if precision == "bf16":
            assert set(inner) == {torch.bfloat16}  # the layers really ran in bf16
        assert result.losses[-1] < result.losses[0]
    assert runs["no"][0].losses == runs["no"][1].losses  # fp32 runs are unchanged by a bf16 run between them
    assert runs["bf16"][0].losses != runs["no"][0].losses
