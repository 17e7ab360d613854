"""Run submitted code under bubblewrap: capabilities dropped, no_new_privs, a seccomp deny-list, fresh namespaces,
read-only binds of exactly what it needs, one writable folder, and whole-sandbox limits (docs/sandbox.md)."""

from histosynth.leaderboard.sandbox.bwrap import SANDBOX_WORK, sandbox_input
from histosynth.leaderboard.sandbox.errors import SandboxError, SandboxUnavailable
from histosynth.leaderboard.sandbox.limits import SandboxLimits, limits_from_options
from histosynth.leaderboard.sandbox.runner import (
    SandboxResult,
    isolation_available,
    require_sandbox,
    run_sandboxed,
    sandbox_env,
)

__all__ = ["SANDBOX_WORK", "SandboxError", "SandboxLimits", "SandboxResult", "SandboxUnavailable", "isolation_available",
           "limits_from_options", "require_sandbox", "run_sandboxed", "sandbox_env", "sandbox_input"]
