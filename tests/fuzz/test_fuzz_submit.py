"""Fuzz: bad leaderboard submissions (a submission file that is missing, a folder, not YAML, of the wrong shape, with
bad names or paths) and bad `histosynth submit` options, each refused before anything runs or is sandboxed. The
submission file is read the same way for a mock check (`--check`) and a scoring run, so each file case runs both."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest
from fuzzkit import Case, check_case

GENERATOR = """kind: generator
generator: my-gan
checkpoint: model/
title: My GAN (2026)
license: apache-2.0
contact: me@example.org
"""
DATASET = """kind: dataset
name: my-set
dataset: synthetic-set/
"""


def swap(old: str, new: str, base: str = GENERATOR) -> str:
    assert old in base, old
    return base.replace(old, new, 1)


# name -> (the submission file's content, or a function making the entry; the field the message names; problem)
FILES: dict[str, tuple[str | bytes | Callable[[Path], object], str, str | None]] = {
    "checkpoint-with-nul": (swap("checkpoint: model/", 'checkpoint: "mo\\0del"'), "checkpoint", "NUL"),
    "checkpoint-missing-folder": (swap("checkpoint: model/", "checkpoint: nowhere/"), "checkpoint", "not a folder"),
    "checkpoint-a-file": (swap("checkpoint: model/", "checkpoint: notes.txt"), "checkpoint", "not a folder"),
    "checkpoint-hub-reference": (swap("checkpoint: model/", "checkpoint: hub:org/model@v1"), "checkpoint", "pull"),
    "checkpoint-empty": (swap("checkpoint: model/", 'checkpoint: ""'), "checkpoint", "folder path"),
    "checkpoint-blank": (swap("checkpoint: model/", 'checkpoint: "   "'), "checkpoint", "folder path"),
    "checkpoint-a-number": (swap("checkpoint: model/", "checkpoint: 5"), "checkpoint", "folder path"),
    "checkpoint-a-list": (swap("checkpoint: model/", "checkpoint: [model/]"), "checkpoint", "folder path"),
    "checkpoint-null": (swap("checkpoint: model/", "checkpoint: null"), "checkpoint", "missing"),
    "checkpoint-absent": (swap("checkpoint: model/\n", ""), "checkpoint", "missing"),
    "plugin-missing-folder": (GENERATOR + "plugin: nowhere/\n", "plugin", "not a folder"),
    "plugin-a-file": (GENERATOR + "plugin: notes.txt\n", "plugin", "not a folder"),
    "generator-trailing-newline": (swap("generator: my-gan", 'generator: "rt\\n"'), "generator", "not a valid name"),
    "generator-path": (swap("generator: my-gan", "generator: ../gan"), "generator", "not a valid name"),
    "generator-empty": (swap("generator: my-gan", 'generator: ""'), "generator", "not a valid name"),
    "generator-upper-case": (swap("generator: my-gan", "generator: My-GAN"), "generator", "not a valid name"),
    "generator-65-chars": (swap("generator: my-gan", "generator: " + "g" * 65), "generator", "not a valid name"),
    "generator-dot-dot": (swap("generator: my-gan", "generator: a..b"), "generator", "not a valid name"),
    "generator-a-number": (swap("generator: my-gan", "generator: 5"), "generator", "not a valid name"),
    "generator-null": (swap("generator: my-gan", "generator: null"), "generator", "not a valid name"),
    "generator-with-space": (swap("generator: my-gan", "generator: my gan"), "generator", "not a valid name"),
    "generator-with-tab": (swap("generator: my-gan", 'generator: "my\\tgan"'), "generator", "not a valid name"),
    "kind-missing": (swap("kind: generator\n", ""), "kind", "must be one of"),
    "kind-unknown": (swap("kind: generator", "kind: model"), "kind", "must be one of"),
    "kind-a-number": (swap("kind: generator", "kind: 5"), "kind", "must be one of"),
    "field-unknown": (GENERATOR + "color: red\n", "color", "unknown field"),
    "dataset-field-in-generator": (GENERATOR + "dataset: synthetic-set/\n", "dataset", "unknown field"),
    "title-a-number": (swap("title: My GAN (2026)", "title: 2026"), "title", "expected text"),
    "license-a-list": (swap("license: apache-2.0", "license: [mit]"), "license", "expected text"),
    "contact-a-mapping": (swap("contact: me@example.org", "contact: {a: b}"), "contact", "expected text"),
    "dataset-name-newline": (swap("name: my-set", 'name: "my\\nset"', DATASET), "name", "not a valid name"),
    "dataset-name-upper": (swap("name: my-set", "name: My Set", DATASET), "name", "not a valid name"),
    "dataset-folder-name-invalid": (swap("name: my-set\n", "", swap("synthetic-set/", "Synthetic Set/", DATASET)),
                                    "name", "set `name:`"),
    "dataset-missing-folder": (swap("synthetic-set/", "nowhere/", DATASET), "dataset", "not a folder"),
    "dataset-a-file": (swap("synthetic-set/", "notes.txt", DATASET), "dataset", "not a folder"),
    "dataset-absent": (swap("dataset: synthetic-set/\n", "", DATASET), "dataset", "missing"),
    "empty": ("", "", "expected a mapping"),
    "null": ("null\n", "", "expected a mapping"),
    "a-list": ("- kind: generator\n", "", "expected a mapping"),
    "a-string": ("kind generator\n", "", "expected a mapping"),
    "non-utf8": (GENERATOR.encode().replace(b"My GAN", b"My \xffGAN"), "", "YAML"),
    "utf16": (GENERATOR.encode("utf-16"), "", None),
    "yaml-20000-brackets": ("[" * 20000, "", "YAML"),
    "yaml-tab-indent": ("kind: generator\n\tgenerator: x\n", "", "YAML"),
    "yaml-python-object": ("kind: !!python/object/apply:os.system [echo hi]\n", "", "YAML"),
    "oversized": (GENERATOR + "# " + "x" * (64 << 10) + "\n", "", "at most"),
    "a-folder": (lambda p: p.mkdir(), "", "not a regular file"),
    "missing": (lambda p: None, "", "no such submission file"),
    "dangling-link": (lambda p: os.symlink(p.parent / "gone.yaml", p), "", "no such submission file"),
    "symlink-loop": (lambda p: os.symlink(p.name, p), "", None),
}


def _submission(tmp: Path, content: str | bytes | Callable[[Path], object]) -> Path:
    folder = tmp / "in" / "submission"
    for sub in ("model", "synthetic-set", "Synthetic Set"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not a folder")
    path = folder / "submission.yaml"
    if callable(content):
        content(path)
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


MODES = {
    "check": lambda tmp: ["--check"],
    "score": lambda tmp: ["--train", tmp / "in" / "submission" / "model", "--test", tmp / "in" / "submission" / "model",
                          "--results", tmp / "work" / "results"],
}


def file_case(mode: str, content, field: str):
    def make(tmp: Path, fx):
        path = _submission(tmp, content)
        out = tmp / "work" / "results"
        return ["submit", path, *MODES[mode](tmp)], out, ["submission.yaml", field]
    return make


def option_case(options: Callable[[Path], list], named: str):
    def make(tmp: Path, fx):
        path = _submission(tmp, GENERATOR)
        out = tmp / "work" / "results"
        return ["submit", path, *options(tmp)], out, [named]
    return make


OPTIONS: dict[str, tuple[Callable[[Path], list], str, str | None]] = {
    "work-an-existing-file": (lambda t: ["--check", "--work", t / "in" / "submission" / "notes.txt"], "notes.txt", "file"),
    "work-under-a-file": (lambda t: ["--check", "--work", t / "in" / "submission" / "notes.txt" / "w"], "notes.txt",
                          "not a folder"),
    "work-empty": (lambda t: ["--check", "--work", ""], "--work", "current folder"),
    "timeout-nan": (lambda t: ["--check", "--timeout", "nan"], "--timeout", "finite"),
    "timeout-negative": (lambda t: ["--check", "--timeout", "-1"], "--timeout", None),
    "timeout-zero": (lambda t: ["--check", "--timeout", "0"], "--timeout", None),
    "timeout-infinite": (lambda t: ["--check", "--timeout", "inf"], "--timeout", None),
    "timeout-a-year": (lambda t: ["--check", "--timeout", "31536000"], "--timeout", None),
    "timeout-text": (lambda t: ["--check", "--timeout", "1h"], "--timeout", None),
    "scoring-timeout-nan": (lambda t: ["--check", "--scoring-timeout", "nan"], "--scoring-timeout", None),
    "scoring-timeout-negative": (lambda t: ["--check", "--scoring-timeout", "-5"], "--scoring-timeout", None),
    "memory-nan": (lambda t: ["--check", "--memory-gb", "nan"], "--memory-gb", None),
    "memory-zero": (lambda t: ["--check", "--memory-gb", "0"], "--memory-gb", None),
    "memory-negative": (lambda t: ["--check", "--memory-gb", "-16"], "--memory-gb", None),
    "memory-half-gib": (lambda t: ["--check", "--memory-gb", "0.5"], "--memory-gb", None),
    "memory-a-petabyte": (lambda t: ["--check", "--memory-gb", "1e6"], "--memory-gb", "machine"),
    "variant-unknown": (lambda t: ["--check", "--variant", "huge"], "--variant", None),
    "train-missing": (lambda t: ["--train", t / "in" / "nowhere"], "nowhere", "no such folder"),
    "test-a-file": (lambda t: ["--test", t / "in" / "submission" / "notes.txt"], "notes.txt", "not a folder"),
    "conditions-missing": (lambda t: ["--conditions", t / "in" / "nowhere"], "nowhere", "no such folder"),
    "results-a-file": (lambda t: ["--results", t / "in" / "submission" / "notes.txt"], "notes.txt", "file"),
}

CASES = [Case(f"{mode}-{name}", file_case(mode, content, field), problem=problem)
         for name, (content, field, problem) in FILES.items() for mode in MODES]
CASES += [Case(name, option_case(options, named), problem=problem) for name, (options, named, problem) in OPTIONS.items()]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_submission(case, tmp_path, capsys):
    check_case(case, tmp_path, capsys, inputs=[tmp_path / "in"])
