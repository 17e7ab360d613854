"""The bubblewrap command line of one sandboxed run: what the submission sees, and nothing else.

Inside, the root is an empty tmpfs made read-only at the end. On it, read-only at their host paths: the system's
/usr and the loader's few /etc files, the Python installation, the venv and histosynth's own source, and the HF
hub and torch hub caches (weights, never tokens). Read-only at /sandbox/in/<name>: each input the caller names
(model, plugin, condition data). Writable: /sandbox/work only (the run's folder on the host), plus a fresh /tmp and
/dev/shm that count against the memory limit. A fresh /proc shows only the sandbox's own PID namespace; /dev holds
only null, zero, random, urandom, tty and friends. Nothing of the host's /tmp (but a Python installation that lives
there), /run, $HOME or other sockets is there. Namespaces: user (with further user namespaces disabled), mount, PID,
network (loopback only), IPC, UTS, cgroup. All capabilities dropped, no_new_privs set, and the seccomp filter of `seccomp.py` loaded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

SANDBOX_ROOT = Path("/sandbox")
SANDBOX_WORK = SANDBOX_ROOT / "work"
SANDBOX_INPUTS = SANDBOX_ROOT / "in"
SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/passwd",
              "/etc/group", "/etc/nsswitch.conf", "/etc/hosts", "/etc/alternatives")
# histosynth's import packages: in an editable install each is a folder of the source tree of its own
PACKAGES = ("histosynth", "histosynth.generators", "histosynth.baselines", "histosynth.benchmark",
            "histosynth.leaderboard", "histosynth.data_cards")
NAMESPACE_FLAGS = ("--unshare-all", "--unshare-user", "--disable-userns", "--hostname", "sandbox")
HARDENING_FLAGS = ("--die-with-parent", "--new-session", "--cap-drop", "ALL")


def sandbox_input(name: str) -> Path:
    """Where input `name` appears inside the sandbox."""
    return SANDBOX_INPUTS / name


def python_paths() -> list[Path]:
    """The Python installation, the venv and histosynth's package folders: what `python -m histosynth...` needs."""
    paths = {Path(sys.base_prefix), Path(sys.prefix), Path(os.path.realpath(sys.executable)).parent.parent}
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            paths.add(Path(location))
    return sorted(paths)


def cache_paths() -> dict[str, Path]:
    """Environment variable -> host folder of the weight caches a generator may read offline (only those that
    exist): the Hugging Face hub cache (not HF_HOME, which holds the token) and torch hub's."""
    from huggingface_hub import constants

    torch_home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    found = {"HF_HUB_CACHE": Path(constants.HF_HUB_CACHE), "TORCH_HOME": Path(torch_home)}
    return {name: path.resolve() for name, path in found.items() if path.is_dir()}


def _under(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def bwrap_argv(inputs: Mapping[str, Path], work: Path, seccomp_fd: int, info_fd: int,
               hidden: Sequence[Path] = ()) -> list[str]:
    """bwrap and its options, up to and including "--"; the caller appends the command.

    `inputs` are host folders or files bound read-only at sandbox_input(name); `work` is bound writable at
    SANDBOX_WORK; any of `hidden` (token files, key folders) that falls inside a bound folder is covered by
    /dev/null or an empty tmpfs."""
    argv = ["bwrap", *NAMESPACE_FLAGS, *HARDENING_FLAGS, "--seccomp", str(seccomp_fd), "--info-fd", str(info_fd)]
    for folder in SYSTEM_FOLDERS:
        if os.path.islink(folder):
            argv += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            argv += ["--ro-bind", folder, folder]
    for item in SYSTEM_ETC:
        argv += ["--ro-bind-try", item, item]
    # the fresh /tmp before the Python binds, so an installation that lives under /tmp is bound on top of it
    # (mounted after them, the tmpfs would hide it)
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    shown = [*python_paths(), *cache_paths().values()]
    for path in sorted(set(shown), key=lambda p: (len(p.parts), str(p))):
        argv += ["--ro-bind", str(path), str(path)]
    argv += ["--bind", str(work), str(SANDBOX_WORK)]
    for name, path in sorted(inputs.items()):
        argv += ["--ro-bind", str(path), str(sandbox_input(name))]
    bound = [*shown, *inputs.values()]
    for secret in hidden:
        if _under(secret, bound):
            inside = _inside_path(secret, inputs)
            argv += ["--tmpfs", inside] if secret.is_dir() else ["--ro-bind", "/dev/null", inside]
    argv += ["--remount-ro", "/", "--chdir", str(SANDBOX_WORK), "--"]
    return argv


def _inside_path(host: Path, inputs: Mapping[str, Path]) -> str:
    """Where host path `host` appears inside (inputs are bound elsewhere than their host path)."""
    for name, path in inputs.items():
        if host == path or path in host.parents:
            return str(sandbox_input(name) / host.relative_to(path))
    return str(host)
