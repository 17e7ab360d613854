"""Benchmark results as data: one JSON document per run, schema-checked, with everything needed to cite it.

A run records what was measured (metric, encoder, value, confidence interval, N real/fake), about what (the
`subjects`: which generator checkpoint or dataset produced each scored set), with which versions (histosynth and
its git commit, torch, encoder weights fingerprints, data content hashes and Hub revisions) and how long it took.
Schema v2 adds the subjects, the task's version, metric directions from the metric registry, data referenced by
content hash and location (a folder name or Hub repo, never an absolute local path) and a comparability key: two
runs with the same key measured the same thing the same way and may share a table. v1 files are migrated on load.
The leaderboard stores these files as they are.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import histosynth
from histosynth.atomic import atomic_file, write_text_atomic
from histosynth.benchmark.metric_registry import metric_spec
from histosynth.benchmark.results_check import (
    ResultsFormatError,
    check_count,
    check_numbers,
    check_run_fields,
    check_text,
    read_results_json,
)
from histosynth.benchmark.tasks.meta import TASK_METAS
from histosynth.errors import InputError, UnknownNameError

SCHEMA_VERSION = 2
TASK_VERSIONS = {meta.name: meta.version for meta in TASK_METAS}
"""Every benchmark task and its version (histosynth.benchmark.tasks.meta: bump a task's version whenever a change
alters its numbers)."""
MODEL_TASK_VERSIONS = {"hovernet": 2}
"""Versions of the downstream tasks (seg, tstr) for a model whose scores changed on their own: a run whose
settings.model is here has this version instead of its task's. hovernet (the nuclei task) v2: PQ, mPQ+ and F1 follow
the released HoVer-Net/CoNIC/PanNuke code, PQ pooled over images."""
SUBJECT_KINDS = ("generator", "dataset", "real")
COMPARABLE_SETTINGS = {meta.name: meta.comparable_settings for meta in TASK_METAS}
"""The settings of each task that change its numbers (part of the comparability key). The tasks that train a model
record the thread count: it changes the trained weights (float sums in another order), so the same settings on
another thread count give other numbers."""
RECORDED_SINCE = ("threads",)
"""Comparable settings that older files do not record: they enter the key only where a run records them, so an older
file keeps the key it was written with (and never shares a column with a run that records them)."""
REFERENCE_ROLES = ("real", "test", "train")
"""Data roles that are references (their content and size enter the key), unless the task scores them."""


def current_task_version(task: str, settings: dict[str, Any] | None = None) -> int:
    """The current version of `task` as run with `settings` (MODEL_TASK_VERSIONS for the downstream tasks)."""
    model = (settings or {}).get("model")
    if task in ("seg", "tstr") and isinstance(model, str) and model in MODEL_TASK_VERSIONS:
        return MODEL_TASK_VERSIONS[model]
    return TASK_VERSIONS[task]


@dataclass
class MetricResult:
    """One number: a metric under one encoder (encoder None for encoder-free metrics such as LPIPS).

    `value` is None only for a metric that is undefined on this data; `extra["undefined"]` then says why.
    """

    metric: str
    value: float | None
    encoder: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    n_real: int | None = None
    n_fake: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    higher_is_better: bool | None = None  # the metric's direction, filled from the metric registry
    subject: str | None = None  # the data role this number scores ("fake", "train:htd"); None: the run's only one

    def __post_init__(self) -> None:
        direction = metric_spec(self.metric).higher_is_better  # unknown metric names raise here
        if self.higher_is_better is None:
            self.higher_is_better = direction
        elif self.higher_is_better != direction:
            raise ValueError(f"metric {self.metric!r}: higher_is_better={self.higher_is_better} contradicts the "
                             f"metric registry ({direction})")


@dataclass
class DataRef:
    """Which data a run saw: the content hash of its images, their number, and where it came from.

    `path` is the local folder, kept in memory for error messages and never written: a file records `location`
    (the folder's name, or the Hub repo) and `revision` instead, so results mean the same on every machine.
    """

    name: str
    path: str = field(default="", compare=False, repr=False)
    content_hash: str = ""
    n: int = 0
    revision: str | None = None
    location: str = ""
    repo: str | None = None

    def __post_init__(self) -> None:
        if not self.location:
            self.location = Path(self.path).name if self.path else self.name


@dataclass
class Subject:
    """What produced a scored set: a generator checkpoint, a dataset (possibly mixed or of unknown origin), or real
    data. `content_hash` is the scored images' hash (DataRef.content_hash of its role)."""

    kind: str
    name: str
    content_hash: str
    version: str | None = None
    checkpoint_hash: str | None = None
    repo: str | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SUBJECT_KINDS:
            raise ValueError(f"subject kind must be one of {SUBJECT_KINDS}, not {self.kind!r}")


@dataclass
class BenchmarkRun:
    """A whole benchmark run (the file format of `histosynth bench ... --out run.json`)."""

    task: str
    results: list[MetricResult]
    data: dict[str, DataRef]
    subjects: dict[str, Subject] = field(default_factory=dict)  # data role -> what produced it
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {weights fingerprint, source, license}
    settings: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=lambda: code_versions())
    wall_time_s: float = 0.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    schema_version: int = SCHEMA_VERSION
    task_version: int | None = None  # None: current_task_version(task, settings)

    def __post_init__(self) -> None:
        if self.task not in TASK_VERSIONS:
            raise ValueError(f"unknown benchmark task {self.task!r}; known: {', '.join(TASK_VERSIONS)}")
        if self.task_version is None:
            self.task_version = current_task_version(self.task, self.settings)

    def comparability(self) -> dict[str, Any]:
        """What must be equal for two runs' numbers to be comparable: the task and its version, the encoders'
        weights and preprocessing, the reference data (content and N), the scored sets' N and the task's
        number-changing settings (COMPARABLE_SETTINGS)."""
        scored = {m.subject or "fake" for m in self.results} | set(self.subjects)
        return {
            "task": self.task, "task_version": self.task_version,
            "encoders": {name: {k: e.get(k) for k in ("weights", "preprocess", "backbone") if k in e}
                         for name, e in sorted(self.encoders.items())},
            "reference": {role: {"content_hash": ref.content_hash, "n": ref.n} for role, ref in sorted(self.data.items())
                          if role in REFERENCE_ROLES and role not in scored},
            "n_scored": {role: ref.n for role, ref in sorted(self.data.items()) if role in scored},
            "settings": {k: self.settings.get(k) for k in COMPARABLE_SETTINGS[self.task]
                         if k not in RECORDED_SINCE or k in self.settings},
        }

    @property
    def comparability_key(self) -> str:
        """A short hash of `comparability()`: runs with equal keys may share a leaderboard column."""
        text = json.dumps(self.comparability(), sort_keys=True, separators=(",", ":"), default=str)
        return "ck:" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for ref in data["data"].values():
            del ref["path"]
        data["comparability"] = self.comparability()
        data["comparability_key"] = self.comparability_key
        return data

    def save(self, path: Path | str) -> Path:
        """Write atomically (`histosynth.atomic`) as indented JSON."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)
        return write_text_atomic(path, text + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "results") -> "BenchmarkRun":
        """Parse and check a run document (v1 documents are migrated first); raises ResultsFormatError naming the
        field."""
        def need(obj: dict, key: str, types: tuple, ctx: str):
            if not isinstance(obj, dict):
                raise ResultsFormatError(f"{where}: {ctx.rstrip('.')}: expected an object")
            if key not in obj:
                raise ResultsFormatError(f"{where}: {ctx}{key}: missing")
            if not isinstance(obj[key], types) or isinstance(obj[key], bool) and bool not in types:
                raise ResultsFormatError(f"{where}: {ctx}{key}: expected {'/'.join(t.__name__ for t in types)}, got {type(obj[key]).__name__}")
            return obj[key]

        if not isinstance(data, dict):
            raise ResultsFormatError(f"{where}: expected a JSON object")
        version = need(data, "schema_version", (int,), "")
        if version == 1:
            data = migrate_v1(data, where)
        elif version != SCHEMA_VERSION:
            raise ResultsFormatError(f"{where}: schema_version {version} is not supported (expected {SCHEMA_VERSION}, "
                                     "or 1, which is migrated)")
        task = need(data, "task", (str,), "")
        if task not in TASK_VERSIONS:
            raise ResultsFormatError(f"{where}: task: unknown task {check_text(task, f'{where}: task')!r} (known: "
                                     f"{', '.join(TASK_VERSIONS)})")
        check_run_fields(data, where)
        task_version = need(data, "task_version", (int,), "")
        newest = current_task_version(task, data.get("settings"))
        if not 1 <= task_version <= newest:
            raise ResultsFormatError(f"{where}: task_version: {task} has versions 1 to {newest}, not {task_version}")
        items = need(data, "results", (list,), "")
        if not items:
            raise ResultsFormatError(f"{where}: results: empty; a results file holds at least one number")
        results = [_result(item, where, f"results[{i}].", need) for i, item in enumerate(items)]
        refs = {}
        for name, ref in need(data, "data", (dict,), "").items():
            check_text(name, f"{where}: data key")
            for key, types in (("content_hash", (str,)), ("n", (int,)), ("location", (str,))):
                need(ref, key, types, f"data.{name}.")
            _check_texts(ref, ("name", "content_hash", "location", "repo", "revision"), f"{where}: data.{name}.")
            check_count(ref["n"], f"{where}: data.{name}.n", optional=False)
            if _is_absolute(ref["location"]):
                raise ResultsFormatError(f"{where}: data.{name}.location: {ref['location']!r} is an absolute local "
                                         "path; results name data by folder name or Hub repo")
            refs[name] = DataRef(**{k: ref[k] for k in DataRef.__dataclass_fields__ if k in ref and k != "path"})
        subjects = {}
        for role, subject in need(data, "subjects", (dict,), "").items():
            check_text(role, f"{where}: subjects key")
            for key in ("kind", "name", "content_hash"):
                need(subject, key, (str,), f"subjects.{role}.")
            _check_texts(subject, ("name", "content_hash", "version", "checkpoint_hash", "repo", "revision"),
                         f"{where}: subjects.{role}.")
            if subject["kind"] not in SUBJECT_KINDS:
                raise ResultsFormatError(f"{where}: subjects.{role}.kind: {subject['kind']!r} is not one of {SUBJECT_KINDS}")
            subjects[role] = Subject(**{k: subject[k] for k in Subject.__dataclass_fields__ if k in subject})
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("results", "data", "subjects")}
        run = cls(results=results, data=refs, subjects=subjects, **fields)
        stored = data.get("comparability_key")
        if stored is not None and stored != run.comparability_key:
            raise ResultsFormatError(f"{where}: comparability_key: {stored} does not match the run's contents "
                                     f"({run.comparability_key}); the file was edited or is damaged")
        return run

    @classmethod
    def load(cls, path: Path | str) -> "BenchmarkRun":
        """Read and check a results file (results_check.read_results_json's caps, then `from_dict`)."""
        path = Path(path)
        return cls.from_dict(read_results_json(path), str(path))


def _result(item: Any, where: str, ctx: str, need) -> MetricResult:
    """One entry of `results`, checked against the metric registry."""
    check_text(need(item, "metric", (str,), ctx), f"{where}: {ctx}metric")
    if item.get("value", 0) is None:
        if not isinstance(item.get("extra"), dict) or not isinstance(item["extra"].get("undefined"), str):
            raise ResultsFormatError(f"{where}: {ctx}value: null without extra.undefined saying why")
    else:
        need(item, "value", (int, float), ctx)
    if item.get("higher_is_better") is not None and not isinstance(item["higher_is_better"], bool):
        raise ResultsFormatError(f"{where}: {ctx}higher_is_better: expected true, false or null")
    try:
        spec = metric_spec(item["metric"])
    except UnknownNameError as err:
        raise ResultsFormatError(f"{where}: {ctx}metric: {err}") from err
    check_numbers(item, spec, f"{where}: {ctx}")
    try:
        return MetricResult(**{k: item[k] for k in MetricResult.__dataclass_fields__ if k in item})
    except ValueError as err:
        raise ResultsFormatError(f"{where}: {ctx}higher_is_better: {err}") from err


def _check_texts(obj: dict, keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        check_text(obj.get(key), f"{where}{key}", optional=True)


def _is_absolute(location: str) -> bool:
    return location.startswith(("/", "\\", "~")) or PureWindowsPath(location).is_absolute()


def migrate_v1(data: dict[str, Any], where: str = "results") -> dict[str, Any]:
    """A schema-v1 document as v2: absolute paths become folder names, the task gets version 1, each scored set
    becomes a subject of kind "dataset" (v1 did not record who made it), directions come from the registry."""
    out = json.loads(json.dumps(data))
    task = out.get("task")
    if task not in TASK_VERSIONS:
        raise ResultsFormatError(f"{where}: task: v1 task {task!r} has no v2 equivalent; rerun the benchmark")
    refs = out.get("data")
    if not isinstance(refs, dict):
        raise ResultsFormatError(f"{where}: data: missing or not an object")
    for name, ref in refs.items():
        if not isinstance(ref, dict) or not isinstance(ref.get("path"), str):
            raise ResultsFormatError(f"{where}: data.{name}.path: missing (v1)")
        ref["location"] = Path(ref.pop("path")).name
    for encoder in (out.get("encoders") or {}).values():
        if isinstance(encoder, dict) and isinstance(encoder.get("backbone"), str) and _is_absolute(encoder["backbone"]):
            encoder["backbone"] = Path(encoder["backbone"]).name
    scored = ["fake"] if "fake" in refs else [r for r in refs if r.startswith("train:")] or (["train"] if task == "seg" else [])
    out["subjects"] = {role: {"kind": "dataset", "name": refs[role].get("name", role),
                              "content_hash": refs[role].get("content_hash", "")} for role in scored if role in refs}
    for item in out.get("results") or []:
        if isinstance(item, dict) and task == "tstr" and isinstance(item.get("extra"), dict) and "train" in item["extra"]:
            item.setdefault("subject", f"train:{item['extra']['train']}")
    out.update(schema_version=SCHEMA_VERSION, task_version=TASK_VERSIONS[task])
    out.setdefault("settings", {})["migrated_from_schema"] = 1
    return out


def git_commit() -> str | None:
    """The commit of the histosynth checkout, if it is one (None for an installed wheel)."""
    root = Path(histosynth.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_versions() -> dict[str, Any]:
    """Versions of the code a number depends on."""
    versions: dict[str, Any] = {"histosynth": histosynth.__version__, "git_commit": git_commit(), "python": platform.python_version()}
    for module in ("torch", "numpy", "scipy", "timm", "torch_fidelity", "lpips"):
        try:
            versions[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            versions[module] = None
    return versions


def results_table(runs: list[BenchmarkRun]):
    """A pandas table: one row per (run, metric, encoder) with value and CI, for printing and papers."""
    import pandas as pd

    rows = []
    for run in runs:
        label = run.data.get("fake").name if "fake" in run.data else run.run_id
        for r in run.results:
            ci = f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" if r.ci_low is not None and r.ci_high is not None else ""
            value = r.value if r.value is not None else "undefined"
            rows.append({"data": label, "metric": r.metric, "encoder": r.encoder or "-", "value": value, "CI": ci,
                         "N real": r.n_real, "N fake": r.n_fake})
    return pd.DataFrame(rows)


def markdown_table(table) -> str:
    """A pandas table as a GitHub markdown table (for reports and papers' supplements; no tabulate needed)."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot_metric_bars(runs: list[BenchmarkRun], metric: str, out: Path | str) -> Path:
    """One bar chart panel per encoder: `metric` of each run with its CI as error bars (encoders disagree, so
    each gets its own scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encoders = sorted({r.encoder or "-" for run in runs for r in run.results if r.metric == metric})
    if not encoders:
        raise InputError(f"no {metric!r} results to plot")
    fig, axes = plt.subplots(1, len(encoders), figsize=(3.2 * len(encoders), 3.2), squeeze=False)
    for ax, encoder in zip(axes[0], encoders, strict=False):
        labels, values, errors = [], [], [[], []]
        for run in runs:
            for r in run.results:
                if r.metric == metric and (r.encoder or "-") == encoder and r.value is not None:
                    labels.append(run.data["fake"].name if "fake" in run.data else run.run_id)
                    values.append(r.value)
                    lo = r.value - r.ci_low if r.ci_low is not None else 0.0
                    hi = r.ci_high - r.value if r.ci_high is not None else 0.0
                    errors[0].append(max(lo, 0.0))
                    errors[1].append(max(hi, 0.0))
        ax.bar(range(len(values)), values, yerr=errors, capsize=4, color="#8e5ea2")
        ax.set_xticks(range(len(values)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_title(encoder, fontsize=9)
        ax.set_ylabel(metric)
    fig.tight_layout()
    out = Path(out)
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=120)
    plt.close(fig)
    return out
