"""Test-wide settings: offline Hub, pinned threads, and the bare-import guard."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
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


def run_process_group(command: list, env: dict | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """Run a command in its own process group and kill the whole group on timeout (torchrun's workers too),
    so a hung multi-process test never leaves orphans behind."""
    proc = subprocess.Popen([str(c) for c in command], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


@pytest.fixture
def run_in_group():
    """`run_process_group` for tests that launch subprocesses (torchrun, killed jobs)."""
    return run_process_group


@pytest.fixture
def network_attempts(monkeypatch) -> list[str]:
    """Record every attempt to resolve a host name or open a socket connection, and refuse it.

    Tests of offline failure paths assert the list stays empty: proof that no download or retry loop ran, which a
    wall-clock limit can only suggest (and flakes on a loaded machine)."""
    attempts: list[str] = []

    def refuse(kind: str):
        def fail(*args, **kwargs):
            attempts.append(f"{kind}{args[1:] if kind == 'connect' else args[:2]}")
            raise OSError(f"network refused by the test ({kind})")
        return fail

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after: on a shared 2-core machine two contended threads train
    several times slower, and thread count changes float reduction order (determinism tests pin it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
