"""The bounds of one sandboxed run, validated before anything starts.

Memory and process count hold for the whole sandbox (a cgroup, see `resources`); file size is the kernel's per-file
RLIMIT_FSIZE; output bytes and file count are the whole writable folder, watched by the runner.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

from histosynth.errors import InputError

GiB = 1 << 30
MiB = 1 << 20
# Importing torch takes ~0.4 GiB resident; a generator needs more. Below this a run fails for the scorer's reasons,
# not the submission's, so it is refused up front.
MIN_MEMORY_BYTES = 1 * GiB
# Under the RLIMIT_AS fallback the limit is on address space, which torch reserves far beyond what it touches: it
# cannot even be imported below about 3 GiB.
MIN_ADDRESS_SPACE_BYTES = 4 * GiB
MIN_PROCESSES = 32  # tasks, threads included: torch starts one thread per core at import
MAX_WALL_SECONDS = 7 * 24 * 3600.0


def machine_memory_bytes() -> int:
    """Physical memory of this machine (the most any limit can usefully allow)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds on one sandboxed run; an impossible value (NaN, negative, too small to import torch, more memory than
    the machine has) raises InputError naming the field and the allowed range."""

    wall_seconds: float = 3600.0
    memory_bytes: int = 16 * GiB  # the whole sandbox, every process together
    processes: int = 512  # tasks (processes and threads) alive at once
    file_bytes: int = 8 * GiB  # the largest single file it may write
    output_bytes: int = 32 * GiB  # everything under its writable folder (allocated blocks)
    output_files: int = 20_000  # files and folders under its writable folder
    open_files: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.wall_seconds, (int, float)) or not math.isfinite(self.wall_seconds) \
                or not 1 <= self.wall_seconds <= MAX_WALL_SECONDS:
            raise InputError(f"sandbox wall-clock limit must be a number of seconds in [1, {MAX_WALL_SECONDS:.0f}], "
                             f"not {self.wall_seconds!r}")
        machine = machine_memory_bytes()
        bounds = {"memory_bytes": (MIN_MEMORY_BYTES, machine), "processes": (MIN_PROCESSES, 1 << 20),
                  "file_bytes": (MiB, 1 << 50), "output_bytes": (MiB, 1 << 50), "output_files": (16, 10_000_000),
                  "open_files": (64, 1 << 20)}
        for item in fields(self):
            if item.name not in bounds:
                continue
            value, (low, high) = getattr(self, item.name), bounds[item.name]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                why = " (this machine's memory)" if item.name == "memory_bytes" else ""
                raise InputError(f"sandbox limit {item.name} must be a whole number in [{low}, {high}]{why}, "
                                 f"not {value!r}")


def limits_from_options(timeout_seconds: float, memory_gb: float, **other: int) -> SandboxLimits:
    """SandboxLimits from CLI-style options (seconds, GiB), refusing NaN, infinities and non-positive sizes."""
    if not isinstance(memory_gb, (int, float)) or not math.isfinite(memory_gb) or memory_gb <= 0:
        raise InputError(f"--memory-gb must be a positive number of GiB, not {memory_gb!r}")
    try:
        return SandboxLimits(wall_seconds=float(timeout_seconds), memory_bytes=int(memory_gb * GiB), **other)
    except InputError as err:
        raise InputError(f"{err} (from --timeout {timeout_seconds!r}, --memory-gb {memory_gb!r})") from err
