"""Training speed settings decided per machine at run time, and recorded with what they produced.

"auto" precision is bf16 autocast where this machine runs it faster, else fp32: on a CUDA device that supports bf16;
on a CPU only if it has native bf16 instructions (AVX512_BF16 or AMX-BF16 in /proc/cpuinfo) and a measured
forward+backward of a small convolution block is at least MIN_SPEEDUP faster in bf16 than in fp32. The block is
timed on one thread, fp32 and bf16 interleaved, fastest of several rounds: what the core's instructions give, which
the machine's load cannot swing the way it swings multi-threaded timings (on a busy 2-core machine two threads ran
the same block ten times slower than one). The measurement (about a second) is cached per CPU model and torch
version under the cache root, so a machine decides once. fp32 ("no") stays the reference of every determinism test.

Under CPU bf16 autocast, attention may still run in float32: torch's CPU flash-attention kernel can be slower in bf16
than in float32 (at small head dims), so each attention shape is timed both ways once per machine, the same way, and
the faster one is kept (attention_fp32_faster).
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from histosynth.cache_dirs import cache_dir

MIN_SPEEDUP = 1.2  # below this, bf16's rounding is not worth it
PRECISIONS = ("auto", "no", "bf16", "fp16")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """Whether the CPU advertises bf16 arithmetic (AVX512_BF16 or AMX-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _probe_times(rounds: int = 6) -> tuple[float, float]:
    """Fastest fp32 and fastest bf16 forward+backward of a small UNet-like convolution block on the CPU, the two
    interleaved round by round (the minimum is what load cannot inflate)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    layers = torch.nn.Sequential(torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.GroupNorm(8, 64), torch.nn.SiLU(),
                                 torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(64, 32, 3, padding=1))
    x = torch.randn(4, 32, 48, 48, generator=generator)
    best = {False: float("inf"), True: float("inf")}
    for index in range(rounds + 1):
        for bf16 in (False, True):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = layers(x).float().square().mean()
            loss.backward()
            if index:  # the first round pays for kernel selection
                best[bf16] = min(best[bf16], time.perf_counter() - start)
    return best[False], best[True]


def cpu_bf16_speedup() -> float:
    """fp32 time / bf16 time of the probe block on one thread (cached per machine; 0 without native bf16)."""
    if not cpu_has_native_bf16():
        return 0.0
    path = _machine_file("bf16")
    try:
        return float(json.loads(path.read_text())["speedup"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    with torch_threads(1):
        fp32, bf16 = _probe_times()
    speedup = fp32 / bf16
    from histosynth.atomic import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"key": _machine_key(), "fp32_s": fp32, "bf16_s": bf16, "speedup": speedup}) + "\n")
    return speedup


_ATTENTION_DECISIONS: dict[str, bool] = {}  # this process's copy of the machine's cached decisions


def _machine_key() -> str:
    import torch

    return f"{cpu_model()}|torch {torch.__version__}"


def _machine_file(kind: str) -> Path:
    """The cache file of one kind of measurement on this machine (CPU model and torch version)."""
    return cache_dir("speed") / f"{kind}-{hashlib.sha256(_machine_key().encode()).hexdigest()[:16]}.json"


def attention_shape_name(query: tuple[int, ...], key: tuple[int, ...]) -> str:
    """"BxHxLxE" for q's shape, with "/S" appended when the keys are S tokens and not L (cross-attention)."""
    name = "x".join(str(size) for size in query)
    return name if tuple(key[:-1]) == tuple(query[:-1]) else f"{name}/{key[-2]}"


def _attention_times(query: tuple[int, ...], key: tuple[int, ...], rounds: int = 3) -> tuple[float, float]:
    """Fastest float32 and fastest bf16 forward+backward of scaled-dot-product attention with q of shape `query` and
    k, v of shape `key`, on random inputs from a private generator (the run's RNG streams are untouched), the two
    interleaved."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(shape, generator=generator) for shape in (query, key, key))
    grad = torch.randn(query, generator=generator)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    with torch.autocast("cpu", enabled=False), torch.enable_grad():
        for index in range(rounds + 1):
            for dtype in best:
                inputs = [t.to(dtype).requires_grad_() for t in (q, k, v)]
                start = time.perf_counter()
                F.scaled_dot_product_attention(*inputs).backward(grad.to(dtype))
                if index:  # the first round pays for kernel selection
                    best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.float32], best[torch.bfloat16]


def _saved_attention_decisions(path: Path) -> dict:
    try:
        saved = json.loads(path.read_text())["shapes"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def _valid_decision(record: object) -> bool:
    return isinstance(record, dict) and isinstance(record.get("fp32_faster"), bool)


def attention_fp32_faster(query: tuple[int, ...], key: tuple[int, ...] | None = None) -> bool:
    """Whether attention with q of shape `query` (batch, heads, tokens, head dim) and k, v of shape `key` (default:
    q's) runs forward+backward faster in float32 than in bf16 on this CPU: timed on one thread the first time a
    shape is seen, then cached per CPU model and torch version (one file holds every shape), so a machine decides
    each shape once."""
    key = query if key is None else key
    name = attention_shape_name(query, key)
    if name in _ATTENTION_DECISIONS:
        return _ATTENTION_DECISIONS[name]
    path = _machine_file("attention")
    record = _saved_attention_decisions(path).get(name)
    if not _valid_decision(record):
        with torch_threads(1):
            fp32, bf16 = _attention_times(query, key)
        from histosynth.atomic import write_text_atomic

        # read again just before writing: another process may have recorded shapes (this one too, first wins)
        # while this one was timing
        shapes = _saved_attention_decisions(path)
        if not _valid_decision(shapes.get(name)):
            shapes[name] = {"fp32_s": fp32, "bf16_s": bf16, "fp32_faster": fp32 < bf16}
        record = shapes[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps({"key": _machine_key(), "shapes": shapes}, indent=1) + "\n")
    _ATTENTION_DECISIONS[name] = record["fp32_faster"]
    return record["fp32_faster"]


def resolve_precision(setting: str) -> str:
    """A mixed-precision setting for accelerate: "auto" decided as the module docstring says; others as given."""
    import torch

    if setting not in PRECISIONS:
        raise ValueError(f"unknown precision {setting!r}; choose from {', '.join(PRECISIONS)}")
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_bf16_speedup() >= MIN_SPEEDUP else "no"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block with `threads` torch CPU threads (None: as they are) and put the count back after; yields the
    count in use. On a busy machine one thread can be many times faster than contended ones, and bytes depend on
    the count, so a training run states it and records it (speed_record)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if threads is not None:
            torch.set_num_threads(before)


def speed_record(precision: str) -> dict[str, object]:
    """What a trained model or a result records of how it was computed: precision, threads, device, CPU model."""
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_model()
    return {"precision": "fp32" if precision == "no" else precision, "threads": torch.get_num_threads(),
            "device": device}
