"""The trusted first stage inside the sandbox: lock the filesystem and resources, then exec the submitted command.

Run by histosynth.leaderboard.sandbox as `unshare --user --map-root-user --mount --net --pid --fork --mount-proc
python -m histosynth.leaderboard.sandbox_launch SPEC_JSON -- COMMAND...`. In those fresh namespaces it
1. makes every mount read-only except the submission's work folder (bind-mounted writable), keeping each mount's
   locked flags (nosuid, nodev, noexec), and refuses to go on if any mount stays writable (fail closed);
2. hides the secret files and folders named in the spec (HF token files, .netrc, ssh keys) behind /dev/null or an
   empty tmpfs;
3. sets the memory, CPU-time and file-size limits;
4. execs the command, so nothing of this module stays in the process.
No library does this (bubblewrap would, but is not installed on CI machines by default); written here on
unshare(1) and mount(2) through ctypes.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
_LOCKED = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
           "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME}
EXIT_SETUP_FAILED = 97  # the parent reports this code as "sandbox could not be set up", never as the submission's

_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    args = [s.encode() if s else None for s in (source, target, fstype)]
    if _libc.mount(args[0], args[1], args[2], flags, data.encode() if data else None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target}: {os.strerror(err)}")


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, in mount order."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            out.append((point, set(fields[5].split(","))))
    return out


def lock_filesystem(work: str, hide: list[str]) -> None:
    """Every mount read-only except `work`; each folder in `hide` covered by an empty tmpfs, each file by /dev/null."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for path in hide:
        if os.path.isdir(path) and not os.path.realpath(work).startswith(os.path.realpath(path) + os.sep):
            _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0700")
        elif os.path.isfile(path):
            _mount("/dev/null", path, None, MS_BIND)
    _mount(work, work, None, MS_BIND | MS_REC)
    for point, options in _mounts():
        if point == work or point.startswith(work.rstrip("/") + "/") or point.startswith("/proc"):
            continue
        locked = sum(flag for name, flag in _LOCKED.items() if name in options)
        try:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | MS_RDONLY | locked)
        except OSError:
            if "ro" not in options:
                raise
    visible = dict(_mounts())  # the last mount at a point is the one in use; stacked ones below are hidden
    writable = [p for p, o in visible.items() if "rw" in o and p != work and not p.startswith(work.rstrip("/") + "/")
                and not p.startswith("/proc") and p not in hide]
    if writable:
        raise OSError(f"mounts still writable: {', '.join(writable)}")


def set_limits(memory_bytes: int | None, cpu_seconds: int | None, file_bytes: int | None) -> None:
    """Address-space, CPU-time and file-size limits for the submission and everything it starts."""
    for limit, value in ((resource.RLIMIT_AS, memory_bytes), (resource.RLIMIT_CPU, cpu_seconds),
                         (resource.RLIMIT_FSIZE, file_bytes)):
        if value is not None:
            resource.setrlimit(limit, (value, value))


def main(argv: list[str]) -> None:
    spec, command = json.loads(argv[0]), argv[2:]
    try:
        lock_filesystem(spec["work"], spec["hide"])
        set_limits(spec["memory_bytes"], spec["cpu_seconds"], spec["file_bytes"])
        os.chdir(spec["work"])
    except OSError as err:
        print(f"sandbox setup failed: {err}", file=sys.stderr)
        os._exit(EXIT_SETUP_FAILED)
    os.execvpe(command[0], command, spec["env"])


if __name__ == "__main__":
    main(sys.argv[1:])
