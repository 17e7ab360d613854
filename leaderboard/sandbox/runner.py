"""Run one command in the sandbox (bubblewrap + seccomp + a cgroup) and watch it: wall clock, output size and
file count, log size. See docs/sandbox.md for the design and its threat model."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

from histosynth.errors import InputError
from histosynth.leaderboard.sandbox.bwrap import SANDBOX_WORK, bwrap_argv
from histosynth.leaderboard.sandbox.errors import INSTALL_HINT, SandboxError, SandboxUnavailable
from histosynth.leaderboard.sandbox.limits import SandboxLimits
from histosynth.leaderboard.sandbox.resources import EXIT_JOIN_FAILED, ResourceGroup, open_group
from histosynth.leaderboard.sandbox.seccomp import DENIED, UNSUPPORTED, write_filter

SAFE_ENV_KEYS = ("LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "TERM")
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|(^|_)KEY($|_)|AUTH", re.IGNORECASE)
NOWHERE_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, and the netns has no route anyway
TAIL_BYTES = 8000
LOG_BYTES = 16 << 20  # stdout + stderr together; more is a flood, and the run is stopped
POLL_SECONDS = 0.25
DEFAULT_LIMITS = SandboxLimits()


@dataclass
class SandboxResult:
    """What a sandboxed run did: exit code (negative = killed by that signal), whether a limit stopped it and which,
    its output tails, and the isolation that was applied."""

    command: list[str]
    returncode: int
    timed_out: bool
    seconds: float
    stdout: str
    stderr: str
    stopped_for: str | None = None  # the limit that ended the run, in words
    isolation: dict[str, object] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped_for is None

    def describe(self) -> str:
        """One line for a report."""
        if self.stopped_for:
            return f"killed: {self.stopped_for}"
        if self.returncode < 0:
            return f"killed by signal {signal.Signals(-self.returncode).name}"
        last = self.stderr.strip().splitlines()[-1:] or [""]
        return "finished" if self.ok else f"exit code {self.returncode}: {last[0][:300]}"


def sandbox_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's whole environment: SAFE_ENV_KEYS from ours, offline Hub, homes inside the work folder, the
    weight caches, plus `extra` (refused if a name looks like a secret)."""
    from histosynth.leaderboard.sandbox.bwrap import cache_paths

    for name in extra or {}:
        if SECRET_NAME.search(name):
            raise InputError(f"refusing to pass {name!r} to a submission: its name looks like a secret")
    env = {k: os.environ[k] for k in SAFE_ENV_KEYS if k in os.environ}
    home = SANDBOX_WORK / "home"
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", HOME=str(home), TMPDIR="/tmp", HF_HOME=str(home / "hf"),
               HISTOSYNTH_CACHE=str(home / "cache"), XDG_CACHE_HOME=str(home / "cache"), MPLCONFIGDIR=str(home / "mpl"),
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               no_proxy="", NO_PROXY="", http_proxy=NOWHERE_PROXY, https_proxy=NOWHERE_PROXY,
               HTTP_PROXY=NOWHERE_PROXY, HTTPS_PROXY=NOWHERE_PROXY, PYTHONDONTWRITEBYTECODE="1")
    env.update({name: str(path) for name, path in cache_paths().items()})
    env.update(extra or {})
    return env


def secret_paths() -> list[Path]:
    """Token and credential files that must never be visible, wherever a bind would otherwise show them."""
    from huggingface_hub import constants

    home = Path.home()
    candidates = [constants.HF_TOKEN_PATH, constants.HF_STORED_TOKENS_PATH, home / ".huggingface" / "token",
                  home / ".netrc", home / ".git-credentials", home / ".pypirc", home / ".docker" / "config.json",
                  home / ".ssh", home / ".aws", home / ".gnupg", home / ".config" / "gh", home / ".kaggle"]
    return sorted({Path(p).resolve() for p in candidates if Path(p).exists()})


def _tools() -> dict[str, str]:
    found = {name: shutil.which(name) for name in ("bwrap", "prlimit")}
    if found["bwrap"] is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed, and submitted code is never run "
                                 f"unconfined: {INSTALL_HINT}")
    if found["prlimit"] is None:
        raise SandboxUnavailable("prlimit (util-linux) is not installed: it sets the sandbox's per-process limits")
    return {k: str(v) for k, v in found.items()}


@lru_cache(maxsize=1)
def _probe() -> str:
    """bwrap's version after one real run of `true` with every namespace, flag and the seccomp filter."""
    tools = _tools()
    with tempfile.TemporaryDirectory(prefix="histosynth-sandbox-probe-") as tmp:
        result = _run(["/bin/true"], Path(tmp), SandboxLimits(wall_seconds=60), {}, {}, tools, None, probe=True)
    if not result.ok:
        raise SandboxUnavailable(f"bubblewrap cannot create the sandbox here ({result.describe()}; "
                                 f"{result.stderr.strip()[-300:]}): user namespaces may be disabled "
                                 "(kernel.unprivileged_userns_clone / AppArmor), or a container forbids them")
    version = subprocess.run([tools["bwrap"], "--version"], capture_output=True, text=True, timeout=30)
    return version.stdout.strip() or "bubblewrap"


def require_sandbox() -> str:
    """bubblewrap's version when the sandbox works here; else SandboxUnavailable saying how to fix it."""
    return _probe()


def isolation_available() -> bool:
    """True when `require_sandbox` would succeed."""
    try:
        require_sandbox()
    except SandboxUnavailable:
        return False
    return True


def run_sandboxed(command: Sequence[str], work: Path | str, limits: SandboxLimits = DEFAULT_LIMITS,
                  inputs: Mapping[str, Path] | None = None, extra_env: Mapping[str, str] | None = None,
                  backend: str | None = None) -> SandboxResult:
    """Run `command` in the sandbox with `work` writable at SANDBOX_WORK (its working folder) and each of `inputs`
    read-only at sandbox_input(name). Raises SandboxUnavailable where there is no sandbox, SandboxError where one
    run could not be set up; a failing or stopped command is a result, not an exception."""
    version = require_sandbox()
    work = Path(work)
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        raise InputError(f"{work}: the sandbox's work folder must be a real folder")
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("home", "home/hf", "home/cache"):
        (work / sub).mkdir(exist_ok=True)
    bound = {}
    for name, path in (inputs or {}).items():
        real = Path(path).resolve()
        if not real.exists():
            raise InputError(f"{path}: sandbox input {name!r} does not exist")
        bound[name] = real
    env = sandbox_env(extra_env)
    return _run(list(command), work.resolve(), limits, bound, env, _tools(), backend, version=version)


def _run(command: list[str], work: Path, limits: SandboxLimits, inputs: Mapping[str, Path], env: dict[str, str],
         tools: dict[str, str], backend: str | None, probe: bool = False, version: str = "") -> SandboxResult:
    group = open_group(limits, backend)
    start = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="histosynth-sandbox-run-") as private:
            private_dir = Path(private)
            with open(private_dir / "filter.bpf", "w+b") as seccomp_file, \
                    open(private_dir / "info.json", "w+b") as info_file, \
                    open(private_dir / "options", "w+b") as options_file:
                write_filter(seccomp_file)
                seccomp_file.seek(0)
                options = bwrap_argv(inputs, work, seccomp_file.fileno(), info_file.fileno(),
                                     hidden=[] if probe else secret_paths())
                # bwrap reads its options from a file, so its command line inside (/proc/1/cmdline) shows no host path
                options_file.write(b"".join(os.fsencode(option) + b"\0" for option in options[1:-1]))
                options_file.seek(0)
                fds = (seccomp_file.fileno(), info_file.fileno(), options_file.fileno())
                argv = [*group.join_argv(), tools["prlimit"], *group.prlimit_options(), "--", tools["bwrap"],
                        "--args", str(options_file.fileno()), "--", *command]
                code, timed_out, stopped_for, out, err = _watch(argv, fds, env, work, limits, group, private_dir)
                info = (private_dir / "info.json").read_text(errors="replace")
    finally:
        group.close()
    if code == EXIT_JOIN_FAILED and not info.strip():
        raise SandboxError(f"could not move the sandbox into its cgroup: {err.strip()[-300:]}")
    if code != 0 and not info.strip() and stopped_for is None and not probe:
        raise SandboxError(f"bubblewrap could not set the sandbox up: {err.strip()[-300:]}")
    isolation = {"sandbox": version or "bubblewrap", "namespaces": "user (nested disabled), mount, pid, net, ipc, uts, "
                 "cgroup", "capabilities": "none", "no_new_privs": True,
                 "seccomp": f"{len(DENIED) + len(UNSUPPORTED)} calls refused, namespace clone flags refused",
                 "resources": group.kind, "writable": f"{work.name}/ only", "limits": asdict(limits)}
    return SandboxResult(command, code, timed_out, time.monotonic() - start, out, err, stopped_for, isolation)


def _watch(argv: list[str], fds: tuple[int, ...], env: dict[str, str], work: Path, limits: SandboxLimits,
           group: ResourceGroup, private: Path) -> tuple[int, bool, str | None, str, str]:
    """Start `argv` and stop it at the first limit it crosses; returns (code, timed_out, stopped_for, out, err)."""
    out_path, err_path = private / "stdout", private / "stderr"
    stopped_for: str | None = None
    timed_out = False
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        process = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd="/",
                                   start_new_session=True, pass_fds=fds)
        deadline = time.monotonic() + limits.wall_seconds
        while True:
            try:
                code = process.wait(timeout=POLL_SECONDS)
                break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                timed_out, stopped_for = True, f"ran past the {limits.wall_seconds:g} s wall-clock limit"
            elif out_path.stat().st_size + err_path.stat().st_size > LOG_BYTES:
                stopped_for = f"printed more than {LOG_BYTES >> 20} MiB"
            else:
                stopped_for = output_over_limits(work, limits)
            if stopped_for:
                _stop(process, group)
                code = process.wait()
                break
    if stopped_for is None:
        stopped_for = output_over_limits(work, limits)  # what it wrote in its last moments
    if stopped_for is None and group.memory_exhausted():
        stopped_for = f"out of memory: the sandbox's {limits.memory_bytes / (1 << 30):g} GiB limit (all its processes)"
    return code, timed_out, stopped_for, _tail(out_path), _tail(err_path)


def _stop(process: subprocess.Popen, group: ResourceGroup) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    group.kill()


def output_over_limits(folder: Path, limits: SandboxLimits) -> str | None:
    """Why `folder` breaks the output limits (too many entries, too many allocated bytes), or None.

    Walks with lstat only (no link is followed, no file opened) and stops at the first limit crossed."""
    entries, allocated, stack = 0, 0, [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as listing:
                for entry in listing:
                    entries += 1
                    if entries > limits.output_files:
                        return f"wrote more than {limits.output_files} files and folders"
                    stat = entry.stat(follow_symlinks=False)
                    allocated += stat.st_blocks * 512
                    if allocated > limits.output_bytes:
                        return f"wrote more than {limits.output_bytes / (1 << 30):g} GiB"
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
        except OSError:
            continue
    return None


def _tail(path: Path) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
        return handle.read().decode("utf-8", "replace")


