"""Who a submission is, decided by the scorer: a validated name plus the scorer's own hash of what was submitted.

Never the rows: a generator's rows may claim any generator name or checkpoint hash, so the subject of a submission
is `name` (the submission file's, checked against NAME) and `sha256` over the model folder and plugin files (or the
dataset folder) as the scorer reads them before anything runs. Its results folder is `<name>-<hash[:12]>`, built only
from those two checked strings; a subject already on the board is never added to or merged with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from histosynth.errors import InputError

# \A...\Z, not ^...$: `$` also matches before a trailing newline
NAME = re.compile(r"\A[a-z0-9](?:[a-z0-9_-]|\.(?!\.)){0,63}\Z")
SHA256 = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
VERSION = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}\Z")
FOLDER_HASH_CHARS = 12


def check_name(value: object, what: str = "name") -> str:
    """`value` if it is a valid subject name (lower case, digits, '-', '_', single '.'; at most 64), else InputError."""
    if not isinstance(value, str) or not NAME.match(value):
        raise InputError(f"{what}: {value!r} is not a valid name (1-64 of a-z, 0-9, '-', '_', '.', starting with a "
                         "letter or digit, no '..')")
    return value


def check_checkpoint_hash(value: object, what: str = "checkpoint_hash") -> str:
    """`value` if it is 'sha256:' + 64 lower-case hex digits, else InputError."""
    if not isinstance(value, str) or not SHA256.match(value):
        raise InputError(f"{what}: {str(value)[:100]!r} is not 'sha256:' followed by 64 hex digits")
    return value


def check_version(value: object, what: str = "version") -> str:
    """`value` if it is a plain version string (no spaces, slashes or control characters), else InputError."""
    if not isinstance(value, str) or not VERSION.match(value):
        raise InputError(f"{what}: {str(value)[:100]!r} is not a version string (letters, digits, '.', '+', '_', '-')")
    return value


@dataclass(frozen=True)
class Identity:
    """A submission's subject as the scorer computed it."""

    kind: str  # "generator" or "dataset"
    name: str
    sha256: str  # hex, over the submitted files

    @property
    def folder(self) -> str:
        """The results folder name: `<name>-<first 12 hex digits>`."""
        return f"{check_name(self.name)}-{self.sha256[:FOLDER_HASH_CHARS]}"

    @property
    def checkpoint_hash(self) -> str:
        return f"sha256:{self.sha256}"


def identify(kind: str, name: str, folders: list[Path]) -> Identity:
    """The Identity of a submission of `kind` named `name` whose files are `folders` (each checked: regular files
    only, within caps); a regular file among them (a plugin wheel) counts as a folder holding just that file."""
    import os
    import stat

    from histosynth.leaderboard.untrusted import check_file, check_tree, tree_hash

    if kind not in ("generator", "dataset"):
        raise ValueError(f"unknown submission kind {kind!r}")
    trees = [check_file(path, what=f"{kind} file") if os.path.lexists(path) and stat.S_ISREG(os.lstat(path).st_mode)
             else check_tree(path, what=f"{kind} folder") for path in folders]
    return Identity(kind, check_name(name), tree_hash(trees))
