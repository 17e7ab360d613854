"""Device and precision of a training run: which precision it trains in (histosynth.speed decides "auto"; a resumed
run keeps its checkpoint's), the accelerate Accelerator for it, and the CPU bf16 autocast the loop applies itself,
with attention in float32 for the shapes where this machine runs it faster."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn
from torch.overrides import TorchFunctionMode

from histosynth.training.checkpoints import STATE_FILE, read_state


def resolve_mixed_precision(setting: str, checkpoint: Path | None = None) -> str:
    """The precision a run trains in: a resumed "auto" run keeps the one its checkpoint recorded (a run never
    changes precision half-way); otherwise histosynth.speed decides ("auto": bf16 where this machine runs it
    faster, else "no")."""
    from histosynth.speed import resolve_precision

    if setting == "auto" and checkpoint is not None:
        recorded = read_state(checkpoint / STATE_FILE).get("precision")
        if recorded in ("no", "bf16", "fp16"):
            return recorded
    return resolve_precision(setting)


def resolve_fp32_attention(own_autocast: bool, checkpoint: Path | None = None) -> bool:
    """Whether a CPU bf16 run computes attention in float32 where this machine runs it faster: yes for a new run; a
    resumed run keeps its checkpoint's choice (checkpoints written before the choice existed trained without it)."""
    if not own_autocast:
        return False
    if checkpoint is not None:
        return read_state(checkpoint / STATE_FILE).get("fp32_attention") is True
    return True


def wants_cpu(device: str | None) -> bool:
    """Whether a run on `device` ("cpu", "cuda", "cuda:N"; None: CUDA when there is one) trains on the CPU."""
    if device is None:
        return not torch.cuda.is_available()
    return torch.device(device).type != "cuda"


@contextmanager
def on_device(device: str | None) -> Iterator[None]:
    """Make "cuda:N" the current CUDA device for the block: one accelerate process trains on the current device,
    so an explicit index is honored this way; anything else leaves the device as it is."""
    index = torch.device(device).index if device is not None and torch.device(device).type == "cuda" else None
    if index is None:
        yield
        return
    with torch.cuda.device(index):
        yield


def make_accelerator(cpu: bool, precision: str, grad_accum: int) -> tuple[Accelerator, bool]:
    """The Accelerator of one run, and whether the loop applies bf16 autocast itself (CPU bf16).

    accelerate keeps one device and one precision per process (AcceleratorState is shared by every Accelerator),
    but one process may train several models on different devices or in different precisions (tests, recipes, a
    benchmark's CPU segmenter after a GPU generator): on the CPU the loop applies bf16 autocast itself, and in a
    single process whose shared state asks for another device or precision that state is reset first (accelerate
    offers no public way to do this). Under torchrun the state is the launch's and a conflict stays accelerate's
    error.
    """
    from accelerate.state import AcceleratorState, PartialState

    cpu = cpu or not torch.cuda.is_available()
    own_autocast = cpu and precision == "bf16"
    mixed = "no" if own_autocast else precision
    if PartialState._shared_state and PartialState().num_processes == 1:
        other_device = (PartialState().device.type == "cpu") != cpu
        other_precision = bool(AcceleratorState._shared_state) and AcceleratorState().mixed_precision != mixed
        if other_device or other_precision:
            AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=grad_accum,
                              step_scheduler_with_optimizer=False)
    return accelerator, own_autocast


def replace_forward(module: nn.Module, forward: Callable[..., Any]) -> Callable[[], None]:
    """Set `forward` as `module`'s instance-level forward; returns the function that puts back what was there (an
    instance-level forward someone set before, or none, so the class's forward serves again)."""
    own = module.__dict__.get("forward")
    module.forward = forward

    def restore() -> None:
        if own is None:
            del module.forward
        else:
            module.forward = own

    return restore


def cpu_bf16_forward(module: nn.Module) -> Callable[[], None]:
    """Run `module`'s forward under CPU bf16 autocast with float32 outputs (what accelerate's mixed precision does to
    a prepared model); returns the function that puts the plain forward back after training."""
    from accelerate.utils import convert_outputs_to_fp32

    plain = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return plain(*args, **kwargs)

    return replace_forward(module, convert_outputs_to_fp32(forward))


def compiled_forward(module: nn.Module) -> Callable[[], None]:
    """Replace `module`'s forward (as it stands, autocast wrapper included) by `torch.compile` of it for the run;
    returns the function that puts it back. The module itself is untouched, so its state dict keys, checkpoints and
    saved models are the eager ones (torch.compile(module) would wrap it and prefix every key with `_orig_mod.`)."""
    return replace_forward(module, torch.compile(module.forward))


class _Fp32AttentionWhereFaster(TorchFunctionMode):
    """Runs bf16 scaled-dot-product attention on the CPU in float32 for the shapes histosynth.speed measured faster
    that way, and notes each such shape in `used`. Written here because autocast's op lists cannot be changed per op
    and diffusers has no attention processor that upcasts its scaled_dot_product_attention call."""

    def __init__(self, used: set[str]) -> None:
        super().__init__()
        self.used = used

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention or len(args) < 3:
            return func(*args, **kwargs)
        query = args[0]
        if query.device.type != "cpu" or torch.bfloat16 not in {t.dtype for t in args[:3]}:
            return func(*args, **kwargs)
        from histosynth.speed import attention_fp32_faster, attention_shape_name

        shapes = (tuple(query.shape), tuple(args[1].shape))
        if not attention_fp32_faster(*shapes):
            return func(*args, **kwargs)
        self.used.add(attention_shape_name(*shapes))
        upcast = [t.float() if torch.is_tensor(t) and t.is_floating_point() else t for t in args]
        mask = kwargs.get("attn_mask")
        if torch.is_tensor(mask) and mask.is_floating_point():
            kwargs = {**kwargs, "attn_mask": mask.float()}
        with torch.autocast("cpu", enabled=False):
            return func(*upcast, **kwargs).to(torch.bfloat16)


def fp32_attention_forwards(module: nn.Module, used: set[str]) -> list[Callable[[], None]]:
    """Wrap the forward of every diffusers attention block inside `module` so its attention runs in float32 where
    this machine runs it faster (under the loop's CPU bf16 autocast); the shapes that did are added to `used`.
    Returns the functions that put the plain forwards back. Only attention blocks are wrapped, so the rest of the
    network pays nothing for the torch-function mode."""
    from diffusers.models.attention_processor import Attention

    restores = []
    for block in module.modules():
        if isinstance(block, Attention):
            plain = block.forward

            def forward(*args: Any, _plain: Callable[..., Any] = plain, **kwargs: Any) -> Any:
                with _Fp32AttentionWhereFaster(used):
                    return _plain(*args, **kwargs)

            restores.append(replace_forward(block, forward))
    return restores
