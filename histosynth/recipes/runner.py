"""Plan, run and report a recipe in a run folder, skipping every step whose content key is unchanged.

A step's key hashes its kind and resolved fields (bound inputs replaced by their names), the content hashes of the
inputs it reads, the keys of the steps that wrote what it reads, and the code version (the installed histosynth version: code
edited without a version bump does not invalidate a run folder); so a change anywhere upstream reruns everything
downstream. Input files are hashed once and remembered by (size, mtime) in `.recipe/inputs.json` (the first
full-scale run reads every slide once for this). The run folder's `.recipe/state.json` records each step as `started`
(with its key) before it runs and `done` (with its summary) after: a rerun skips done steps, and a step that
died restarts, or resumes inside itself (train continues its newest checkpoint, generate its finished chunks)
when its key is the same. A state file that is damaged, of another shape, holds a non-finite number or belongs to
another recipe is an error, never trusted; `recipe run --fresh` (`start_over`) discards it with the
recipe's outputs. The final report (report.json, report.md) lists every step's summary.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping

from histosynth.atomic import write_text_atomic
from histosynth.recipes.kinds import Handler, step_kind
from histosynth.recipes.spec import Recipe, RecipeError, Step, StepContext, canonical

STATE = Path(".recipe") / "state.json"
INPUT_HASHES = Path(".recipe") / "inputs.json"
_CHUNK = 8 * 2**20
MAX_STATE_BYTES = 16 << 20
STATUSES = ("started", "done")
_KEY = re.compile(r"\A[0-9a-f]{64}\Z")


@dataclass
class Planned:
    """A step with its content key and what a run would do with it: cached, run, resume or rerun."""

    step: Step
    key: str
    action: str
    summary: dict[str, Any] | None = None


def code_version() -> str:
    """The installed histosynth version (part of every step key)."""
    try:
        return metadata.version("histosynth")
    except metadata.PackageNotFoundError:
        return "unknown"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def input_hash(path: Path, run_dir: Path | None = None) -> str:
    """Content hash of an input file or folder (relative path + sha256 of each file); each file's hash is kept in
    the run folder by (size, mtime) so a rerun does not read large slides again."""
    memo_path = run_dir / INPUT_HASHES if run_dir is not None else None
    memo = _read_memo(memo_path) if memo_path is not None else {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        entry = memo.get(str(file))
        if not entry or entry["size"] != stat.st_size or entry["mtime_ns"] != stat.st_mtime_ns:
            entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": _file_sha256(file)}
            memo[str(file)] = entry
        name = file.name if file == path else str(file.relative_to(path))
        digest.update(f"{name}\0{entry['sha256']}\n".encode())
    if memo_path is not None and run_dir.is_dir():  # `plan` on a run that never started creates nothing
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(memo_path, json.dumps(memo, indent=1))
    return digest.hexdigest()


def _read_memo(path: Path) -> dict[str, Any]:
    """The remembered input file hashes; a damaged memo is only a cache, so it is dropped and rebuilt."""
    try:
        memo = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError, RecursionError):
        return {}
    entry_ok = (lambda e: isinstance(e, dict) and isinstance(e.get("sha256"), str)
                and all(type(e.get(k)) is int for k in ("size", "mtime_ns")))
    return memo if isinstance(memo, dict) and all(entry_ok(e) for e in memo.values()) else {}


def _state_error(path: Path, problem: str) -> RecipeError:
    return RecipeError(f"{path}: {problem}; the run folder's record cannot be trusted: start over with "
                       "`histosynth recipe run RECIPE --fresh` (reruns every step)")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _bounded_int(text: str) -> int:
    if len(text) > 20:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _read_state(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            raise _state_error(path, f"{path.stat().st_size} bytes, more than a state file holds ({MAX_STATE_BYTES})")
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant, parse_int=_bounded_int)
    except OSError as err:
        raise _state_error(path, f"unreadable ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise _state_error(path, f"not UTF-8 text (byte {err.start})") from None
    except RecursionError:
        raise _state_error(path, "not valid JSON (nested too deeply)") from None
    except ValueError as err:
        raise _state_error(path, f"not valid JSON ({' '.join(str(err).split())[:120]})") from None


def _check_record(path: Path, name: str, record: Any) -> None:
    where = f"steps.{name[:60]!r}"
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        raise _state_error(path, f"{where}: expected {{key, status: started|done, ...}}")
    if not isinstance(record.get("key"), str) or not _KEY.match(record["key"]):
        raise _state_error(path, f"{where}.key: not a step key (64 hex digits)")
    if record["status"] == "done" and not isinstance(record.get("summary"), dict):
        raise _state_error(path, f"{where}.summary: a finished step records its summary")
    seconds = record.get("seconds")
    if seconds is not None and (type(seconds) not in (int, float) or not math.isfinite(seconds) or seconds < 0):
        raise _state_error(path, f"{where}.seconds: not a number of seconds")


def load_state(run_dir: Path, recipe: Recipe | None = None) -> dict[str, Any]:
    """The run folder's step records ({"steps": {}} when nothing ran yet), checked: a damaged state file, one of
    another shape or (given `recipe`) another recipe's raises RecipeError saying how to start over."""
    path = run_dir / STATE
    if not path.exists() and not path.is_symlink():
        return {"steps": {}}
    state = _read_state(path)
    if not isinstance(state, dict) or not isinstance(state.get("steps"), dict):
        raise _state_error(path, "expected a JSON object with a `steps` object")
    for name, record in state["steps"].items():
        _check_record(path, name, record)
    if recipe is not None and "recipe" in state and state["recipe"] != recipe.name:
        raise _state_error(path, f"written by recipe {str(state['recipe'])[:80]!r}, not {recipe.name!r}: another "
                           "recipe's run folder (or choose another --run-dir)")
    return state


def start_over(recipe: Recipe, run_dir: Path) -> None:
    """Discard the run folder's state record and what the recipe's steps wrote there (`recipe run --fresh`)."""
    for target in [run_dir / out for step in recipe.steps for out in step.writes()] + [run_dir / STATE]:
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _save_state(run_dir: Path, state: dict[str, Any]) -> None:
    (run_dir / STATE).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / STATE, json.dumps(state, indent=1, sort_keys=True))


def step_keys(recipe: Recipe, run_dir: Path | None = None, hash_inputs: bool = True) -> dict[str, str]:
    """Each step's content key (see the module docstring). Without `hash_inputs`, inputs count by name only. A
    step's own key leaves its kind's extendable fields out (growing them resumes it); the key its readers see
    includes them (so what reads a grown step runs again)."""
    return {name: own for name, (own, _) in _keys(recipe, run_dir, hash_inputs).items()}


def _keys(recipe: Recipe, run_dir: Path | None, hash_inputs: bool) -> dict[str, tuple[str, str]]:
    """step name -> (own key, key its readers see)."""
    writer: dict[str, str] = {}
    keys: dict[str, tuple[str, str]] = {}
    hashes: dict[str, str] = {}
    for step in recipe.steps:
        extendable = step_kind(step.kind).extendable
        text = canonical({k: v for k, v in step.fields.items() if k not in extendable})
        used = {}
        for name, path in recipe.inputs.items():
            if str(path) in text:
                text = text.replace(str(path), f"<input:{name}>")
                if name not in hashes:
                    hashes[name] = input_hash(path, run_dir) if hash_inputs and path.exists() else f"<{name}>"
                used[name] = hashes[name]
        upstream = {p: keys[writer[p]][1] for p in step.reads()}
        payload = canonical({"kind": step.kind, "fields": text, "inputs": used, "upstream": upstream,
                             "code": code_version()})
        own = hashlib.sha256(payload.encode()).hexdigest()
        grown = canonical({k: step.fields[k] for k in extendable if k in step.fields})
        seen = hashlib.sha256((own + grown).encode()).hexdigest() if extendable else own
        keys[step.name] = (own, seen)
        for path in step.writes():
            writer[path] = step.name
    return keys


def extended_fields(step: Step) -> dict[str, Any]:
    """The step's values of its kind's extendable fields (recorded with a finished step)."""
    return {k: step.fields[k] for k in step_kind(step.kind).extendable if k in step.fields}


def plan(recipe: Recipe, run_dir: Path, hash_inputs: bool = True) -> list[Planned]:
    """What `run` would do with each step in `run_dir` now."""
    state = load_state(run_dir, recipe)["steps"]
    planned = []
    for step, (name, key) in zip(recipe.steps, step_keys(recipe, run_dir, hash_inputs).items(), strict=True):
        record = state.get(name)
        outputs_there = all((run_dir / p).exists() for p in step.writes())
        grown = record is not None and canonical(record.get("extended") or {}) != canonical(extended_fields(step))
        if record and record["key"] == key and record["status"] == "done" and outputs_there and not grown:
            action = "cached"
        elif record and record["key"] == key and (record["status"] == "started" or (outputs_there and grown)):
            action = "resume"
        elif record:
            action = "rerun"
        else:
            action = "run"
        planned.append(Planned(step, key, action, record.get("summary") if record else None))
    return planned


def run_recipe(recipe: Recipe, run_dir: Path, handlers: Mapping[str, Handler] | None = None, until: str | None = None,
               log: Callable[[str], None] = print, fresh: bool = False) -> dict[str, Any]:
    """Run the recipe's steps in `run_dir` (up to and including `until`), skipping cached ones; returns the report.
    Each step runs its kind's handler (histosynth.recipes.kinds) unless `handlers` gives another for that kind
    (tests replace one). With `fresh`, start over (`start_over`) first."""
    if until is not None:
        recipe.step(until)  # unknown names fail before anything runs
    if fresh:
        start_over(recipe, run_dir)
    state = load_state(run_dir, recipe)
    run_dir.mkdir(parents=True, exist_ok=True)
    state.update({"recipe": recipe.name, "recipe_hash": recipe.text_hash, "scale": recipe.scale})
    planned = plan(recipe, run_dir)
    total = len(planned)
    for index, item in enumerate(planned, start=1):
        step = item.step
        where = f"[{index}/{total}] {step.name} ({step.kind})"
        if item.action == "cached":
            log(f"{where}: cached ({item.key[:12]})")
        else:
            if item.action == "rerun":
                for path in step.writes():
                    shutil.rmtree(run_dir / path, ignore_errors=True)
            log(f"{where}: {'resuming' if item.action == 'resume' else 'running'} ({item.key[:12]})")
            state["steps"][step.name] = {"key": item.key, "status": "started"}
            _save_state(run_dir, state)
            start = time.perf_counter()
            handler = (handlers or {}).get(step.kind) or step_kind(step.kind).run()
            summary = handler(step, StepContext(run_dir, recipe, log, resume=item.action == "resume"))
            seconds = round(time.perf_counter() - start, 2)
            state["steps"][step.name] = {"key": item.key, "status": "done", "summary": summary, "seconds": seconds,
                                         **({"extended": extended_fields(step)} if step_kind(step.kind).extendable else {})}
            _save_state(run_dir, state)
            log(f"{where}: done in {seconds:.1f} s: {_short(summary)}")
        if step.name == until:
            break
    return write_report(recipe, run_dir, state)


def _short(summary: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in summary.items() if not isinstance(v, list))[:200]


def write_report(recipe: Recipe, run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """report.json and report.md of the run so far: the recipe hash, scale and every finished step's summary."""
    steps = {s.name: state["steps"].get(s.name) for s in recipe.steps}
    report = {"recipe": recipe.name, "path": str(recipe.path), "recipe_hash": recipe.text_hash, "scale": recipe.scale,
              "code_version": code_version(), "steps": steps}
    lines = [f"# Recipe {recipe.name} (scale {recipe.scale})", "", f"recipe sha256 `{recipe.text_hash}`, histosynth "
             f"{code_version()}", "", "| step | kind | status | seconds | summary |", "|---|---|---|---|---|"]
    for step in recipe.steps:
        record = steps[step.name] or {}
        lines.append(f"| {step.name} | {step.kind} | {record.get('status', 'not run')} | {record.get('seconds', '')} | "
                     f"{_short(record.get('summary') or {})} |")
    for step in recipe.steps:
        record = steps[step.name] or {}
        if step.kind == "card" and record.get("status") == "done":
            lines += ["", f"Release card: `{run_dir / step.fields['out'] / 'README.md'}`"]
    write_text_atomic(run_dir / "report.json", json.dumps(report, indent=1, default=str))
    write_text_atomic(run_dir / "report.md", "\n".join(lines) + "\n")
    return report
