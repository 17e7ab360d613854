"""Benchmark results as data: one JSON document per run, schema-checked, with everything needed to cite it.

A run records what was measured (metric, encoder, value, confidence interval, N real/fake), with which
versions (histosynth and its git commit, torch, encoder weights fingerprints, data content hashes and Hub
revisions) and how long it took. The leaderboard stores these files as they are.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import histosynth
from histosynth.atomic import atomic_file, write_text_atomic
from histosynth.errors import InputError

SCHEMA_VERSION = 1


class ResultsFormatError(InputError):
    """A results file does not follow the schema; the message names the file and the field."""


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
    higher_is_better: bool | None = None  # the metric's direction (None: not recorded, as in older files)


@dataclass
class DataRef:
    """Which data a run saw: a local folder or Hub repo, its revision, and the content hash of its images."""

    name: str
    path: str
    content_hash: str
    n: int
    revision: str | None = None


@dataclass
class BenchmarkRun:
    """A whole benchmark run (the file format of `histosynth bench ... --out run.json`)."""

    task: str
    results: list[MetricResult]
    data: dict[str, DataRef]
    encoders: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {weights fingerprint, source, licence}
    settings: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=lambda: code_versions())
    wall_time_s: float = 0.0
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path | str) -> Path:
        """Write atomically (`histosynth.atomic`) as indented JSON."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=False, allow_nan=False)
        return write_text_atomic(path, text + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "results") -> "BenchmarkRun":
        """Parse and check a run document; raises ResultsFormatError naming the field."""
        def need(obj: dict, key: str, types: tuple, ctx: str):
            if key not in obj:
                raise ResultsFormatError(f"{where}: {ctx}{key}: missing")
            if not isinstance(obj[key], types) or isinstance(obj[key], bool) and bool not in types:
                raise ResultsFormatError(f"{where}: {ctx}{key}: expected {'/'.join(t.__name__ for t in types)}, got {type(obj[key]).__name__}")
            return obj[key]

        if not isinstance(data, dict):
            raise ResultsFormatError(f"{where}: expected a JSON object")
        version = need(data, "schema_version", (int,), "")
        if version != SCHEMA_VERSION:
            raise ResultsFormatError(f"{where}: schema_version {version} is not supported (expected {SCHEMA_VERSION})")
        results = []
        for i, item in enumerate(need(data, "results", (list,), "")):
            ctx = f"results[{i}]."
            need(item, "metric", (str,), ctx)
            if item.get("value", 0) is None:
                if not isinstance(item.get("extra"), dict) or not isinstance(item["extra"].get("undefined"), str):
                    raise ResultsFormatError(f"{where}: {ctx}value: null without extra.undefined saying why")
                value = None
            else:
                value = need(item, "value", (int, float), ctx)
            if value is not None and not math.isfinite(value):
                raise ResultsFormatError(f"{where}: {ctx}value: not finite")
            if item.get("higher_is_better") is not None and not isinstance(item["higher_is_better"], bool):
                raise ResultsFormatError(f"{where}: {ctx}higher_is_better: expected true, false or null")
            results.append(MetricResult(**{k: item[k] for k in MetricResult.__dataclass_fields__ if k in item}))
        refs = {}
        for name, ref in need(data, "data", (dict,), "").items():
            for key, types in (("path", (str,)), ("content_hash", (str,)), ("n", (int,))):
                need(ref, key, types, f"data.{name}.")
            refs[name] = DataRef(**{k: ref[k] for k in DataRef.__dataclass_fields__ if k in ref})
        need(data, "task", (str,), "")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data and k not in ("results", "data")}
        return cls(results=results, data=refs, **fields)

    @classmethod
    def load(cls, path: Path | str) -> "BenchmarkRun":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ResultsFormatError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, str(path))


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
