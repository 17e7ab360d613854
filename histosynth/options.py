"""Typed command-line options shared by every verb: argparse `type=` callables that refuse a bad value while the
command line is parsed, before any work, with the allowed range in the message.

    parser.add_argument("--lr", type=number(low=0, low_open=True))   # nan, inf, 0, -1 refused
    parser.add_argument("--size", type=patch_side)                   # bounded by this machine's memory
    parser.add_argument("--out", type=output_file)                   # a folder, a read-only folder, a full disk refused

argparse turns the ArgumentTypeError raised here into `error: argument --lr: must be ...` (histosynth.cli).
"""

from __future__ import annotations

import argparse
import math
import os
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import Callable

MAX_COUNT = 10_000_000  # samples, patches, masks, rows in one command
MAX_STEPS = 100_000_000  # optimizer or sampler steps
MAX_BATCH = 65_536
MAX_SEED = 2**63 - 1
MAX_THREADS = 1024
MAX_SEEDS = 1000  # training seeds of a downstream task
MAX_BOOTSTRAP = 1_000_000
MAX_DIGITS = 17  # a float64 holds 17 significant digits
MAX_SIDE = 16_384  # pixels per patch side, whatever the memory
MIN_SIDE = 8
BYTES_PER_PIXEL = 64  # working memory per pixel of one patch (image, labels, float copies, encodings)
MAX_TEXT = 200


def _fail(message: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{message}, got {text[:80]!r}")


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if high is None:
        return f"{'>' if low_open else '>='} {low:g}"
    if low is None:
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def integer(low: int = 0, high: int = MAX_COUNT, what: str = "an integer") -> Callable[[str], int]:
    """An integer in [low, high]."""
    def parse(text: str) -> int:
        stripped = text.strip()
        digits = stripped[1:] if stripped[:1] in "+-" else stripped
        if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
            raise _fail(f"must be {what} in [{low}, {high}]", text)
        value = int(stripped)
        if not low <= value <= high:
            raise _fail(f"must be {what} in [{low}, {high}]", text)
        return value
    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], float]:
    """A finite number in the interval given (open or closed at each end; None: unbounded on that side)."""
    allowed = "a finite number" + ("" if low is None and high is None else " " + _interval(low, high, low_open, high_open))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise _fail(f"must be {allowed}", text) from None
        inside = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) and (
            high is None or (value < high if high_open else value <= high))
        if not inside:
            raise _fail(f"must be {allowed}", text)
        return value
    parse.__name__ = "number"
    return parse


count = integer(1, MAX_COUNT, "a count")
steps = integer(1, MAX_STEPS, "a number of steps")
batch_size = integer(1, MAX_BATCH, "a batch size")
seed = integer(0, MAX_SEED, "a seed")
threads = integer(1, MAX_THREADS, "a number of threads")
seeds = integer(1, MAX_SEEDS, "a number of seeds")
digits = integer(1, MAX_DIGITS, "a number of significant digits")
fraction = number(0.0, 1.0)
positive = number(0.0, low_open=True)


def bootstrap(text: str) -> int:
    """Bootstrap replicates: 0 (no interval) or 2 .. MAX_BOOTSTRAP (one replicate has no spread)."""
    value = integer(0, MAX_BOOTSTRAP, "a number of replicates")(text)
    if value == 1:
        raise _fail(f"must be 0 (no interval) or a number of replicates in [2, {MAX_BOOTSTRAP}]", text)
    return value


@lru_cache(maxsize=1)
def memory_bytes() -> int:
    """This machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 16 << 30


def max_side() -> int:
    """The largest patch side this machine can hold: MAX_SIDE, or less where the memory is smaller."""
    return max(MIN_SIDE, min(MAX_SIDE, math.isqrt(memory_bytes() // BYTES_PER_PIXEL)))


def patch_side(text: str) -> int:
    """A patch (or crop, or cell) side in pixels, bounded by what this machine's memory holds."""
    high = max_side()
    try:
        return integer(MIN_SIDE, high, "a side in pixels")(text)
    except argparse.ArgumentTypeError:
        gib = memory_bytes() / 2**30
        raise _fail(f"must be a side in pixels in [{MIN_SIDE}, {high}]: a patch must fit in this machine's {gib:.0f} "
                    f"GiB of memory at {BYTES_PER_PIXEL} bytes per pixel while it is processed, and no side exceeds "
                    f"{MAX_SIDE}", text) from None


def text(value: str) -> str:
    """Free text shown in pages and tables: at most MAX_TEXT characters, no control characters or newlines."""
    if len(value) > MAX_TEXT or any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value):
        raise _fail(f"must be at most {MAX_TEXT} characters without control characters or line breaks", value)
    return value


def device(value: str) -> str:
    """A torch device this machine has: cpu, cuda, cuda:N (N below the GPU count) or mps."""
    if value == "cpu":
        return value
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError):
        raise _fail("must be a torch device: cpu, cuda, cuda:N or mps", value) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _fail("must be a device this machine has: CUDA is not available here (torch sees no GPU), use "
                        "cpu", value)
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise _fail(f"this machine has {n} CUDA device(s): cuda:0 .. cuda:{n - 1}", value)
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise _fail("MPS is not available on this machine; use cpu", value)
    elif dev.type != "cpu":
        raise _fail(f"device type {dev.type!r} is not supported; use cpu, cuda, cuda:N or mps", value)
    return value


def _output(value: str, folder: bool) -> Path:
    from histosynth.atomic import OutputPathError, check_output

    try:
        return check_output(Path(value), folder)
    except OutputPathError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def output_folder(value: str) -> Path:
    """A folder to write (created, or replaced where the verb replaces it): see histosynth.atomic.check_output."""
    return _output(value, folder=True)


def output_file(value: str) -> Path:
    """A file to write (replaced atomically): see histosynth.atomic.check_output."""
    return _output(value, folder=False)


def existing_folder(value: str) -> Path:
    """A folder that exists."""
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: not a folder")
    return path


def existing_file(value: str) -> Path:
    """A regular file that exists."""
    path = Path(value)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{value}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{value}: not a regular file")
    return path
