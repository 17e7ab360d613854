"""Memory and process limits that hold for a whole sandbox, not per process.

A fresh cgroup per run, under this process's own cgroup: v2 where that is writable with the memory and pids
controllers, else the v1 memory and pids hierarchies where those are writable. The sandbox's first process joins it
before exec-ing bubblewrap (`join_argv`), so every descendant is counted. Where neither exists, the fallback is
per-process RLIMIT_AS plus RLIMIT_NPROC; RLIMIT_NPROC does not bind root, so as root without a cgroup the sandbox
refuses to run. No library manages cgroups for a plain (non-systemd-unit) child process, hence this module.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from histosynth.leaderboard.sandbox.errors import SandboxError, SandboxUnavailable
from histosynth.leaderboard.sandbox.limits import MIN_ADDRESS_SPACE_BYTES, SandboxLimits

EXIT_JOIN_FAILED = 97
# Run by /bin/sh: write our own pid into each cgroup.procs named before "--", then become the command after it.
JOIN_SCRIPT = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 97; shift; done; shift; exec "$@"'
BACKENDS = ("cgroup2", "cgroup1", "rlimit")


@dataclass(frozen=True)
class _Mount:
    point: Path
    root: str
    fstype: str
    options: frozenset[str]


def _mounts() -> list[_Mount]:
    found = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        left, _, right = line.partition(" - ")
        parts, tail = left.split(), right.split()
        if len(parts) < 5 or len(tail) < 3:
            continue
        found.append(_Mount(Path(parts[4].replace("\\040", " ")), parts[3], tail[0], frozenset(tail[2].split(","))))
    return found


def _own_cgroups() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    own: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            own[name] = path
    return own


def _folder(mount: _Mount, path: str) -> Path | None:
    root = mount.root.rstrip("/")
    if root and not (path == root or path.startswith(root + "/")):
        return None  # our cgroup is outside what this mount shows
    return mount.point / path[len(root):].lstrip("/")


@dataclass
class ResourceGroup:
    """The limits of one sandboxed run: the cgroup folders it lives in (none under the rlimit fallback)."""

    kind: str
    limits: SandboxLimits
    folders: list[Path] = field(default_factory=list)

    def join_argv(self) -> list[str]:
        """The argv prefix that puts the command after it into this group before it starts."""
        if not self.folders:
            return []
        return ["/bin/sh", "-c", JOIN_SCRIPT, "sh", *(str(f / "cgroup.procs") for f in self.folders), "--"]

    def prlimit_options(self) -> list[str]:
        """Per-process limits for prlimit(1): always file size, open files and no core dumps; under the fallback
        also address space and process count."""
        options = [f"--fsize={self.limits.file_bytes}", f"--nofile={self.limits.open_files}", "--core=0"]
        if self.kind == "rlimit":
            options += [f"--as={self.limits.memory_bytes}", f"--nproc={_tasks_of(os.getuid()) + self.limits.processes}"]
        return options

    def memory_exhausted(self) -> bool:
        """Whether the kernel killed a process of the group for memory."""
        for folder in self.folders:
            for name in ("memory.events", "memory.oom_control"):
                try:
                    lines = (folder / name).read_text().splitlines()
                except OSError:
                    continue
                counts = dict(line.split()[:2] for line in lines if len(line.split()) >= 2)
                if int(counts.get("oom_kill", 0)) > 0:
                    return True
        return False

    def kill(self) -> None:
        """SIGKILL every process of the group (v2's cgroup.kill where there is one), until none is left."""
        for folder in self.folders:
            if (folder / "cgroup.kill").exists():
                try:
                    (folder / "cgroup.kill").write_text("1")
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self._pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        raise SandboxError(f"processes {sorted(self._pids())} of the sandbox's cgroup survived SIGKILL")

    def close(self) -> None:
        """Kill what is left and remove the cgroup folders."""
        self.kill()
        for folder in self.folders:
            for _ in range(100):  # a killed task leaves its cgroup a moment after SIGKILL returns
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)

    def _pids(self) -> set[int]:
        pids: set[int] = set()
        for folder in self.folders:
            try:
                pids.update(int(p) for p in (folder / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return pids


def _tasks_of(uid: int) -> int:
    """How many tasks (threads included) real user `uid` runs now: RLIMIT_NPROC counts them all."""
    count = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            real_uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
            if real_uid == uid:
                count += sum(1 for _ in (proc / "task").iterdir())
        except (OSError, StopIteration, ValueError):
            continue
    return count


def _make(parent: Path, settings: dict[str, str]) -> Path:
    child = parent / f"histosynth-sandbox-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    child.mkdir()
    try:
        for name, value in settings.items():
            if name.endswith("?"):  # optional (absent without swap accounting)
                if not (child / name[:-1]).exists():
                    continue
                name = name[:-1]
            (child / name).write_text(value)
    except OSError:
        child.rmdir()
        raise
    return child


def _cgroup2(limits: SandboxLimits) -> ResourceGroup | None:
    path = _own_cgroups().get("")
    for mount in _mounts():
        if mount.fstype != "cgroup2" or path is None:
            continue
        parent = _folder(mount, path)
        if parent is None or not os.access(parent, os.W_OK):
            continue
        enabled = (parent / "cgroup.subtree_control").read_text().split() if (parent / "cgroup.subtree_control").exists() else []
        if not {"memory", "pids"} <= set(enabled):
            continue
        try:
            child = _make(parent, {"memory.max": str(limits.memory_bytes), "memory.swap.max?": "0",
                                   "pids.max": str(limits.processes)})
        except OSError:
            continue
        return ResourceGroup("cgroup2", limits, [child])
    return None


def _cgroup1(limits: SandboxLimits) -> ResourceGroup | None:
    own = _own_cgroups()
    parents: dict[str, Path] = {}
    for mount in _mounts():
        for controller in ("memory", "pids"):
            if mount.fstype == "cgroup" and controller in mount.options and controller in own:
                folder = _folder(mount, own[controller])
                if folder is not None and os.access(folder, os.W_OK):
                    parents[controller] = folder
    if set(parents) != {"memory", "pids"}:
        return None
    made: list[Path] = []
    try:
        made.append(_make(parents["memory"], {"memory.limit_in_bytes": str(limits.memory_bytes),
                                              "memory.memsw.limit_in_bytes?": str(limits.memory_bytes)}))
        made.append(_make(parents["pids"], {"pids.max": str(limits.processes)}))
    except OSError:
        for folder in made:
            folder.rmdir()
        return None
    return ResourceGroup("cgroup1", limits, made)


def _rlimit(limits: SandboxLimits) -> ResourceGroup:
    if os.geteuid() == 0:
        raise SandboxUnavailable("no writable cgroup (v2 with memory and pids, or v1 memory and pids) for the "
                                 "sandbox, and as root RLIMIT_NPROC binds nothing: the process count of submitted "
                                 "code could not be limited. Run the scorer as an unprivileged user, or give it a "
                                 "cgroup it may write (e.g. `systemd-run --user --scope -p Delegate=yes ...`)")
    if limits.memory_bytes < MIN_ADDRESS_SPACE_BYTES:
        raise SandboxUnavailable(f"without a cgroup the memory limit is per-process address space, which torch "
                                 f"cannot even be imported in below {MIN_ADDRESS_SPACE_BYTES >> 30} GiB; "
                                 f"give at least that (asked for {limits.memory_bytes / (1 << 30):.2f} GiB)")
    return ResourceGroup("rlimit", limits)


def open_group(limits: SandboxLimits, backend: str | None = None) -> ResourceGroup:
    """A new group holding `limits`: the first of cgroup2, cgroup1, rlimit that works here (or `backend`)."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown resource backend {backend!r}; known: {', '.join(BACKENDS)}")
    for name, make in (("cgroup2", _cgroup2), ("cgroup1", _cgroup1)):
        if backend in (None, name):
            group = make(limits)
            if group is not None:
                return group
            if backend == name:
                raise SandboxUnavailable(f"no writable {name} hierarchy with the memory and pids controllers here")
    return _rlimit(limits)
