"""The seccomp filter bubblewrap loads before exec-ing submitted code: the calls a sandboxed generator never needs
and an escape always does.

The policy follows Flatpak's (flatpak-run.c `setup_seccomp`, itself from linux-user-chroot and Sandstorm): allow by
default, refuse a deny-list with EPERM (ENOSYS for the new mount API and clone3, so libraries fall back to calls the
filter can inspect). The BPF program is compiled by libseccomp through `pyseccomp` (ctypes bindings to the system's
libseccomp.so.2); nothing here encodes BPF by hand.
"""

from __future__ import annotations

import errno
from typing import IO

from histosynth.leaderboard.sandbox.errors import SandboxUnavailable

# syscall -> why a sandboxed generator is refused it
DENIED: dict[str, str] = {
    **{name: "changes mounts (a remount could make the filesystem writable)" for name in
       ("mount", "umount", "umount2", "pivot_root", "chroot")},
    **{name: "enters or creates namespaces" for name in ("unshare", "setns")},
    **{name: "reads or writes another process" for name in ("ptrace", "process_vm_readv", "process_vm_writev")},
    **{name: "kernel keyrings (shared across the user's processes)" for name in ("keyctl", "add_key", "request_key")},
    **{name: "kernel attack surface no generator needs" for name in
       ("bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "fanotify_init", "lookup_dcookie", "uselib", "vhangup", "iopl", "ioperm", "kcmp")},
    **{name: "opens files by handle, around the mount table" for name in ("open_by_handle_at", "name_to_handle_at")},
    **{name: "system administration" for name in
       ("syslog", "acct", "quotactl", "swapon", "swapoff", "reboot", "kexec_load", "kexec_file_load", "init_module",
        "finit_module", "delete_module", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
        "sethostname", "setdomainname")},
}
# The mount API of Linux 5.2+ and clone3 (whose flags sit in memory a filter cannot read): ENOSYS, as Flatpak does
UNSUPPORTED: dict[str, str] = {
    **{name: "the new mount API" for name in
       ("open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr")},
    "clone3": "its flags are out of the filter's reach; the C library falls back to clone",
}
NAMESPACE_FLAGS = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
                   "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                   "CLONE_NEWNET": 0x40000000}
TIOCSTI, TIOCLINUX = 0x5412, 0x541C  # inject input into, or control, the controlling terminal


def write_filter(handle: IO[bytes]) -> None:
    """Compile the filter and write its BPF program to `handle` (an open binary file bubblewrap will read)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as err:  # pyseccomp raises OSError when libseccomp.so.2 is missing
        raise SandboxUnavailable(f"cannot build the sandbox's seccomp filter: {err} (install libseccomp2 and the "
                                 "Python package pyseccomp)") from err
    policy = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED:
        _refuse(policy, seccomp, seccomp.ERRNO(errno.EPERM), name)
    for name in UNSUPPORTED:
        _refuse(policy, seccomp, seccomp.ERRNO(errno.ENOSYS), name)
    for flag in NAMESPACE_FLAGS.values():
        policy.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    for request in (TIOCSTI, TIOCLINUX):
        policy.add_rule(seccomp.ERRNO(errno.EPERM), "ioctl", seccomp.Arg(1, seccomp.MASKED_EQ, 0xFFFFFFFF, request))
    policy.export_bpf(handle)
    handle.flush()


def _refuse(policy, seccomp, action: int, name: str) -> None:  # noqa: ANN001 (pyseccomp has no type stubs)
    """Add one rule; a call this architecture's libseccomp does not know (an arch without iopl) is skipped: there
    is nothing to refuse."""
    try:
        policy.add_rule(action, name)
    except OSError as err:
        if err.errno != errno.EINVAL:
            raise
