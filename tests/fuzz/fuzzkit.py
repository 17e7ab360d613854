"""What every fuzz case asserts, and the small tools to make malformed inputs.

A case runs `histosynth.cli.main` in-process on one malformed input and expects a clean refusal:
- exit code 2;
- no traceback, and the last line on stderr is the one `error: ...` line (progress bars may come before it);
- the message names the bad file (or argument) and, where given, the problem;
- nothing half-written: the folder that holds the output path has exactly the entries it had before (no OUT,
  no hidden `.OUT.partial-*` / `.OUT.work-*`), and the inputs are unchanged.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
import pytest

from histosynth.cli import main


@dataclass
class Case:
    """One malformed input: `make(tmp, fx)` builds it under `tmp` (from the session fixtures `fx`) and returns the
    argv, the output path and the strings the one-line error must contain (the file or argument)."""

    name: str
    make: Callable[[Path, Any], tuple[list, Path, Sequence[str]]]
    xfail: str | None = None  # why the case is expected to fail, while its fix is pending
    problem: str | None = None  # regex the message must match (the problem), case-insensitive

    def param(self):
        marks = [pytest.mark.xfail(strict=True, reason=self.xfail)] if self.xfail else []
        return pytest.param(self, id=self.name, marks=marks)


@dataclass
class Outcome:
    code: int
    error: str
    stderr: str
    entries_before: list[str] = field(default_factory=list)
    entries_after: list[str] = field(default_factory=list)


def tree_digest(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (inputs must come out unchanged)."""
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


_PROGRESS = re.compile(r"^.*\d+%\|.*?\|[^\]]*\]|^[^|]*: \d+\w* \[[^\]]*\]")  # a tqdm bar (with or without total)


def stderr_lines(err: str) -> list[str]:
    """Non-blank stderr lines with tqdm progress bars taken out (a bar left open puts the error on its line)."""
    lines = (_PROGRESS.sub("", line).strip() for line in re.split(r"[\r\n]+", err))
    return [line for line in lines if line]


def run_cli(capsys, argv: Sequence) -> tuple[int, str]:
    """(exit code, stderr) of histosynth.cli.main in this process."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def check_case(case: Case, tmp_path: Path, capsys, fx: Any = None, inputs: Sequence[Path] = ()) -> None:
    """Build the case, run it, assert a clean one-line refusal that leaves nothing behind."""
    argv, out, names = case.make(tmp_path, fx if fx is not None else SimpleNamespace())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    before = sorted(p.name for p in out.parent.iterdir())
    digests = {p: tree_digest(p) for p in inputs if p.exists()}
    code, err = run_cli(capsys, argv)
    lines = stderr_lines(err)
    assert "Traceback" not in err, err[-3000:]
    assert code == 2, f"exit {code}; stderr: {err[-2000:]}"
    assert lines and lines[-1].startswith("error: "), f"last stderr line is not the error: {lines[-3:]}"
    message = lines[-1]
    assert sum(line.startswith("error: ") for line in lines) == 1, lines
    for name in names:
        assert str(name) in message, f"{name!r} not named in {message!r}"
    if case.problem:
        assert re.search(case.problem, message, re.IGNORECASE), f"problem /{case.problem}/ not said in {message!r}"
    after = sorted(p.name for p in out.parent.iterdir())
    assert after == before, f"left behind beside {out.name}: {sorted(set(after) - set(before))}"
    for path, digest in digests.items():
        assert tree_digest(path) == digest, f"{path} was changed"


def copy(src: Path, dst: Path) -> Path:
    """A private copy of a fixture file or folder to mutate."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)
    return dst


def truncate(path: Path, keep: float | int) -> Path:
    """Keep the first `keep` bytes (int) or fraction (float) of a file."""
    data = path.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    path.write_bytes(data[: max(0, n)])
    return path


def random_bytes(path: Path, seed: int, size: int | None = None) -> Path:
    """Replace a file by `size` (default: its own size) seeded random bytes."""
    n = size if size is not None else max(1, path.stat().st_size if path.exists() else 256)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


TRUNCATIONS: tuple[float | int, ...] = (0, 1, 7, 64, 0.25, 0.5, 0.9, -1)  # byte counts, fractions; -1 = all but the last byte


def cut(path: Path, how: float | int) -> Path:
    """`truncate` with -k meaning "all but the last k bytes"."""
    if isinstance(how, int) and how < 0:
        return truncate(path, path.stat().st_size + how)
    return truncate(path, how)
