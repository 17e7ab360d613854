"""Fixtures built once per session for the fuzz suite (a valid dataset, a tiny trained checkpoint, valid files of
every reader format), and the count of cases per input kind printed at the end of the run."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))  # format_writers: valid files of each reader format

KINDS = {"test_fuzz_datasets.py": "dataset shards and cards", "test_fuzz_readers.py": "reader formats",
         "test_fuzz_checkpoints.py": "checkpoints", "test_fuzz_bench.py": "bench inputs",
         "test_fuzz_publish.py": "publish arguments"}
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
    from histosynth.commands.data import build_dataset

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
