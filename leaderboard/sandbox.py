"""Run submitted code in isolation: its own folder, no secrets, no network, bounded time and memory.

The scorer never imports a submission; it runs the submission's command in a child process through
`run_sandboxed`, which
- gives it a scrubbed environment: only SAFE_ENV_KEYS pass through, HOME/TMPDIR/HF_HOME point into its work folder,
  the Hub is offline and proxies point nowhere; any variable whose name looks like a secret is refused;
- starts it under `unshare` in new user, mount, network and PID namespaces (no network interface but a down
  loopback, no view of other processes), where histosynth.leaderboard.sandbox_launch makes every mount read-only
  except the work folder, hides token files and credential folders (secret_paths) behind /dev/null or an empty
  tmpfs, and sets
  memory, CPU and file-size limits before exec-ing the command;
- kills its whole process group at the wall-clock limit.
Where user namespaces are unavailable the sandbox refuses to run (SandboxUnavailable) rather than run unconfined.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from histosynth.errors import InputError, UserFacingError
from histosynth.leaderboard.sandbox_launch import EXIT_SETUP_FAILED

UNSHARE = ("unshare", "--user", "--map-root-user", "--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc")
SAFE_ENV_KEYS = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "CUDA_VISIBLE_DEVICES", "TERM")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)KEY($|_)|AUTH", re.IGNORECASE)
NOWHERE_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, and the netns has no route anyway
TAIL_BYTES = 8000


class SandboxUnavailable(UserFacingError, RuntimeError):
    """This machine cannot isolate submitted code (no unprivileged user namespaces)."""


class SandboxError(UserFacingError, RuntimeError):
    """The sandbox itself could not be set up for a run (not a failure of the submission)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Bounds on one submission run: wall clock (the process group is killed), address space, CPU and file size."""

    wall_seconds: float = 3600.0
    memory_bytes: int | None = 16 << 30
    cpu_seconds: int | None = None
    file_bytes: int | None = 32 << 30


@dataclass
class SandboxResult:
    """What a sandboxed run did: exit code (negative = killed by that signal), whether the wall clock ran out, its
    output tails, and the isolation that was applied."""

    command: list[str]
    returncode: int
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    isolation: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """One line for a report."""
        if self.timed_out:
            return f"killed after the {self.seconds:.0f} s wall-clock limit"
        if self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        last = self.stderr.strip().splitlines()[-1:] or [""]
        return "finished" if self.ok else f"exit code {self.returncode}: {last[0][:300]}"


@lru_cache(maxsize=1)
def isolation_available() -> bool:
    """True when `unshare` can create the user, mount, network and PID namespaces here."""
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def sandbox_env(work: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: SAFE_ENV_KEYS from ours, offline Hub, homes inside `work`, plus `extra`."""
    for name in extra or {}:
        if SECRET_NAME.search(name):
            raise InputError(f"refusing to pass {name!r} to a submission: its name looks like a secret")
    env = {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(HOME=str(work / "home"), TMPDIR=str(work / "tmp"), HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", no_proxy="",
               NO_PROXY="", http_proxy=NOWHERE_PROXY, https_proxy=NOWHERE_PROXY, HTTP_PROXY=NOWHERE_PROXY,
               HTTPS_PROXY=NOWHERE_PROXY, PYTHONDONTWRITEBYTECODE="1")
    env.update(extra or {})
    return env


def secret_paths() -> list[str]:
    """Files and folders to hide from submissions: Hugging Face token files, credentials, keys.

    Not the whole home: interpreters and model caches often live there, and a submission may read base weights
    from the HF cache (offline)."""
    from huggingface_hub import constants

    home = Path.home()
    candidates = [constants.HF_TOKEN_PATH, constants.HF_STORED_TOKENS_PATH, home / ".huggingface" / "token",
                  home / ".netrc", home / ".git-credentials", home / ".pypirc", home / ".docker" / "config.json",
                  home / ".ssh", home / ".aws", home / ".gnupg", home / ".config" / "gh", home / ".kaggle"]
    return sorted({str(Path(p).resolve()) for p in candidates if Path(p).exists()})


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


def run_sandboxed(command: Sequence[str], work: Path | str, limits: SandboxLimits = SandboxLimits(),
                  extra_env: Mapping[str, str] | None = None, hide: Sequence[str] | None = None) -> SandboxResult:
    """Run `command` confined to the folder `work` (created if missing); see the module docstring."""
    if not isolation_available():
        raise SandboxUnavailable("cannot isolate submitted code here: `unshare --user --net --mount` failed (user "
                                 "namespaces disabled?); submissions are never run unconfined")
    work = Path(work).resolve()
    for sub in ("home", "tmp", "hf"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    hidden = [h for h in (secret_paths() if hide is None else [str(Path(h).resolve()) for h in hide])
              if not (str(work) + os.sep).startswith(h.rstrip(os.sep) + os.sep)]
    env = sandbox_env(work, extra_env)
    spec = {"work": str(work), "hide": hidden, "env": env, "memory_bytes": limits.memory_bytes,
            "cpu_seconds": limits.cpu_seconds, "file_bytes": limits.file_bytes}
    argv = [*UNSHARE, sys.executable, "-m", "histosynth.leaderboard.sandbox_launch", json.dumps(spec), "--", *command]
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="histosynth-sandbox-logs-") as logs:
        out_path, err_path = Path(logs) / "stdout", Path(logs) / "stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                       cwd=work, start_new_session=True)
            timed_out = False
            try:
                code = process.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
        stdout, stderr = _tail(out_path), _tail(err_path)
    if code == EXIT_SETUP_FAILED and "sandbox setup failed" in stderr:
        raise SandboxError(stderr.strip().splitlines()[-1])
    isolation = {"namespaces": "user, mount, network, pid", "filesystem": f"read-only except {work.name}/",
                 "hidden": len(hidden), "env": sorted(env), "limits": limits.__dict__}
    return SandboxResult(list(command), code, timed_out, time.monotonic() - start, stdout, stderr, isolation)
