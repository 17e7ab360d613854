"""Fixtures built once per session for the fuzz suite (a valid dataset, a tiny trained checkpoint, valid files of
every reader format, small read-only, full and nearly full file systems), and the count of cases per input kind
printed at the end of the run."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # format_writers: valid files of each reader format

KINDS = {"test_fuzz_datasets.py": "dataset shards and cards", "test_fuzz_readers.py": "reader formats",
         "test_fuzz_checkpoints.py": "checkpoints", "test_fuzz_bench.py": "bench inputs",
         "test_fuzz_publish.py": "publish arguments", "test_fuzz_results.py": "results files",
         "test_fuzz_recipes.py": "recipes", "test_fuzz_submit.py": "submissions",
         "test_fuzz_downstream.py": "bench seg/tstr/complete", "test_fuzz_masks.py": "data masks and build options",
         "test_fuzz_outputs.py": "output paths"}
_counts: Counter = Counter()


def pytest_collection_modifyitems(config, items):
    for item in items:
        kind = KINDS.get(Path(str(item.fspath)).name)
        if kind:
            _counts[kind] += 1


def pytest_terminal_summary(terminalreporter):
    if _counts:
        parts = ", ".join(f"{kind} {n}" for kind, n in _counts.items())
        terminalreporter.write_line(f"fuzz cases: {sum(_counts.values())} ({parts})")


@pytest.fixture(scope="session")
def fuzz_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-fixtures")


@pytest.fixture(scope="session")
def valid_dataset(fuzz_root) -> Path:
    """4 simulator patches of 32 px with tissue maps and nuclei, one shard."""
    from histosynth.dataset import build_dataset

    path = fuzz_root / "dataset"
    build_dataset("simulator", path, {"n": 4, "size": 32, "seed": 0, "mpp": 4.0})
    return path


@pytest.fixture(scope="session")
def tiny_checkpoint(fuzz_root, valid_dataset) -> Path:
    """A tiny HTD model trained 2 steps through the CLI on `valid_dataset`, without its resumable training state."""
    import shutil

    import torch

    from histosynth.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "htd", "--data", str(valid_dataset), "--preset", "tiny", "--steps", "2",
                     "--out", str(fuzz_root / "ckpt")]) == 0
    finally:
        torch.set_num_threads(threads)
    shutil.rmtree(fuzz_root / "ckpt" / "training")
    return fuzz_root / "ckpt"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Feature and label caches go to a session folder, never beside an output path."""
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path_factory.getbasetemp() / "fuzz-cache"))


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs with `options` on `path` (root only); False where this machine does not let us."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def _fill(folder: Path) -> None:
    """Write into `folder` until its file system is full."""
    try:
        with open(folder / "filler", "wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError as err:  # from a write, or from the close that flushes the rest
        if err.errno != errno.ENOSPC:
            raise


@pytest.fixture(scope="session")
def disks(tmp_path_factory):
    """Small file systems: `ro` read-only, `full` without a free block, `small` with 128 KiB free (tmpfs mounts).
    Where mounting is refused (not root, no mount), `mounted` is False and `disk_faults` simulates them."""
    root = tmp_path_factory.mktemp("disks")
    folders = {"ro": "ro,size=64k", "full": "size=64k", "small": "size=128k"}
    mounted = [name for name, options in folders.items() if _mount_tmpfs(root / name, options)]
    try:
        if len(mounted) == len(folders):
            _fill(root / "full")
        yield SimpleNamespace(mounted=len(mounted) == len(folders), **{name: root / name for name in folders})
    finally:
        for name in mounted:
            subprocess.run(["umount", "-l", str(root / name)], capture_output=True)


@pytest.fixture
def disk_faults(disks, monkeypatch):
    """`disks`, with the three file systems simulated where they could not be mounted: statvfs reports `ro`
    read-only and `full` without a free block, and a write into `small` fails with ENOSPC when it is flushed
    (an OSError injected at the write boundary, where a real full disk reports it)."""
    if disks.mounted:
        return disks
    real_statvfs, real_fsync = os.statvfs, os.fsync

    def statvfs(path):
        stats, where = real_statvfs(path), Path(os.fsdecode(path)).absolute()
        fields = list(stats)
        if where == disks.ro or disks.ro in where.parents:
            fields[8] |= os.ST_RDONLY
        if where == disks.full or disks.full in where.parents:
            fields[3] = fields[4] = 0
        return os.statvfs_result(fields)

    def fsync(fd):
        if str(disks.small) in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(os, "fsync", fsync)
    return disks
