"""Escape attempts a hostile submission makes from inside the sandbox; standard library only, so the sandbox tests
run it directly (`python evil_attacks.py TARGETS.json`) and the evil generator plugin runs it while "loading".

Each attempt records "WORKED: ..." or "blocked: ...". `targets` names host paths to reach for: a canary file and
the results folder, the token file, the venv's site-packages and histosynth's source folder, a unix socket and a
TCP port the test listens on, the host's /dev/shm and home. The results go to found.json in the working folder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import socket
import sys
from pathlib import Path

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
MS_RDONLY, MS_REMOUNT, MS_BIND = 1, 32, 4096
MNT_DETACH = 2
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
SYS = {"keyctl": 250, "bpf": 321, "io_uring_setup": 425, "open_by_handle_at": 304, "perf_event_open": 298,
       "userfaultfd": 323}  # x86-64 syscall numbers


def _errno_call(name: str, result: int) -> str:
    if result == -1:
        err = ctypes.get_errno()
        return f"blocked: {name}: {os.strerror(err)}"
    return f"WORKED: {name} returned {result}"


def attempt(action) -> str:
    try:
        outcome = action()
    except Exception as err:  # every failure is an answer
        return f"blocked: {type(err).__name__}: {err}"
    return outcome if isinstance(outcome, str) and outcome.startswith(("WORKED", "blocked")) else f"WORKED: {outcome}"


def write(path: str, text: str = "pwned") -> str:
    Path(path).write_text(text)
    return f"WORKED: wrote {path}"


def remount_root_writable(targets: dict) -> str:
    result = libc.mount(None, b"/", None, MS_REMOUNT | MS_BIND, None)
    first = _errno_call("remount /", result)
    return first if first.startswith("blocked") else f"{first}; then {attempt(lambda: write(targets['canary']))}"


def umount_token(targets: dict) -> str:
    token = os.fsencode(targets["token_inside"])
    result = libc.umount2(token, MNT_DETACH)
    read = attempt(lambda: Path(targets["token_inside"]).read_text())
    secret = targets["secret"]
    return f"WORKED: token read after umount ({result})" if secret in read else _errno_call("umount2 token", result)


def umount_proc_and_list(targets: dict) -> str:
    libc.umount2(b"/proc", MNT_DETACH)
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    commands = []
    for pid in pids:
        try:
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            pass
    seen_host = any(targets["host_marker"].encode() in c for c in commands)
    return f"WORKED: saw the host's processes ({len(pids)} pids)" if seen_host else f"blocked: {len(pids)} pids visible"


def connect_unix(targets: dict) -> str:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(3)
    client.connect(targets["unix_socket"])
    client.sendall(b"hello from the sandbox")
    return "WORKED: connected to the host's unix socket"


def connect_tcp(targets: dict) -> str:
    socket.create_connection(("127.0.0.1", targets["port"]), timeout=3).close()
    return "WORKED: connected to the host's TCP port"


def new_user_namespace(targets: dict) -> str:
    return _errno_call("unshare(CLONE_NEWUSER)", libc.unshare(CLONE_NEWUSER))


def new_mount_namespace(targets: dict) -> str:
    return _errno_call("unshare(CLONE_NEWNS)", libc.unshare(CLONE_NEWNS))


def mount_tmpfs(targets: dict) -> str:
    return _errno_call("mount tmpfs", libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, None))


def chroot(targets: dict) -> str:
    return _errno_call("chroot", libc.chroot(b"/tmp"))


def ptrace_init(targets: dict) -> str:
    return _errno_call("ptrace(PTRACE_ATTACH, 1)", libc.ptrace(16, 1, None, None))


def setns_host(targets: dict) -> str:
    fd = os.open("/proc/1/ns/mnt", os.O_RDONLY)
    return _errno_call("setns", libc.setns(fd, 0))


def raw_syscalls(targets: dict) -> str:
    outcomes = {name: _errno_call(name, libc.syscall(number, 0, 0, 0, 0, 0)) for name, number in SYS.items()}
    worked = [n for n, o in outcomes.items() if o.startswith("WORKED")]
    return f"WORKED: {worked}" if worked else "blocked: " + "; ".join(outcomes.values())


def process_status(targets: dict) -> str:
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    weak = [key for key, want in (("CapEff", "0000000000000000"), ("CapBnd", "0000000000000000"), ("NoNewPrivs", "1"),
                                  ("Seccomp", "2")) if status.get(key, "").strip() != want]
    return f"WORKED: weak {weak}" if weak else "blocked: no capabilities, no_new_privs, seccomp filter"


TARGETED_WRITES = {"write_canary": "canary", "plant_results_file": "results_file", "drop_pth": "pth",
                   "forge_pyc": "pyc", "write_source": "source_file", "write_host_shm": "host_shm",
                   "write_var_tmp": "var_tmp", "write_home": "home_file"}


def run_all(targets: dict) -> dict[str, str]:
    """Every attempt; the name -> outcome map."""
    found = {name: attempt(lambda key=key: write(targets[key])) for name, key in TARGETED_WRITES.items()}
    for action in (remount_root_writable, umount_token, umount_proc_and_list, connect_unix, connect_tcp,
                   new_user_namespace, new_mount_namespace, mount_tmpfs, chroot, ptrace_init, setns_host,
                   raw_syscalls, process_status):
        found[action.__name__] = attempt(lambda action=action: action(targets))
    found["env_token"] = "WORKED: HF_TOKEN in the environment" if os.environ.get("HF_TOKEN") else "blocked: no HF_TOKEN"
    return found


if __name__ == "__main__":
    Path("found.json").write_text(json.dumps(run_all(json.loads(Path(sys.argv[1]).read_text()))))
