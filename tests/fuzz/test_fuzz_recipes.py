"""Fuzz: bad recipes (names that escape the run folder, step outputs that are empty, absolute, outside, reserved or
overlapping, unresolved `${...}`, hostile YAML) given to `recipe plan` and `recipe run`, and damaged or foreign
`.recipe/state.json` files given to `recipe plan`, `status` and `run`: each refused before any step runs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest
from fuzzkit import Case, check_case

from histosynth.cli import main

BASE = """recipe: tiny-sim
format: 1
scales:
  tiny: {n: 2, size: 32}
  demo: {n: 2, size: 32}
  full: {n: 2, size: 32}
steps:
  - {step: source, name: source-a, reader: simulator, options: {n: "${n}", size: "${size}", mpp: 4.0, seed: 0}, out: data/a}
  - {step: sample, data: data/a, min_frac: 0.0, out: data/b}
"""
FIRST_OUT, SECOND_OUT, SECOND_DATA = "out: data/a}", "out: data/b}", "data: data/a,"
NAME = "recipe: tiny-sim"


def swap(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)
    return edit


def whole(content: str | bytes) -> Callable[[str], str | bytes]:
    return lambda text: content


# name -> (edit of BASE, strings the message names besides the file, problem regex)
SPEC: dict[str, tuple[Callable[[str], str | bytes], list[str], str | None]] = {
    "name-escapes-runs": (swap(NAME, "recipe: ../../../tmp/evil"), ["recipe"], "must name the recipe"),
    "name-with-slash": (swap(NAME, "recipe: a/b"), ["recipe"], "must name"),
    "name-empty": (swap(NAME, 'recipe: ""'), ["recipe"], "must name"),
    "name-trailing-newline": (swap(NAME, 'recipe: "rt\\n"'), ["recipe"], "must name"),
    "name-hidden": (swap(NAME, "recipe: .hidden"), ["recipe"], "must name"),
    "name-dot-dot": (swap(NAME, "recipe: a..b"), ["recipe"], "must name"),
    "name-65-chars": (swap(NAME, "recipe: " + "r" * 65), ["recipe"], "must name"),
    "name-a-number": (swap(NAME, "recipe: 123"), ["recipe"], "must name"),
    "name-null": (swap(NAME, "recipe: null"), ["recipe"], "must name"),
    "name-missing": (swap(NAME + "\n", ""), ["recipe"], "must name"),
    "name-with-space": (swap(NAME, 'recipe: "tiny sim"'), ["recipe"], "must name"),
    "name-with-nul": (swap(NAME, 'recipe: "tiny\\0sim"'), ["recipe"], "must name"),
    "out-empty": (swap(FIRST_OUT, 'out: ""}'), ["'out'"], "inside the run folder"),
    "out-dot": (swap(FIRST_OUT, 'out: "."}'), ["'out'"], "inside the run folder"),
    "out-dot-slash": (swap(FIRST_OUT, 'out: "./"}'), ["'out'"], "inside the run folder"),
    "out-absolute": (swap(FIRST_OUT, "out: /tmp/abs}"), ["'out'"], "inside the run folder"),
    "out-parent": (swap(FIRST_OUT, "out: ../x}"), ["'out'"], "inside the run folder"),
    "out-climbs-out": (swap(FIRST_OUT, "out: data/../../x}"), ["'out'"], "inside the run folder"),
    "out-climbs-to-run-folder": (swap(FIRST_OUT, "out: data/..}"), ["'out'"], "inside the run folder"),
    "out-home": (swap(FIRST_OUT, "out: ~/x}"), ["'out'"], "inside the run folder"),
    "out-recipe-state": (swap(FIRST_OUT, "out: .recipe}"), ["'out'"], "reserved"),
    "out-inside-recipe-state": (swap(FIRST_OUT, "out: .recipe/x}"), ["'out'"], "reserved"),
    "out-report-json": (swap(FIRST_OUT, "out: report.json}"), ["'out'"], "reserved"),
    "out-report-md": (swap(FIRST_OUT, "out: report.md}"), ["'out'"], "reserved"),
    "out-with-nul": (swap(FIRST_OUT, 'out: "data/\\0a"}'), ["'out'"], "inside the run folder"),
    "out-a-number": (swap(FIRST_OUT, "out: 5}"), ["'out'"], "inside the run folder"),
    "out-a-list": (swap(FIRST_OUT, "out: [data/a]}"), ["'out'"], "inside the run folder"),
    "out-a-mapping": (swap(FIRST_OUT, "out: {a: b}}"), ["'out'"], "inside the run folder"),
    "out-null": (swap(FIRST_OUT, "out: null}"), ["'out'"], "required"),
    "outs-the-same": (swap(SECOND_OUT, "out: data/a}"), ["'out'", "source-a"], "the same as"),
    "outs-the-same-normalized": (swap(SECOND_OUT, "out: data/./a}"), ["'out'", "source-a"], "the same as"),
    "outs-the-same-double-slash": (swap(SECOND_OUT, "out: data//a/}"), ["'out'", "source-a"], "the same as"),
    "out-inside-another": (swap(SECOND_OUT, "out: data/a/b}"), ["'out'", "source-a"], "inside"),
    "out-around-another": (swap(SECOND_OUT, "out: data}"), ["'out'", "source-a"], "around"),
    "data-empty": (swap(SECOND_DATA, 'data: "",'), ["'data'"], "inside the run folder"),
    "data-absolute": (swap(SECOND_DATA, "data: /etc,"), ["'data'"], "inside the run folder"),
    "data-parent": (swap(SECOND_DATA, "data: ../data/a,"), ["'data'"], "inside the run folder"),
    "data-not-written": (swap(SECOND_DATA, "data: data/c,"), ["'data'"], "not written by an earlier step"),
    "ref-lone-open": (swap('n: "${n}"', 'n: "${n"'), ["options"], "unresolved"),
    "ref-dollar-brace-only": (swap('n: "${n}"', 'n: "${"'), ["options"], "unresolved"),
    "ref-open-in-middle": (swap('n: "${n}"', 'n: "a${n}b${size"'), ["options"], "unresolved"),
    "ref-empty": (swap('n: "${n}"', 'n: "${}"'), ["options"], "unknown variable"),
    "ref-unknown": (swap('n: "${n}"', 'n: "${nope}"'), ["options"], "unknown variable"),
    "ref-nested": (swap('n: "${n}"', 'n: "${${n}}"'), ["options"], None),
    "ref-input-unbound": (swap('n: "${n}"', 'n: "${input:nope}"'), ["options"], "not bound"),
    "ref-input-empty": (swap('n: "${n}"', 'n: "${input:}"'), ["options"], "not bound"),
    "ref-in-out": (swap(FIRST_OUT, 'out: "data/${a"}'), ["'out'"], "unresolved"),
    "ref-variable-holds-lone-open": (swap("tiny: {n: 2,", 'tiny: {n: "${m",'), ["options"], "unresolved"),
    "yaml-20000-brackets": (whole("[" * 20000), [], "invalid YAML"),
    "yaml-20000-braces": (whole("{" * 20000), [], "invalid YAML"),
    "yaml-20000-nested-lists": (whole("a: " + "[" * 20000 + "]" * 20000), [], "YAML"),
    "yaml-alias-bomb": (whole("a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(9))), [], "values"),
    "yaml-empty": (whole(""), [], "mapping"),
    "yaml-null": (whole("null\n"), [], "mapping"),
    "yaml-a-list": (whole("- recipe: x\n"), [], "mapping"),
    "yaml-a-string": (whole("just some words\n"), [], "mapping"),
    "yaml-tab-indent": (whole("recipe: x\nsteps:\n\t- a\n"), [], "invalid YAML"),
    "yaml-unclosed-quote": (swap(NAME, 'recipe: "tiny'), [], "invalid YAML"),
    "yaml-undefined-alias": (swap(NAME, "recipe: *nowhere"), [], "invalid YAML"),
    "yaml-python-object": (swap(NAME, "recipe: !!python/object/apply:os.system [echo hi]"), [], "invalid YAML"),
    "non-utf8": (lambda t: t.encode().replace(b"tiny-sim", b"tiny\xffsim"), [], "UTF-8"),
    "utf16": (lambda t: t.encode("utf-16"), [], None),
    "binary": (whole(bytes(range(256)) * 4), [], None),
    "unknown-top-field": (lambda t: t + "color: red\n", ["color"], "unknown fields"),
    "format-2": (swap("format: 1", "format: 2"), ["format"], "must be 1"),
    "format-text": (swap("format: 1", 'format: "1"'), ["format"], "must be 1"),
    "scales-missing-full": (swap("  full: {n: 2, size: 32}\n", ""), ["scales"], "exactly"),
    "scales-a-list": (swap("scales:\n  tiny: {n: 2, size: 32}\n  demo: {n: 2, size: 32}\n  full: {n: 2, size: 32}\n",
                           "scales: [tiny, demo, full]\n"), ["scales"], None),
    "scale-not-a-mapping": (swap("tiny: {n: 2, size: 32}", "tiny: [1, 2]"), ["scales.tiny"], "map"),
    "steps-empty": (lambda t: t.split("steps:")[0] + "steps: []\n", ["steps"], "non-empty"),
    "steps-a-mapping": (lambda t: t.split("steps:")[0] + "steps: {a: 1}\n", ["steps"], "non-empty"),
    "step-a-string": (lambda t: t.split("steps:")[0] + "steps:\n  - source\n", ["steps[0]"], "mapping"),
    "step-kind-unknown": (swap("step: sample", "step: smaple"), ["smaple"], "did you mean 'sample'"),
    "step-kind-missing": (swap("step: sample, ", ""), ["step"], "unknown step kind"),
    "step-names-twice": (swap("step: sample,", "step: sample, name: source-a,"), ["source-a"], "comes earlier"),
    "step-field-unknown": (swap("min_frac: 0.0,", "color: red,"), ["color"], "unknown field"),
    "step-field-required-missing": (swap("reader: simulator, ", ""), ["reader"], "required"),
}

STATE_OK = {"recipe": "tiny-sim", "scale": "tiny", "steps": {"source-a": {"key": "a" * 64, "status": "done",
                                                                          "summary": {}, "seconds": 1.0}}}


def state_text(change: Callable[[dict], object]) -> str:
    state = json.loads(json.dumps(STATE_OK))
    change(state)
    return json.dumps(state)


RECORD = ("steps", "source-a")


def record(**fields) -> Callable[[dict], object]:
    return lambda s: s["steps"]["source-a"].update(fields)


# name -> what to put at .recipe/state.json (text, bytes, or a function making the entry)
STATES: dict[str, str | bytes | Callable[[Path], object]] = {
    "corrupt": '{"steps": {"source-a": {"key": ',
    "empty": "",
    "whitespace": "\n\n",
    "null": "null",
    "a-list": "[]",
    "a-number": "3",
    "steps-missing": json.dumps({"recipe": "tiny-sim"}),
    "steps-a-list": json.dumps({"steps": []}),
    "steps-null": json.dumps({"steps": None}),
    "record-a-number": json.dumps({"steps": {"source-a": 5}}),
    "record-without-key": state_text(lambda s: s["steps"]["source-a"].pop("key")),
    "record-key-not-hex": state_text(record(key="zz")),
    "record-key-a-number": state_text(record(key=12)),
    "record-status-unknown": state_text(record(status="finished")),
    "record-status-missing": state_text(lambda s: s["steps"]["source-a"].pop("status")),
    "record-done-without-summary": state_text(lambda s: s["steps"]["source-a"].pop("summary")),
    "record-summary-a-list": state_text(record(summary=[1])),
    "record-seconds-negative": state_text(record(seconds=-1)),
    "record-seconds-text": state_text(record(seconds="3")),
    "record-seconds-NaN": state_text(record(seconds=1.0)).replace('"seconds": 1.0', '"seconds": NaN'),
    "record-seconds-Infinity": state_text(record(seconds=1.0)).replace('"seconds": 1.0', '"seconds": Infinity'),
    "record-seconds-400-digits": state_text(record(seconds=1.0)).replace('"seconds": 1.0', '"seconds": ' + "9" * 400),
    "foreign-recipe": state_text(lambda s: s.update(recipe="leaderboard-simulator")),
    "nested-100k": "[" * 100_000 + "]" * 100_000,
    "non-utf8": json.dumps(STATE_OK).encode().replace(b"tiny-sim", b"tiny\xfesim"),
    "truncated": json.dumps(STATE_OK)[:40],
    "a-folder": lambda p: p.mkdir(),
    "symlink-loop": lambda p: os.symlink(p.name, p),
    "dangling-link": lambda p: os.symlink(p.parent / "gone.json", p),
    "oversized-sparse": lambda p: (p.write_text("{}"), os.truncate(p, (16 << 20) + 1)),
}


def _recipe(tmp: Path, content: str | bytes) -> Path:
    path = tmp / "in" / "recipe.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def spec_case(verb: str, edit: Callable[[str], str | bytes], named: list[str]):
    def make(tmp: Path, fx):
        recipe = _recipe(tmp, edit(BASE))
        out = tmp / "work" / "run"
        return ["recipe", verb, recipe, "--run-dir", out], out, ["recipe.yaml", *named]
    return make


def state_case(verb: str, state: str | bytes | Callable[[Path], object]):
    def make(tmp: Path, fx):
        recipe = _recipe(tmp, BASE)
        run = tmp / "in" / "run"
        path = run / ".recipe" / "state.json"
        path.parent.mkdir(parents=True)
        if callable(state):
            state(path)
        else:
            path.write_bytes(state if isinstance(state, bytes) else state.encode())
        return ["recipe", verb, recipe, "--run-dir", run], run / "OUT", ["state.json", "--fresh"]
    return make


def option_case(args: Callable[[Path, Path], list], named: str):
    def make(tmp: Path, fx):
        recipe = _recipe(tmp, BASE)
        out = tmp / "work" / "run"
        return ["recipe", *args(recipe, out)], out, [named]
    return make


OPTIONS = {
    "input-without-equals": (lambda r, o: ["plan", r, "--input", "slides"], "--input"),
    "input-without-name": (lambda r, o: ["plan", r, "--input", "=/tmp"], "--input"),
    "input-without-path": (lambda r, o: ["plan", r, "--input", "slides="], "--input"),
    "input-name-with-space": (lambda r, o: ["plan", r, "--input", "my slides=/tmp"], "--input"),
    "input-unknown": (lambda r, o: ["plan", r, "--input", "slides=/tmp"], "slides"),
    "input-twice": (lambda r, o: ["plan", r, "--input", "a=/tmp", "--input", "a=/tmp"], "--input"),
    "scale-unknown": (lambda r, o: ["plan", r, "--scale", "huge"], "--scale"),
    "run-dir-empty": (lambda r, o: ["run", r, "--run-dir", ""], "--run-dir"),
    "run-dir-dot": (lambda r, o: ["run", r, "--run-dir", "."], "--run-dir"),
    "run-dir-a-file": (lambda r, o: ["run", r, "--run-dir", r], "recipe.yaml"),
    "until-unknown": (lambda r, o: ["run", r, "--run-dir", o, "--until", "nope"], "nope"),
    "recipe-missing": (lambda r, o: ["plan", r.parent / "nothing.yaml"], "nothing.yaml"),
    "recipe-a-folder": (lambda r, o: ["plan", r.parent], "in"),
    "recipe-oversized": (lambda r, o: (os.truncate(r, (1 << 20) + 1), ["plan", r])[1], "recipe.yaml"),
}

CASES = [Case(f"{verb}-{name}", spec_case(verb, edit, named), problem=problem)
         for name, (edit, named, problem) in SPEC.items() for verb in ("plan", "run")]
CASES += [Case(f"state-{verb}-{name}", state_case(verb, state), problem="start over")
          for name, state in STATES.items() for verb in ("plan", "status", "run")]
CASES += [Case(name, option_case(args, named)) for name, (args, named) in OPTIONS.items()]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_recipe(case, tmp_path, capsys):
    check_case(case, tmp_path, capsys, inputs=[tmp_path / "in"])


def test_fresh_starts_over_from_a_damaged_state(tmp_path, capsys):
    """The way out the state errors name works: `recipe run --fresh` discards the damaged record and the recipe's
    outputs, runs every step and records them again."""
    recipe = _recipe(tmp_path, BASE.split("  - {step: sample")[0])
    run = tmp_path / "run"
    (run / ".recipe").mkdir(parents=True)
    (run / ".recipe" / "state.json").write_text('{"steps": {"source-a": {"key": ')
    (run / "data" / "a").mkdir(parents=True)
    (run / "data" / "a" / "stale.txt").write_text("from before")
    assert main(["recipe", "run", str(recipe), "--run-dir", str(run)]) == 2
    assert "--fresh" in capsys.readouterr().err
    assert main(["recipe", "run", str(recipe), "--run-dir", str(run), "--fresh"]) == 0
    state = json.loads((run / ".recipe" / "state.json").read_text())
    assert state["recipe"] == "tiny-sim" and state["steps"]["source-a"]["status"] == "done"
    assert not (run / "data" / "a" / "stale.txt").exists() and (run / "data" / "a" / "README.md").is_file()
    assert main(["recipe", "status", str(recipe), "--run-dir", str(run)]) == 0
    assert "source-a: done" in capsys.readouterr().out


def test_paths_are_compared_and_kept_normalized(tmp_path, capsys):
    """`data/./a` reads what `data/a` writes: the plan finds the writer (the runner keys a read by its text)."""
    recipe = _recipe(tmp_path, BASE.replace("data: data/a,", "data: data/./a,").replace("out: data/b}", "out: data//b/}"))
    assert main(["recipe", "plan", str(recipe), "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "2. sample (sample) -> data/b: run" in out and not (tmp_path / "run").exists()
