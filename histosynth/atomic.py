"""Atomic replacement of a whole output folder.

A job writes into a hidden sibling `.<name>.partial-<pid>` and publishes it with one rename, so a crash
leaves either the old folder or the new one, never a mix. Replacing an existing folder uses Linux
`renameat2(RENAME_EXCHANGE)` (one atomic swap); where that is unavailable we fall back to two renames and
`recover()` restores the old folder if a crash hit between them. No library offers atomic directory swaps,
hence this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path
from typing import Iterator

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False if the platform cannot."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: filesystem/kernel cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(a))
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _siblings(target: Path, marker: str) -> list[Path]:
    prefix = f".{target.name}.{marker}-"
    return [p for p in target.parent.glob(f"{prefix}*") if p.name[len(prefix):].isdigit()]


def recover(target: Path) -> None:
    """Undo what a crash left around `target`: restore a displaced old folder, drop dead writers' partials."""
    target = Path(target)
    for old in _siblings(target, "old"):
        if not target.exists():
            os.rename(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for partial in _siblings(target, "partial"):
        if not _pid_alive(int(partial.name.rsplit("-", 1)[1])):
            shutil.rmtree(partial, ignore_errors=True)


def fsync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk before it is published."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as fh:
                os.fsync(fh.fileno())
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: Path | str, overwrite: bool = True) -> Iterator[Path]:
    """Yield a private folder to fill; on normal exit it becomes `target` in one step.

    On an exception the partial folder is removed and `target` is untouched. With overwrite=False an
    existing `target` raises FileExistsError before anything is written.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; refusing to overwrite it")
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        yield partial
        fsync_tree(partial)
        if not target.exists():
            os.rename(partial, target)
        elif _exchange(partial, target):
            shutil.rmtree(partial)  # now holds the old content
        else:
            old = target.parent / f".{target.name}.old-{os.getpid()}"
            os.rename(target, old)
            os.rename(partial, target)
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
