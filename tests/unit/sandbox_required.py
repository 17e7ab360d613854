"""The sandbox tests need bubblewrap. Without it they fail, saying how to install it, rather than skip: CI installs
it (`make sandbox-deps`), so a silent skip there would hide a scorer that cannot run. Set
HISTOSYNTH_ALLOW_NO_SANDBOX=1 to skip them instead on a machine where it cannot be installed."""

from __future__ import annotations

import os

import pytest

from histosynth.leaderboard.sandbox import SandboxUnavailable, require_sandbox


@pytest.fixture(scope="session")
def sandbox() -> str:
    """bubblewrap's version; fails (or, when allowed, skips) the test where the sandbox cannot run."""
    try:
        return require_sandbox()
    except SandboxUnavailable as err:
        if os.environ.get("HISTOSYNTH_ALLOW_NO_SANDBOX") == "1":
            pytest.skip(f"no sandbox (allowed by HISTOSYNTH_ALLOW_NO_SANDBOX=1): {err}")
        pytest.fail(f"the sandbox cannot run here: {err}", pytrace=False)
