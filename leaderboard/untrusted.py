"""Bounded reading of what a submission wrote, before any of it is parsed.

Everything the scorer reads from a submission's folders goes through here first: a walk that only lstat()s (no link
followed, nothing opened, so a FIFO cannot hang it) and refuses anything but regular files and folders, with caps on
entry count and bytes; then, for parquet shards, caps on rows and on the uncompressed size the footer declares,
checked before a single page is decoded. Parsing itself runs in the sandbox under its memory and time limits, so a
footer that lies is contained too.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from histosynth.errors import InputError

KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


class UntrustedInputError(InputError):
    """A submission's folder holds something the scorer refuses to read; the message names the path."""


@dataclass(frozen=True)
class TreeCaps:
    """How much a submitted folder may hold."""

    files: int = 20_000
    bytes: int = 64 << 30
    file_bytes: int = 16 << 30


@dataclass(frozen=True)
class Tree:
    """The regular files of a checked folder (relative paths, sorted) and their total size."""

    root: Path
    files: tuple[str, ...]
    bytes: int


def check_tree(folder: Path, caps: TreeCaps = TreeCaps(), what: str = "folder") -> Tree:
    """Walk `folder` with lstat only; refuse links, FIFOs, devices and sockets, and more than `caps` allow."""
    top = os.lstat(folder) if os.path.lexists(folder) else None
    if top is None or not stat.S_ISDIR(top.st_mode):
        kind = KINDS.get(stat.S_IFMT(top.st_mode), "not a folder") if top else "missing"
        raise UntrustedInputError(f"{folder}: the submitted {what} is {kind} (a real folder is required)")
    files: list[str] = []
    total, entries, stack = 0, 0, [folder]
    while stack:
        current = stack.pop()
        with os.scandir(current) as listing:
            for entry in listing:
                entries += 1
                if entries > caps.files:
                    raise UntrustedInputError(f"{folder}: more than {caps.files} files and folders in the submitted {what}")
                mode = entry.stat(follow_symlinks=False)
                path = Path(entry.path)
                if stat.S_ISDIR(mode.st_mode):
                    stack.append(path)
                    continue
                if not stat.S_ISREG(mode.st_mode):
                    kind = KINDS.get(stat.S_IFMT(mode.st_mode), "not a regular file")
                    raise UntrustedInputError(f"{path}: {kind}, not a regular file (refused: the scorer reads only "
                                              "regular files)")
                if mode.st_size > caps.file_bytes:
                    raise UntrustedInputError(f"{path}: {mode.st_size} bytes, over the {caps.file_bytes}-byte cap")
                total += mode.st_size
                if total > caps.bytes:
                    raise UntrustedInputError(f"{folder}: more than {caps.bytes} bytes in the submitted {what}")
                files.append(path.relative_to(folder).as_posix())
    return Tree(folder, tuple(sorted(files)), total)


def check_file(path: Path, caps: TreeCaps = TreeCaps(), what: str = "file") -> Tree:
    """A submitted single file (a wheel) as a one-file Tree, checked with lstat: a regular file within the per-file
    cap; refuses a link, FIFO, device or socket."""
    mode = os.lstat(path) if os.path.lexists(path) else None
    if mode is None or not stat.S_ISREG(mode.st_mode):
        kind = KINDS.get(stat.S_IFMT(mode.st_mode), "not a regular file") if mode else "missing"
        raise UntrustedInputError(f"{path}: the submitted {what} is {kind} (a regular file is required)")
    if mode.st_size > min(caps.file_bytes, caps.bytes):
        raise UntrustedInputError(f"{path}: {mode.st_size} bytes, over the {min(caps.file_bytes, caps.bytes)}-byte cap")
    return Tree(path.parent, (path.name,), mode.st_size)


def tree_hash(trees: list[Tree]) -> str:
    """sha256 over each tree's label, relative paths and bytes: the scorer's own fingerprint of what was submitted."""
    digest = hashlib.sha256()
    for index, tree in enumerate(trees):
        digest.update(f"tree {index}\n".encode())
        for relative in tree.files:
            digest.update(f"{len(relative)}:{relative}\n".encode())
            with open(tree.root / relative, "rb") as handle:  # regular files only: check_tree said so
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class ParquetCaps:
    """How much one split's shards may declare, before anything is decoded: rows, and decompressed bytes per row
    (a 2048 px RGB patch with its maps is well under 64 MiB) and in all."""

    rows: int
    row_bytes: int = 64 << 20
    uncompressed_bytes: int = 64 << 30
    footer_bytes: int = 16 << 20


def check_parquet_caps(shards: list[Path], caps: ParquetCaps) -> int:
    """Total rows of `shards`; refuses a shard whose footer is too big, or that declares more rows or uncompressed
    bytes than `caps` (a small file that would decode to gigabytes), naming the shard."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = uncompressed = 0
    for shard in shards:
        size = os.lstat(shard).st_size
        with open(shard, "rb") as handle:
            if size < 12:
                raise UntrustedInputError(f"{shard}: {size} bytes, too short for a parquet file")
            handle.seek(size - 8)
            footer = int.from_bytes(handle.read(4), "little")
        if footer > min(caps.footer_bytes, size):
            raise UntrustedInputError(f"{shard}: declares a {footer}-byte parquet footer (cap {caps.footer_bytes})")
        try:
            meta = pq.ParquetFile(shard).metadata
        except (pa.ArrowException, OSError) as err:
            raise UntrustedInputError(f"{shard}: unreadable parquet footer ({err})") from err
        rows += meta.num_rows
        uncompressed += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        if rows > caps.rows:
            raise UntrustedInputError(f"{shard}: the shards declare more than {caps.rows} rows")
        allowed = min(caps.uncompressed_bytes, max(rows, 1) * caps.row_bytes)
        if uncompressed > allowed:
            raise UntrustedInputError(f"{shard}: declares {uncompressed} bytes once decompressed for {rows} rows, over "
                                      f"the {allowed}-byte cap (a decompression bomb, or rows far too big)")
    return rows
