"""The shared training loop with steps that are not diffusion: a GAN's two optimizers, and a two-adapter model
that switches LoRA adapters per step. Both train, and a run resumed from a checkpoint ends bit-identical to an
uninterrupted one."""

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, inject_adapter_in_model
from peft.functional import set_adapter
from safetensors.torch import load_file
from torch import nn

from histosynth.generators.training import (
    Batch,
    LoopSettings,
    OptimizerSpec,
    StepContext,
    TrainStep,
    latest_checkpoint,
    run_training,
)


@dataclass
class Settings:
    """Only the loop's own fields (LoopSettings): no diffusion config is needed to train."""

    steps: int = 4
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 1e-2
    scale_lr: bool = False
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.5, 0.999)
    max_grad_norm: float | None = 1.0
    mixed_precision: str = "no"
    ema_decay: float | None = 0.9
    checkpoint_every: int = 2
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = False
    compile: bool = False


class HingeGANStep(TrainStep):
    """A discriminator update, then a generator update, each with its own optimizer."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        self.g, self.d = generator, discriminator

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.g, "discriminator": self.d}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        return {"generator": OptimizerSpec(list(self.g.parameters()), settings.lr, settings.adam_betas),
                "discriminator": OptimizerSpec(list(self.d.parameters()), 4 * settings.lr, settings.adam_betas)}

    def ema_optimizer(self) -> str | None:
        return "generator"

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        g, d = ctx.modules["generator"], ctx.modules["discriminator"]
        noise = torch.randn(batch["real"].shape[0], 4, generator=generator)
        fake = g(noise)
        loss_d = F.relu(1 - d(batch["real"])).mean() + F.relu(1 + d(fake.detach())).mean()
        ctx.apply(loss_d, "discriminator")
        d.requires_grad_(False)
        loss_g = -d(fake).mean()
        ctx.apply(loss_g, "generator")
        d.requires_grad_(True)
        return {"loss": loss_g, "loss_d": loss_d}


def gan_batch(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
    draw = torch.Generator().manual_seed(1000 * step + micro)
    return {"real": torch.randn(2, 3, generator=draw) + torch.tensor([2.0, -1.0, 0.5])}


def make_gan() -> HingeGANStep:
    torch.manual_seed(0)
    return HingeGANStep(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
                        nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1)))


def state(step_fn: TrainStep) -> dict[str, torch.Tensor]:
    return {f"{m}.{k}": v.detach().clone() for m, module in step_fn.modules().items()
            for k, v in module.state_dict().items()}


def test_a_gan_step_trains_both_networks_with_their_own_optimizers():
    gan = make_gan()
    before = state(gan)
    result = run_training(gan, gan_batch, Settings())
    after = state(gan)
    for prefix in ("generator.", "discriminator."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))
    assert len(result.losses) == 4 and set(result.loss_means) == {"loss", "loss_d"}


def test_a_gan_run_resumed_from_its_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    straight = make_gan()
    run_training(straight, gan_batch, Settings(), tmp_path / "straight")
    split = make_gan()
    stopped = Settings(steps=2)
    run_training(split, gan_batch, stopped, tmp_path / "split")
    assert latest_checkpoint(tmp_path / "split").name == "step-00000002"
    resumed = make_gan()  # a fresh process: the checkpoint restores weights, both optimizers, schedules and EMA
    result = run_training(resumed, gan_batch, Settings(), tmp_path / "split", resume=True)
    assert result.start_step == 2 and len(result.losses) == 2
    expected, got = state(straight), state(resumed)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


ADAPTERS = ("synthesis", "completion")


class SwitchingStep(TrainStep):
    """Dual-LoRA's pattern: even steps train the "synthesis" adapter, odd steps "completion"; the base is frozen."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        named = list(self.model.named_parameters())
        return {a: OptimizerSpec([p for n, p in named if f".{a}." in n], settings.lr, settings.adam_betas)
                for a in ADAPTERS}

    def ema_optimizer(self) -> str | None:
        return None

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        adapter = ADAPTERS[step % 2]
        set_adapter(self.model, adapter)
        loss = F.mse_loss(ctx.modules["model"](batch["x"]), batch["y"])
        ctx.apply(loss, adapter)
        return {"loss": loss, f"loss_{adapter}": loss}


def adapter_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 3))
    for name in ADAPTERS:
        inject_adapter_in_model(LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights="gaussian"), model,
                                adapter_name=name)
    for name, param in model.named_parameters():
        param.requires_grad_(any(f".{a}." in name for a in ADAPTERS))
    return model


def regression_batch(step: int, micro: int, rank: int, world: int, device: torch.device) -> Batch:
    draw = torch.Generator().manual_seed(step)
    x = torch.randn(4, 3, generator=draw)
    return {"x": x, "y": x.flip(1)}


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
def test_per_step_adapter_switching_trains_only_the_active_adapter():
    model = adapter_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = SwitchingStep(model)

    def changed(steps: int) -> set[str]:
        run_training(step, regression_batch, Settings(steps=steps, ema_decay=None, checkpoint_every=0))
        kinds = set()
        for name, param in model.named_parameters():
            if not torch.equal(param, before[name]):
                kinds.add(next((a for a in ADAPTERS if f".{a}." in name), "base"))
        return kinds

    assert changed(1) == {"synthesis"}  # step 0 trains the synthesis adapter only
    result = run_training(step, regression_batch, Settings(steps=2, ema_decay=None, checkpoint_every=0))
    kinds = {next((a for a in ADAPTERS if f".{a}." in n), "base") for n, p in model.named_parameters()
             if not torch.equal(p, before[n])}
    assert kinds == {"synthesis", "completion"}  # and never the frozen base
    # each adapter's own loss is averaged over the steps that trained it, not over all steps
    assert result.loss_means["loss_synthesis"] == pytest.approx(result.losses[0], rel=1e-6)
    assert result.loss_means["loss_completion"] == pytest.approx(result.losses[1], rel=1e-6)


class SharedScheduleStep(SwitchingStep):
    """SwitchingStep whose adapters declare they train on half of the steps; records each step's learning rate."""

    def __init__(self, model: nn.Module, share: float) -> None:
        super().__init__(model)
        self.share, self.lrs = share, {a: [] for a in ADAPTERS}

    def optimizers(self, settings: LoopSettings, world: int) -> dict[str, OptimizerSpec]:
        specs = super().optimizers(settings, world)
        return {name: OptimizerSpec(s.params, s.lr, s.betas, share=self.share) for name, s in specs.items()}

    def __call__(self, ctx: StepContext, batch: Batch, generator: torch.Generator, step: int) -> dict[str, torch.Tensor]:
        adapter = ADAPTERS[step % 2]
        self.lrs[adapter].append(ctx.optimizers[adapter].param_groups[0]["lr"])
        return super().__call__(ctx, batch, generator, step)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")
@pytest.mark.parametrize("share,expected", [(0.5, [1.0, 0.75, 0.5, 0.25]), (1.0, [1.0, 0.875, 0.75, 0.625])])
def test_an_optimizer_used_on_alternate_steps_runs_its_schedule_over_its_own_steps(share, expected):
    step = SharedScheduleStep(adapter_model(), share)
    run_training(step, regression_batch, Settings(steps=8, lr=1e-2, lr_schedule="linear", ema_decay=None,
                                                  checkpoint_every=0))
    for adapter in ADAPTERS:  # 4 uses each: a linear decay over 4 steps ends near 0, over 8 it stops half way
        assert step.lrs[adapter] == pytest.approx([1e-2 * f for f in expected])


def compiled_run_matches_eager(folder: Path) -> None:
    """Train the toy GAN eager and compiled from the same seed; assert they agree and the modules stay eager."""
    eager, compiled = make_gan(), make_gan()
    expected = run_training(eager, gan_batch, Settings())
    got = run_training(compiled, gan_batch, Settings(compile=True), folder)  # a dataclass field or LoopConfig's
    assert got.compiled and not expected.compiled
    # fp32 on both paths: inductor may fuse and reorder float32 sums, so the two agree to float32 rounding, not bits
    torch.testing.assert_close(torch.tensor(got.losses), torch.tensor(expected.losses))
    for module in compiled.modules().values():  # the compiled forward is gone after the run: sampling runs eager
        assert "forward" not in module.__dict__
    for name in ("model.safetensors", "model_1.safetensors"):  # the checkpoint holds the eager modules' keys
        saved = load_file(latest_checkpoint(folder) / name)
        assert saved and not any("_orig_mod" in key for key in saved)
    assert set(state(compiled)) == set(state(eager))
    for key, value in state(eager).items():
        torch.testing.assert_close(state(compiled)[key], value)


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile's CPU backend (inductor) builds its kernels with a C++ compiler: none found")
def test_a_compiled_run_trains_as_the_eager_one_and_leaves_the_modules_eager(tmp_path):
    # in a fresh interpreter, as a training run is: inductor imports setuptools, which fails in a process where
    # earlier tests left the standard library's distutils imported first
    code = f"import test_training_loop as t; from pathlib import Path; t.compiled_run_matches_eager(Path({str(tmp_path)!r}))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
