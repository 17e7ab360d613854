"""Atomic replacement of a whole output folder or file: every writer of the project publishes through here.

A job writes into `.<name>.partial-<pid>/.incomplete/` and publishes that folder with one rename, so a crash
leaves either the old folder or the new one, never a mix. The content sits in a hidden folder inside the
partial one, so no loader takes a partial folder for a dataset (`datasets` skips hidden folders unless asked
for them by name). Replacing an existing folder uses Linux `renameat2(RENAME_EXCHANGE)` (one atomic swap);
where that is unavailable we fall back to two renames and `recover()` restores the old folder if a crash hit
between them. No library offers atomic directory swaps, hence this module.

A writer holds an exclusive `flock` on the sibling `.<name>.lock` for the whole write: a second writer to the
same target fails at once, naming the holder's pid (waiting would only let it replace the first one's output
silently a moment later). While the lock is held, any partial folder of the target is a dead writer's and is
removed.

Single files (`atomic_file`, `write_bytes_atomic`, `write_text_atomic`) are written to a private hidden sibling,
flushed to disk and renamed over the target (POSIX rename replaces a file atomically). Concurrent writers of one
file do not exclude each other: each publishes a whole file and the last rename wins, which is what
content-addressed caches want. Each writer holds a `flock` on its own partial file, so the next write to the same
target removes exactly the partials whose writer died (the kernel drops a dead process's flocks).

Output-path policy (`check_output`, used by every verb up front and by the writers here again): a name component
over the file system's limit, an existing file where a folder is expected (or a folder where a file is), an ancestor
that is a file, a read-only or unwritable folder and a full disk are refused with one message naming the path and
the cause. Missing parent folders are created; when a write fails anyway (a disk that fills mid-write), the partial
output and the parent folders this write created are removed and the failure is raised as an OutputPathError naming
the path.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from histosynth.errors import OutputExistsError, UserFacingError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
CONTENT_DIR = ".incomplete"  # the folder inside `.<name>.partial-<pid>` that becomes the target

stage_hook: Callable[[str], None] | None = None
"""Called with "filled" (content complete, not yet published) and "displaced" (fallback path: the old folder
moved aside, the new one not yet in place); `atomic_file` calls it with "file filled" (partial file complete and
flushed, not yet renamed). Tests set it to stop a writer at an exact point; None otherwise."""


class TargetBusyError(UserFacingError, FileExistsError):
    """Another process is writing the same output folder."""


class OutputPathError(UserFacingError, OSError):
    """An output path cannot be written (wrong kind, read-only, no space, name too long); the message names it."""

    def __str__(self) -> str:  # OSError would format (errno, strerror) pairs
        return str(self.args[0]) if self.args else ""


NAME_MAX = 255  # bytes of one path component on Linux file systems (os.pathconf PC_NAME_MAX where it answers)
# errors of a write that are about where it writes, whatever file the caller was writing when they came
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
# errors that are about the output path when they name a file in the output's folder
_PATH_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP}


def _nearest_existing(path: Path) -> Path:
    """`path` or its closest ancestor that exists (as a link too)."""
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def _check_names(path: Path, label: str) -> None:
    limit = _name_max(_nearest_existing(path.parent))
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise OutputPathError(f"{label}: the name {part[:24]!r}... is {size} bytes; a file or folder name is at "
                                  f"most {limit} bytes here")


def _check_folder_writable(folder: Path, label: str) -> None:
    """`folder` (an existing ancestor of the output) must be a writable folder on a file system with free space."""
    if not folder.is_dir():
        what = "a dangling link" if folder.is_symlink() and not folder.exists() else "a file"
        raise OutputPathError(f"{label}: {folder} is {what}, not a folder, so nothing can be written under it")
    stats = os.statvfs(folder)
    if stats.f_flag & os.ST_RDONLY:
        raise OutputPathError(f"{label}: {folder} is on a read-only file system")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"{label}: no permission to write in {folder}")
    if stats.f_bavail == 0:
        raise OutputPathError(f"{label}: no space left on the device that holds {folder}")


def check_output(path: Path | str, folder: bool, what: str = "") -> Path:
    """Refuse, before any work, an output path that cannot be written: a name component that is too long, an
    existing file where a folder is expected (`folder`) or a folder where a file is, an ancestor that is not a
    folder, a read-only or unwritable folder, a full disk. `what` (an option name) starts the message.
    Returns the path."""
    path = Path(path)
    label = f"{what} {path}".strip()
    if path == Path("."):
        raise OutputPathError(f"{label}: the current folder (or an empty path) is no new {'folder' if folder else 'file'}"
                              "; give the output a name")
    _check_names(path, label)
    if os.path.lexists(path):
        if path.is_symlink() and not path.exists():
            raise OutputPathError(f"{label}: is a dangling or looping link; remove it or choose another path")
        if folder and not path.is_dir():
            raise OutputPathError(f"{label}: exists and is a file, not a folder; remove it or choose another path")
        if not folder and path.is_dir():
            raise OutputPathError(f"{label}: is a folder; a file is expected here")
    _check_folder_writable(_nearest_existing(path.absolute().parent), label)
    return path


def _output_error(err: OSError, target: Path) -> OutputPathError | None:
    """The user-facing form of an OSError raised while writing `target`, or None when it is not about the output
    (an input that could not be read, say)."""
    if isinstance(err, UserFacingError):
        return None
    named = err.filename if isinstance(err.filename, (str, bytes)) else None
    where = os.fsdecode(named) if named is not None else str(target)
    path = Path(where).absolute()
    about_output = named is not None and (path == target or path in target.parents or target.parent in path.parents)
    if err.errno in _DISK_ERRNOS or (err.errno in _PATH_ERRNOS and (about_output or named is None)):
        cause = os.strerror(err.errno).lower() if err.errno else str(err)
        shown = str(target) if about_output or named is None else f"{target} ({where})"
        return OutputPathError(f"{shown}: cannot write it: {cause}; nothing was written")
    return None


def _make_parents(folder: Path, created: list[Path]) -> None:
    """Create `folder` and its missing ancestors, appending each folder this call created to `created`."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # another writer made it meanwhile: not ours to remove
        created.append(path)


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(path)


@contextlib.contextmanager
def _output_errors(target: Path) -> Iterator[list[Path]]:
    """Run a write of `target`: yields the list to record created parent folders in; on failure removes them
    (when empty) and turns an OSError about the output into an OutputPathError naming `target`."""
    created: list[Path] = []
    try:
        yield created
    except OSError as err:
        _remove_empty(created)
        converted = _output_error(err, target)
        if converted is None:
            raise
        raise converted from err
    except BaseException:
        _remove_empty(created)
        raise


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


def recover(target: Path, locked: bool = False) -> None:
    """Undo what a crash left around `target`: restore a displaced old folder, drop dead writers' partials.

    With `locked` (the caller holds the target's lock) every partial folder is a dead writer's, whatever its pid
    (a pid may have been reused since).
    """
    target = Path(target)
    for old in _siblings(target, "old"):
        if not target.exists():
            os.rename(old, target)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for partial in _siblings(target, "partial"):
        if locked or not _pid_alive(int(partial.name.rsplit("-", 1)[1])):
            shutil.rmtree(partial, ignore_errors=True)


def lock_path(target: Path) -> Path:
    """The sibling file whose flock marks `target` as being written."""
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def target_lock(target: Path | str) -> Iterator[None]:
    """Hold the exclusive write lock of `target`; raise TargetBusyError at once if another process holds it.

    The lock file records the holder's pid and is removed on release; a lock file left by a killed process
    holds no lock (the kernel drops flocks with their process) and is simply reused.
    """
    target = Path(target).absolute()
    path = lock_path(target)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TargetBusyError(f"{target}: another process (pid {holder}) is writing it; wait for it to finish "
                                  f"or choose another output path") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked, so a waiting opener sees a stale inode and retries
        os.close(fd)


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
    existing `target` raises FileExistsError before anything is written. A second writer to the same target
    raises TargetBusyError while the first one runs.
    """
    target = Path(target).absolute()
    with _output_errors(target) as created:
        _check_names(target, str(target))
        _make_parents(target.parent, created)
        with target_lock(target):
            recover(target, locked=True)
            if os.path.lexists(target) and not target.is_dir():
                raise OutputPathError(f"{target}: exists and is not a folder; remove it or choose another path")
            if target.exists() and not overwrite:
                raise OutputExistsError(f"{target} already exists; refusing to overwrite it")
            wrapper = target.parent / f".{target.name}.partial-{os.getpid()}"
            partial = wrapper / CONTENT_DIR
            try:
                partial.mkdir(parents=True)
                yield partial
                fsync_tree(partial)
                _stage("filled")
                if not target.exists():
                    os.rename(partial, target)
                elif not _exchange(partial, target):
                    old = target.parent / f".{target.name}.old-{os.getpid()}"
                    os.rename(target, old)
                    _stage("displaced")
                    os.rename(partial, target)
                    shutil.rmtree(old)
            finally:
                shutil.rmtree(wrapper, ignore_errors=True)  # after an exchange it holds the old content


def _drop_dead_partials(target: Path) -> None:
    """Remove the partial files of `target` whose writer died: nobody holds their flock any more."""
    prefix = f".{target.name}.partial-"
    with os.scandir(target.parent) as entries:
        partials = [e.path for e in entries if e.name.startswith(prefix) and e.is_file(follow_symlinks=False)]
    for partial in partials:
        try:
            fd = os.open(partial, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live writer's
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(target: Path | str) -> Iterator[Path]:
    """Yield a private path to write `target`'s new content to; on normal exit it replaces `target` in one step.

    The path is a hidden sibling ending in `target`'s suffix (numpy's save functions add `.npy`/`.npz` to names
    without it); write to it by name or open it, but do not write elsewhere. On an exception it is removed and
    `target` is untouched; a crash leaves the old `target` (or none) plus a partial the next write removes.
    """
    target = Path(target).absolute()
    with _output_errors(target) as created:
        _check_names(target, str(target))
        _make_parents(target.parent, created)
        if target.is_dir():
            raise OutputPathError(f"{target}: is a folder; a file is expected here")
        _drop_dead_partials(target)
        token = f"{os.getpid()}-{os.urandom(4).hex()}"
        fresh = target.parent / f".{target.name}.new-{token}"  # not a partial's name until it is locked
        partial = target.parent / f".{target.name}.partial-{token}{target.suffix}"
        fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # held until published: the partial is a live writer's
            os.rename(fresh, partial)
            yield partial
            with open(partial, "rb") as fh:
                os.fsync(fh.fileno())
            _stage("file filled")
            os.replace(partial, target)
        finally:
            for leftover in (fresh, partial):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
            os.close(fd)


def write_bytes_atomic(target: Path | str, data: bytes) -> Path:
    """Replace `target` with `data` atomically (`atomic_file`); returns the target path."""
    with atomic_file(target) as partial:
        partial.write_bytes(data)
    return Path(target)


def write_text_atomic(target: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Replace `target` with `text` atomically (`atomic_file`); returns the target path."""
    return write_bytes_atomic(target, text.encode(encoding))


def _stage(name: str) -> None:
    if stage_hook is not None:
        stage_hook(name)
