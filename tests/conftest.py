"""Test-wide settings: offline Hub, pinned threads, and the bare-import guard."""

from __future__ import annotations

import os
import sys

import pytest

ROOT_PACKAGES = ("generators", "baselines", "benchmark", "leaderboard", "data_cards")

if not os.environ.get("HISTOSYNTH_HUB_TESTS"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")


def bare_root_modules() -> list[str]:
    """Root folders imported under their bare names instead of through `histosynth.` (a second module copy)."""
    return sorted(m for m in sys.modules if m.split(".")[0] in ROOT_PACKAGES)


@pytest.fixture(autouse=True, scope="session")
def _no_bare_imports_during_tests():
    """Fail the session if any test or library import pulled in a bare root package."""
    yield
    bare = bare_root_modules()
    assert not bare, f"bare imports of root folders (import through histosynth.<name>): {bare}"
