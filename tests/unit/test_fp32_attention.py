"""Under CPU bf16 autocast the training loop runs attention in float32 for the shapes this machine measured faster
that way (histosynth.speed.attention_fp32_faster, cached per machine), records which shapes did, and a resumed run
keeps the choice its checkpoint recorded."""

import json

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from histosynth import speed
from histosynth.generators.training import STATE_FILE, StepContext, TrainStep, run_training
from histosynth.training.precision import cpu_bf16_forward, fp32_attention_forwards, resolve_fp32_attention

SHAPE = (2, 2, 16, 8)  # batch, heads, tokens, head dim of the block below on a (2, 16, 16) input


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(speed, "_ATTENTION_DECISIONS", {})
    return tmp_path / "cache" / "speed"


def decide(cache, shape: tuple[int, ...], fp32_faster: bool) -> None:
    """Write the machine's cached decision for one shape, as a machine that measured it so would have."""
    speed.attention_fp32_faster(shape)  # measure once, so the file has its real layout
    (path,) = cache.glob("attention-*.json")
    saved = json.loads(path.read_text())
    saved["shapes"]["x".join(map(str, shape))]["fp32_faster"] = fp32_faster
    path.write_text(json.dumps(saved))
    speed._ATTENTION_DECISIONS.clear()


def test_each_shape_is_measured_once_and_the_cached_decision_is_followed(cache):
    first = speed.attention_fp32_faster(SHAPE)
    (path,) = cache.glob("attention-*.json")
    record = json.loads(path.read_text())["shapes"]["2x2x16x8"]
    assert record["fp32_faster"] == first == (record["fp32_s"] < record["bf16_s"])
    assert record["fp32_s"] > 0 and record["bf16_s"] > 0
    speed.attention_fp32_faster((1, 1, 8, 4))
    assert set(json.loads(path.read_text())["shapes"]) == {"2x2x16x8", "1x1x8x4"}  # one file, every shape
    decide(cache, SHAPE, not first)
    assert speed.attention_fp32_faster(SHAPE) is (not first)  # the machine decided: no second measurement


def test_cross_attention_is_timed_and_cached_at_its_own_key_length(cache):
    speed.attention_fp32_faster((2, 2, 16, 8), (2, 2, 1, 8))
    (path,) = cache.glob("attention-*.json")
    assert set(json.loads(path.read_text())["shapes"]) == {"2x2x16x8/1"}  # not the self-attention entry


def test_a_process_timing_beside_another_keeps_its_shapes_and_its_decision_for_the_same_shape(cache, monkeypatch):
    speed.attention_fp32_faster((1, 1, 8, 4))
    (path,) = cache.glob("attention-*.json")
    timing = speed._attention_times

    def another_process_records_meanwhile(query, key, rounds=3):
        saved = json.loads(path.read_text())
        saved["shapes"]["2x2x16x8"] = {"fp32_s": 1.0, "bf16_s": 2.0, "fp32_faster": True}
        saved["shapes"]["3x3x3x3"] = {"fp32_s": 2.0, "bf16_s": 1.0, "fp32_faster": False}
        path.write_text(json.dumps(saved))
        return 5.0, 1.0  # this process would have chosen bf16

    monkeypatch.setattr(speed, "_attention_times", another_process_records_meanwhile)
    assert speed.attention_fp32_faster(SHAPE) is True  # the first decision recorded wins
    assert set(json.loads(path.read_text())["shapes"]) == {"1x1x8x4", "2x2x16x8", "3x3x3x3"}
    monkeypatch.setattr(speed, "_attention_times", timing)


def attention_block() -> Attention:
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8)


class AttentionKernelDtypes(TorchDispatchMode):
    """Notes the dtypes of q, k, v at every aten attention op: what the kernels received, seen at the dispatcher
    (below autocast and below the torch-function mode under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: set[torch.dtype] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if "scaled_dot_product" in func.name():
            self.dtypes |= {t.dtype for t in args[:3]}
        return func(*args, **(kwargs or {}))


def sdpa_input_dtypes(block: nn.Module, x: torch.Tensor) -> set[torch.dtype]:
    with AttentionKernelDtypes() as seen:
        block(x)
    return seen.dtypes


@pytest.mark.parametrize("fp32_faster", [True, False])
def test_attention_runs_in_the_precision_the_machine_chose(cache, fp32_faster):
    decide(cache, SHAPE, fp32_faster)
    block = attention_block()
    x = torch.randn(2, 16, 16)
    reference = block(x).detach()
    restores = [cpu_bf16_forward(block)]
    assert sdpa_input_dtypes(block, x) == {torch.bfloat16}  # autocast alone: bf16 attention
    used: set[str] = set()
    restores += fp32_attention_forwards(block, used)
    assert sdpa_input_dtypes(block, x) == ({torch.float32} if fp32_faster else {torch.bfloat16})
    assert used == ({"2x2x16x8"} if fp32_faster else set())
    out = block(x)
    out.sum().backward()  # gradients flow through the float32 attention
    assert block.to_q.weight.grad is not None and out.dtype == torch.float32
    # bf16 rounding of the projections bounds the difference either way (8 bits of mantissa, values of order 1)
    torch.testing.assert_close(out.detach(), reference, atol=0.05, rtol=0.05)
    for restore in reversed(restores):
        restore()
    assert "forward" not in block.__dict__


class AttentionStep(TrainStep):
    def __init__(self) -> None:
        self.block = attention_block()

    def modules(self):
        return {"model": self.block}

    def __call__(self, ctx: StepContext, batch, generator, step):
        loss = (ctx.modules["model"](batch["x"]) - batch["x"]).square().mean()
        ctx.apply(loss)
        return {"loss": loss}


def batch(step, micro, rank, world, device):
    return {"x": torch.from_numpy(np.random.default_rng(step).normal(size=SHAPE[:1] + (16, 16)).astype(np.float32))}


class Settings:
    batch_size, grad_accum, lr, scale_lr, lr_schedule, warmup_steps = 2, 1, 1e-3, False, "constant", 0
    weight_decay, adam_betas, max_grad_norm, ema_decay, checkpoint_every = 0.0, (0.9, 0.999), 1.0, None, 2
    keep_checkpoints, seed, progress, mixed_precision = 2, 0, False, "bf16"

    def __init__(self, steps: int) -> None:
        self.steps = steps


def test_a_bf16_run_records_its_fp32_attention_and_a_resumed_old_run_keeps_bf16(cache, tmp_path):
    decide(cache, SHAPE, True)
    step = AttentionStep()
    result = run_training(step, batch, Settings(4), tmp_path / "new")
    assert result.fp32_attention and result.fp32_attention_shapes == {"2x2x16x8"}
    assert "forward" not in step.block.__dict__
    state = json.loads((result.checkpoint / STATE_FILE).read_text())
    assert state["fp32_attention"] is True
    assert resolve_fp32_attention(True, result.checkpoint) is True

    old = tmp_path / "old"  # a checkpoint written before the choice existed: its run trained bf16 attention
    run_training(AttentionStep(), batch, Settings(2), old)
    (checkpoint,) = [p for p in old.iterdir() if (p / STATE_FILE).exists()]
    saved = json.loads((checkpoint / STATE_FILE).read_text())
    del saved["fp32_attention"]
    (checkpoint / STATE_FILE).write_text(json.dumps(saved))
    resumed = run_training(AttentionStep(), batch, Settings(4), old, resume=True)
    assert resumed.start_step == 2 and not resumed.fp32_attention and not resumed.fp32_attention_shapes
    assert json.loads((resumed.checkpoint / STATE_FILE).read_text())["fp32_attention"] is False


def test_fp32_runs_never_change_attention(tmp_path):
    assert resolve_fp32_attention(False) is False
    settings = Settings(2)
    settings.mixed_precision = "no"
    result = run_training(AttentionStep(), batch, settings, tmp_path)
    assert not result.fp32_attention and not result.fp32_attention_shapes


def test_the_model_card_says_which_attention_shapes_ran_in_float32():
    from histosynth.generators import build_generator
    from histosynth.generators.base import TrainingData, TrainReport
    from histosynth.generators.model_card import render_model_card

    generator = build_generator("harp-inpaint", "tiny")
    speed_record = {"precision": "bf16", "threads": 1, "device": "a CPU"}
    for shapes, expected in ((None, "per machine)."), (["16x16x256x8"], "attention in float32 for q shapes 16x16x256x8")):
        generator.train_report = TrainReport("harp-inpaint", 3, data=TrainingData(patches=4),
                                             extra={"speed": {**speed_record, **({"fp32_attention_shapes": shapes}
                                                                                 if shapes else {})}})
        card = render_model_card(generator, {"preset": "tiny"})
        (line,) = [line for line in card.splitlines() if line.startswith("- Trained in bf16")]
        assert expected in line


def test_cross_attention_runs_in_float32_by_its_own_decision(cache):
    decide(cache, (2, 2, 16, 8), False)  # the self-attention shape stays bf16 ...
    speed.attention_fp32_faster((2, 2, 16, 8), (2, 2, 1, 8))
    (path,) = cache.glob("attention-*.json")
    saved = json.loads(path.read_text())
    saved["shapes"]["2x2x16x8/1"]["fp32_faster"] = True  # ... the cross-attention shape runs in float32
    path.write_text(json.dumps(saved))
    speed._ATTENTION_DECISIONS.clear()
    torch.manual_seed(0)
    block = Attention(query_dim=16, cross_attention_dim=8, heads=2, dim_head=8)
    restore = cpu_bf16_forward(block)
    used: set[str] = set()
    restores = fp32_attention_forwards(block, used)
    context = torch.randn(2, 1, 8)
    with AttentionKernelDtypes() as seen:
        block(torch.randn(2, 16, 16), encoder_hidden_states=context)
    assert seen.dtypes == {torch.float32} and used == {"2x2x16x8/1"}
    for undo in [*reversed(restores), restore]:
        undo()
