"""Fuzz: output paths that cannot be written, for every verb that writes: a folder on a read-only file system, a full
disk, a name over 255 bytes, an existing file where a folder is expected (or a folder where a file is), a path under
a file, a dangling link. Each is refused up front, naming the path and the cause. A disk that fills up in the middle
of a write (a 128 KiB tmpfs; where this machine cannot mount one, an ENOSPC injected at the flush, see conftest's
`disk_faults`) fails the same way and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
from fuzzkit import Case, check_case

# verb -> (argv writing to OUT, given the fixtures; whether OUT is a folder or a file)
Argv = Callable[[Path, SimpleNamespace], list]


def _in(fx: SimpleNamespace) -> Path:
    return fx.tmp / "in"


VERBS: dict[str, tuple[Argv, bool]] = {
    "data-build": (lambda o, fx: ["data", "build", "--source", "simulator", "--n", "2", "--size", "32", "--out", o], True),
    "data-masks": (lambda o, fx: ["data", "masks", "--n", "2", "--size", "32", "--out", o], True),
    "data-show": (lambda o, fx: ["data", "show", fx.ds, "--out", o], False),
    "data-sample": (lambda o, fx: ["data", "sample", fx.ds, "--out", o], True),
    "data-sample-plot": (lambda o, fx: ["data", "sample", fx.ds, "--out", fx.tmp / "work" / "s", "--plot", o], False),
    "data-pseudolabel": (lambda o, fx: ["data", "pseudolabel", fx.ds, "--out", o], True),
    "data-pseudolabel-cache": (lambda o, fx: ["data", "pseudolabel", fx.ds, "--out", fx.tmp / "work" / "p", "--cache", o],
                               True),
    "train": (lambda o, fx: ["train", "htd", "--data", fx.ds, "--preset", "tiny", "--steps", "1", "--out", o], True),
    "generate": (lambda o, fx: ["generate", "htd", "--checkpoint", fx.ds, "--conditions", fx.ds, "--n", "2", "--out", o],
                 True),
    "bench-fd": (lambda o, fx: ["bench", "fd", "--real", fx.ds, "--fake", fx.ds, "--out", o], False),
    "bench-lpips-masked": (lambda o, fx: ["bench", "lpips-masked", "--real", fx.ds, "--fake", fx.ds, "--out", o], False),
    "bench-complete": (lambda o, fx: ["bench", "complete", "--real", fx.ds, "--completed", fx.ds, "--out", o], False),
    "bench-seg": (lambda o, fx: ["bench", "seg", "--train", fx.ds, "--test", fx.ds, "--out", o], False),
    "bench-seg-checkpoints": (lambda o, fx: ["bench", "seg", "--train", fx.ds, "--test", fx.ds, "--checkpoints", o,
                                             "--out", fx.tmp / "work" / "r.json"], True),
    "bench-tstr": (lambda o, fx: ["bench", "tstr", "--train", f"a={fx.ds}", "--real-train", fx.ds, "--test", fx.ds,
                                  "--out", o], False),
    "leaderboard-build": (lambda o, fx: ["leaderboard", "build", "--results", fx.ds, "--out", o], True),
    "leaderboard-table": (lambda o, fx: ["leaderboard", "table", "--results", fx.ds, "--out", o], False),
    "pull": (lambda o, fx: ["pull", "org/name@v1.0.0", "--out", o], True),
    "recipe-run": (lambda o, fx: ["recipe", "run", _in(fx) / "notes.txt", "--run-dir", o], True),
    "new-generator": (lambda o, fx: ["new", "generator", "fuzz-painter", "--out", o], True),
    "demo": (lambda o, fx: ["demo", "--quick", "--out", o], True),
    "submit-work": (lambda o, fx: ["submit", _in(fx) / "notes.txt", "--check", "--work", o], True),
    "submit-results": (lambda o, fx: ["submit", _in(fx) / "notes.txt", "--results", o], True),
}
SUFFIX = {"data-show": ".png", "data-sample-plot": ".png", "leaderboard-table": ".md"}


def _name(verb: str, folder: bool) -> str:
    return "OUT" + ("" if folder else SUFFIX.get(verb, ".json"))


# kind -> (the output path to give, from (verb's file name, is a folder, fixtures); what the message names; problem)
KINDS: dict[str, tuple[Callable[[str, bool, SimpleNamespace], Path], Callable[[str], str], str]] = {
    "read-only-folder": (lambda n, d, fx: fx.disks.ro / n, lambda n: n, "read-only"),
    "full-disk": (lambda n, d, fx: fx.disks.full / n, lambda n: n, "no space left"),
    "name-over-255-bytes": (lambda n, d, fx: fx.tmp / "work" / ("o" * 300 + n), lambda n: "o" * 24, "255 bytes"),
    "name-over-255-bytes-multibyte": (lambda n, d, fx: fx.tmp / "work" / ("é" * 128 + n), lambda n: "é" * 24,
                                      "255 bytes"),
    "existing-file-or-folder": (lambda n, d, fx: _in(fx) / ("notes.txt" if d else "folder"),
                                lambda n: "in/", "is a f"),
    "under-a-file": (lambda n, d, fx: _in(fx) / "notes.txt" / n, lambda n: "notes.txt", "not a folder"),
    "dangling-link": (lambda n, d, fx: _in(fx) / "link", lambda n: "link", "dangling"),
}


def output_case(verb: str, kind: str):
    argv_of, folder = VERBS[verb]
    path_of, named, _ = KINDS[kind]

    def make(tmp: Path, fx):
        scratch = _in(fx)
        scratch.mkdir(exist_ok=True)
        (scratch / "notes.txt").write_text("a file")
        (scratch / "folder").mkdir(exist_ok=True)
        if not os.path.lexists(scratch / "link"):
            os.symlink(scratch / "nowhere", scratch / "link")
        out = path_of(_name(verb, folder), folder, fx)
        watched = out if kind in ("read-only-folder", "full-disk") else tmp / "work" / "OUT"
        return argv_of(out, fx), watched, [named(_name(verb, folder))]
    return make


CASES = [Case(f"{verb}-{kind}", output_case(verb, kind), problem=KINDS[kind][2]) for verb in VERBS for kind in KINDS]


@pytest.fixture
def fx(tmp_path, valid_dataset, disk_faults) -> SimpleNamespace:
    return SimpleNamespace(tmp=tmp_path, ds=valid_dataset, disks=disk_faults)


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_unwritable_output(case, tmp_path, capsys, fx, valid_dataset):
    check_case(case, tmp_path, capsys, fx, inputs=[valid_dataset, tmp_path / "in"])


# mid-write: the disk fills while the output is written (up-front checks pass: the disk has some room)
MIDWRITE: dict[str, Callable[[Path], list]] = {
    "data-build": lambda o: ["data", "build", "--source", "simulator", "--n", "12", "--size", "128", "--out", o],
    "data-build-split": lambda o: ["data", "build", "--source", "simulator", "--n", "12", "--size", "128", "--split-by",
                                   "region", "--region-size", "64", "--out", o],
    "data-masks": lambda o: ["data", "masks", "--n", "48", "--size", "512", "--out", o],
}


def midwrite_case(verb: str):
    def make(tmp: Path, fx):
        out = fx.disks.small / "OUT"
        return MIDWRITE[verb](out), out, [str(fx.disks.small)]
    return make


@pytest.mark.parametrize("case", [Case(f"{verb}-disk-fills-mid-write", midwrite_case(verb),
                                       problem="no space left on device").param() for verb in MIDWRITE])
def test_disk_full_mid_write_leaves_nothing(case, tmp_path, capsys, fx, valid_dataset):
    check_case(case, tmp_path, capsys, fx, inputs=[valid_dataset])
    assert os.listdir(fx.disks.small) == []
