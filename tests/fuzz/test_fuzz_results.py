"""Fuzz: bad results files (numbers outside their metric's range or interval, counts that are not whole numbers,
empty results, unknown versions, names with control characters, non-UTF-8 bytes, deep nesting, huge integers,
entries that are not files) given to `leaderboard build`, `leaderboard table` and `leaderboard publish --dry-run`,
and bad options of those verbs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
from fuzzkit import Case, check_case

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult, Subject

HASH_A, HASH_B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def valid_run(subject: str = "synthetic") -> dict[str, Any]:
    """A seg run of one synthetic training set scored against a real test set (a leaderboard-ready document)."""
    run = BenchmarkRun(
        task="seg",
        results=[MetricResult("miou", 0.5, ci_low=0.4, ci_high=0.6, ci_level=0.95, n_real=10, n_fake=12, subject="train"),
                 MetricResult("mean_dice", 0.6, ci_low=0.55, ci_high=0.65, ci_level=0.95, n_real=10, n_fake=12,
                              subject="train")],
        data={"train": DataRef(subject, content_hash=HASH_A, n=12, location=subject),
              "test": DataRef("real-test", content_hash=HASH_B, n=10, location="real-test")},
        subjects={"train": Subject("dataset", subject, HASH_A)},
        settings={"model": "deeplabv3plus", "preset": "tiny", "train": subject, "seeds": [0, 1], "schema": "s"})
    return run.to_dict()


def set_path(doc: Any, path: tuple, value: Any) -> None:
    """doc[path[0]][path[1]]... = value."""
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def delete_path(doc: Any, path: tuple) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


R0 = ("results", 0)
# name -> (change of the document, problem regex); the document loses its stored comparability_key first, so each
# change is judged by the check it aims at
EDITS: dict[str, tuple[Callable[[dict], Any], str | None]] = {
    "miou-7.5": (lambda d: set_path(d, (*R0, "value"), 7.5), "range"),
    "miou-negative": (lambda d: set_path(d, (*R0, "value"), -0.1), "range"),
    "dice-above-1": (lambda d: set_path(d, ("results", 1, "value"), 1.5), "range"),
    "value-a-string": (lambda d: set_path(d, (*R0, "value"), "0.5"), "expected"),
    "value-a-bool": (lambda d: set_path(d, (*R0, "value"), True), "expected"),
    "value-a-list": (lambda d: set_path(d, (*R0, "value"), [0.5]), "expected"),
    "value-null-without-reason": (lambda d: set_path(d, (*R0, "value"), None), "undefined"),
    "value-missing": (lambda d: delete_path(d, (*R0, "value")), "missing"),
    "ci-low-above-high": (lambda d: d["results"][0].update(ci_low=0.7, ci_high=0.3), "above"),
    "ci-low-above-value": (lambda d: d["results"][0].update(ci_low=0.55), "outside its interval"),
    "ci-high-below-value": (lambda d: d["results"][0].update(ci_high=0.45), "outside its interval"),
    "ci-low-only": (lambda d: d["results"][0].update(ci_high=None), "both bounds"),
    "ci-high-only": (lambda d: d["results"][0].update(ci_low=None), "both bounds"),
    "ci-low-a-string": (lambda d: d["results"][0].update(ci_low="0.4"), "ci_low"),
    "ci-level-5": (lambda d: d["results"][0].update(ci_level=5), "ci_level"),
    "ci-level-0": (lambda d: d["results"][0].update(ci_level=0), "ci_level"),
    "ci-level-1": (lambda d: d["results"][0].update(ci_level=1.0), "ci_level"),
    "ci-level-negative": (lambda d: d["results"][0].update(ci_level=-0.95), "ci_level"),
    "ci-level-text": (lambda d: d["results"][0].update(ci_level="95%"), "ci_level"),
    "n-real-negative": (lambda d: d["results"][0].update(n_real=-1), "n_real"),
    "n-real-fraction": (lambda d: d["results"][0].update(n_real=2.5), "n_real"),
    "n-real-float-whole": (lambda d: d["results"][0].update(n_real=3.0), "n_real"),
    "n-real-text": (lambda d: d["results"][0].update(n_real="3"), "n_real"),
    "n-real-bool": (lambda d: d["results"][0].update(n_real=True), "n_real"),
    "n-fake-negative": (lambda d: d["results"][0].update(n_fake=-1), "n_fake"),
    "n-fake-fraction": (lambda d: d["results"][0].update(n_fake=2.5), "n_fake"),
    "results-empty": (lambda d: d.update(results=[]), "empty"),
    "results-missing": (lambda d: d.pop("results"), "missing"),
    "results-an-object": (lambda d: d.update(results={"miou": 0.5}), "expected list"),
    "results-of-numbers": (lambda d: d.update(results=[1, 2]), "expected an object"),
    "results-of-nulls": (lambda d: d.update(results=[None]), "expected an object"),
    "metric-unknown": (lambda d: d["results"][0].update(metric="fid"), "unknown metric"),
    "metric-with-newline": (lambda d: d["results"][0].update(metric="iou/stro\nma"), "control character"),
    "metric-with-nul": (lambda d: d["results"][0].update(metric="iou/a\0b"), "control character"),
    "metric-a-number": (lambda d: d["results"][0].update(metric=5), "expected str"),
    "encoder-with-newline": (lambda d: d["results"][0].update(encoder="effnet\n"), "control character"),
    "higher-is-better-flipped": (lambda d: d["results"][0].update(higher_is_better=False), "higher_is_better"),
    "higher-is-better-text": (lambda d: d["results"][0].update(higher_is_better="yes"), "higher_is_better"),
    "extra-a-list": (lambda d: d["results"][0].update(extra=[1]), "extra"),
    "schema-version-3": (lambda d: d.update(schema_version=3), "schema_version"),
    "schema-version-0": (lambda d: d.update(schema_version=0), "schema_version"),
    "schema-version-text": (lambda d: d.update(schema_version="2"), "schema_version"),
    "schema-version-missing": (lambda d: d.pop("schema_version"), "schema_version"),
    "task-unknown": (lambda d: d.update(task="vibes"), "unknown task"),
    "task-with-newline": (lambda d: d.update(task="seg\n"), "task"),
    "task-version-99": (lambda d: d.update(task_version=99), "task_version"),
    "task-version-0": (lambda d: d.update(task_version=0), "task_version"),
    "task-version-text": (lambda d: d.update(task_version="1"), "task_version"),
    "subject-name-newline": (lambda d: set_path(d, ("subjects", "train", "name"), "syn\n| injected | row |"),
                             "control character"),
    "subject-name-carriage-return": (lambda d: set_path(d, ("subjects", "train", "name"), "syn\rx"), "control character"),
    "subject-name-escape": (lambda d: set_path(d, ("subjects", "train", "name"), "syn\x1b[31m"), "control character"),
    "subject-name-line-separator": (lambda d: set_path(d, ("subjects", "train", "name"), "syn\u2028x"),
                                    "control character"),
    "subject-name-bidi-override": (lambda d: set_path(d, ("subjects", "train", "name"), "syn\u202ex"),
                                   "control character"),
    "subject-name-10k-chars": (lambda d: set_path(d, ("subjects", "train", "name"), "s" * 10_000), "characters"),
    "subject-name-a-number": (lambda d: set_path(d, ("subjects", "train", "name"), 7), "expected str"),
    "subject-kind-unknown": (lambda d: set_path(d, ("subjects", "train", "kind"), "alien"), "kind"),
    "subject-version-newline": (lambda d: set_path(d, ("subjects", "train", "version"), "v1\nv2"), "control character"),
    "subjects-a-list": (lambda d: d.update(subjects=[]), "subjects"),
    "data-n-negative": (lambda d: set_path(d, ("data", "train", "n"), -1), "n"),
    "data-n-fraction": (lambda d: set_path(d, ("data", "train", "n"), 1.5), "expected int"),
    "data-location-absolute": (lambda d: set_path(d, ("data", "train", "location"), "/home/me/data"), "absolute"),
    "data-name-newline": (lambda d: set_path(d, ("data", "test", "name"), "real\ntest"), "control character"),
    "data-a-list": (lambda d: d.update(data=[]), "data"),
    "settings-a-list": (lambda d: d.update(settings=[]), "settings"),
    "encoders-a-list": (lambda d: d.update(encoders=[1]), "encoders"),
    "code-a-string": (lambda d: d.update(code="x"), "code"),
    "wall-time-negative": (lambda d: d.update(wall_time_s=-5), "wall_time_s"),
    "wall-time-text": (lambda d: d.update(wall_time_s="5 s"), "wall_time_s"),
    "run-id-newline": (lambda d: d.update(run_id="abc\n"), "run_id"),
    "comparability-key-edited": (lambda d: d.update(comparability_key="ck:0000000000000000"), "comparability_key"),
}


def _raw(text: str) -> Callable[[dict], str]:
    return lambda d: text


# name -> (the file's whole text or bytes from the valid document, problem regex)
TEXTS: dict[str, tuple[Callable[[dict], str | bytes], str | None]] = {
    "value-400-digits": (lambda d: json.dumps(d).replace('"value": 0.5', '"value": ' + "9" * 400, 1), "digits"),
    "n-real-400-digits": (lambda d: json.dumps(d).replace('"n_real": 10', '"n_real": ' + "9" * 400, 1), "digits"),
    "value-5000-digits": (lambda d: json.dumps(d).replace('"value": 0.5', '"value": ' + "9" * 5000, 1), "digits"),
    "value-NaN": (lambda d: json.dumps(d).replace('"value": 0.5', '"value": NaN', 1), "NaN"),
    "value-Infinity": (lambda d: json.dumps(d).replace('"value": 0.5', '"value": Infinity', 1), "Infinity"),
    "value-1e400": (lambda d: json.dumps(d).replace('"value": 0.5', '"value": 1e400', 1), "overflows"),
    "ci-low-NaN": (lambda d: json.dumps(d).replace('"ci_low": 0.4', '"ci_low": NaN', 1), "NaN"),
    "ci-high-minus-Infinity": (lambda d: json.dumps(d).replace('"ci_high": 0.6', '"ci_high": -Infinity', 1), "Infinity"),
    "non-utf8-byte": (lambda d: json.dumps(d).encode().replace(b'"synthetic"', b'"synth\xffetic"', 1), "UTF-8"),
    "latin1-name": (lambda d: json.dumps(d, ensure_ascii=False).replace("synthetic", "synthétic").encode("latin-1"),
                    "UTF-8"),
    "utf16": (lambda d: json.dumps(d).encode("utf-16"), "UTF-8"),
    "utf8-bom": (lambda d: b"\xef\xbb\xbf" + json.dumps(d).encode(), "JSON"),
    "nested-100k-lists": (_raw("[" * 100_000 + "]" * 100_000), "nested"),
    "nested-100k-objects": (_raw('{"a":' * 100_000 + "1" + "}" * 100_000), "nested"),
    "nested-100k-unclosed": (_raw("[" * 100_000), "nested"),
    "nested-40-in-extra": (lambda d: json.dumps(d).replace('"extra": {}', '"extra": {"x": ' + "[" * 40 + "]" * 40 + "}", 1),
                           "nested"),
    "empty-file": (_raw(""), "JSON"),
    "whitespace-only": (_raw(" \n\t "), "JSON"),
    "json-null": (_raw("null"), "object"),
    "json-list": (_raw("[]"), "object"),
    "json-number": (_raw("42"), "object"),
    "json-string": (_raw('"results"'), "object"),
    "truncated-half": (lambda d: json.dumps(d)[: len(json.dumps(d)) // 2], "JSON"),
    "truncated-last-byte": (lambda d: json.dumps(d)[:-1], "JSON"),
    "trailing-garbage": (lambda d: json.dumps(d) + "}", "JSON"),
    "all-byte-values": (lambda d: bytes(range(256)) * 8, "UTF-8"),
    "python-repr": (lambda d: repr(d), "JSON"),
    "yaml-not-json": (_raw("task: seg\nresults: []\n"), "JSON"),
}


def _write_doc(folder: Path, content: str | bytes) -> Path:
    path = folder / "run.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def _entry_dir(folder: Path) -> None:
    (folder / "run.json").mkdir()
    (folder / "run.json" / "inner.txt").write_text("x")


ENTRIES: dict[str, tuple[Callable[[Path], object], str]] = {
    "a-folder-named-json": (_entry_dir, "not a regular file"),
    "symlink-loop": (lambda f: os.symlink("run.json", f / "run.json"), "symbolic links"),
    "dangling-link": (lambda f: os.symlink(f / "nowhere.json", f / "run.json"), "No such file"),
    "fifo": (lambda f: os.mkfifo(f / "run.json"), "not a regular file"),
    "oversized-sparse": (lambda f: os.truncate(_write_doc(f, ""), (64 << 20) + 1), "at most"),
}

VERBS = {
    "build": lambda results, out: (["leaderboard", "build", "--results", results, "--out", out], out),
    "table": lambda results, out: (["leaderboard", "table", "--results", results, "--out", out.with_suffix(".md")],
                                   out.with_suffix(".md")),
    "publish": lambda results, out: (["leaderboard", "publish", "--results", results, "--repo", "org/board",
                                      "--version", "v1.0.0", "--dry-run"], out),
}


def _results_folder(tmp: Path) -> Path:
    """A results folder holding one valid file (a-good.json) for the bad run.json to sit beside."""
    folder = tmp / "in" / "results"
    folder.mkdir(parents=True)
    (folder / "a-good.json").write_text(json.dumps(valid_run("other")))
    return folder


def doc_case(verb: str, edit: Callable[[dict], Any]):
    def make(tmp: Path, fx):
        folder = _results_folder(tmp)
        doc = valid_run()
        doc.pop("comparability_key")
        edit(doc)
        _write_doc(folder, json.dumps(doc))
        return (*VERBS[verb](folder, tmp / "work" / "OUT"), ["run.json"])
    return make


def text_case(verb: str, content: Callable[[dict], str | bytes]):
    def make(tmp: Path, fx):
        folder = _results_folder(tmp)
        _write_doc(folder, content(valid_run()))
        return (*VERBS[verb](folder, tmp / "work" / "OUT"), ["run.json"])
    return make


def entry_case(verb: str, entry: Callable[[Path], object]):
    def make(tmp: Path, fx):
        folder = _results_folder(tmp)
        entry(folder)
        return (*VERBS[verb](folder, tmp / "work" / "OUT"), ["run.json"])
    return make


CASES = [Case(f"{verb}-{name}", doc_case(verb, edit), problem=problem)
         for name, (edit, problem) in EDITS.items() for verb in VERBS]
CASES += [Case(f"{verb}-{name}", text_case(verb, content), problem=problem)
          for name, (content, problem) in TEXTS.items() for verb in VERBS]
CASES += [Case(f"{verb}-{name}", entry_case(verb, entry), problem=problem)
          for name, (entry, problem) in ENTRIES.items() for verb in VERBS]


def option_case(name: str, argv: Callable[[Path, Path], list], named: str, problem: str | None = None) -> Case:
    def make(tmp: Path, fx):
        folder = _results_folder(tmp)
        (folder / "sub").mkdir()
        out = tmp / "work" / "OUT.md"
        return argv(folder, out), out, [named]
    return Case(name, make, problem=problem)


OPTION_CASES = {
    "table-digits-100000": (lambda r, o: ["leaderboard", "table", "--results", r, "--digits", "100000"], "--digits", r"\[1, 17\]"),
    "table-digits-0": (lambda r, o: ["leaderboard", "table", "--results", r, "--digits", "0"], "--digits", r"\[1, 17\]"),
    "table-digits-negative": (lambda r, o: ["leaderboard", "table", "--results", r, "--digits", "-3"], "--digits", None),
    "table-digits-nan": (lambda r, o: ["leaderboard", "table", "--results", r, "--digits", "nan"], "--digits", None),
    "table-digits-float": (lambda r, o: ["leaderboard", "table", "--results", r, "--digits", "2.5"], "--digits", None),
    "table-format-unknown": (lambda r, o: ["leaderboard", "table", "--results", r, "--format", "html"], "--format", None),
    "table-ci-unknown": (lambda r, o: ["leaderboard", "table", "--results", r, "--ci", "sd"], "--ci", None),
    "table-task-unknown": (lambda r, o: ["leaderboard", "table", "--results", r, "--tasks", "nope"], "nope", None),
    "table-metrics-empty": (lambda r, o: ["leaderboard", "table", "--results", r, "--metrics", "nope"], "nope", None),
    "table-results-missing": (lambda r, o: ["leaderboard", "table", "--results", r / "nothing"], "nothing", "no such folder"),
    "table-results-a-file": (lambda r, o: ["leaderboard", "table", "--results", r / "a-good.json"], "a-good.json",
                             "not a folder"),
    "table-out-a-folder": (lambda r, o: ["leaderboard", "table", "--results", r, "--out", r], str(Path("results")),
                           "is a folder"),
    "build-results-empty-folder": (lambda r, o: ["leaderboard", "build", "--results", r / "sub", "--out", o.parent / "OUT"],
                                   "sub", "no results files"),
    "build-title-newline": (lambda r, o: ["leaderboard", "build", "--results", r, "--out", o.parent / "OUT", "--title",
                                          "a\nb"], "--title", "control"),
    "build-title-huge": (lambda r, o: ["leaderboard", "build", "--results", r, "--out", o.parent / "OUT", "--title",
                                       "t" * 5000], "--title", "at most"),
    "build-out-a-file": (lambda r, o: ["leaderboard", "build", "--results", r, "--out", r / "a-good.json"], "a-good.json",
                         "file"),
    "publish-version-bad": (lambda r, o: ["leaderboard", "publish", "--results", r, "--repo", "o/b", "--version", "1.0",
                                          "--dry-run"], "1.0", None),
}


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_results_file(case, tmp_path, capsys):
    check_case(case, tmp_path, capsys, inputs=[tmp_path / "in"])


@pytest.mark.parametrize("case", [option_case(name, *spec).param() for name, spec in OPTION_CASES.items()])
def test_bad_leaderboard_option(case, tmp_path, capsys):
    check_case(case, tmp_path, capsys, inputs=[tmp_path / "in"])


def test_the_valid_documents_build(tmp_path, capsys):
    """The fixture documents themselves load and rank: each case above fails for its one change only."""
    from histosynth.cli import main

    folder = _results_folder(tmp_path)
    (folder / "run.json").write_text(json.dumps(valid_run()))
    assert main(["leaderboard", "table", "--results", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "other" in out and "miou" in out
