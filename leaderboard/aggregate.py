"""Leaderboard aggregation: a folder of results files -> one row per subject, one column per comparable group.

A column is one (task, metric, encoder) measured under one comparability key (histosynth.benchmark.results): runs
with different keys never share a column, and each column says which key it holds. A row is one subject: a generator
checkpoint, a dataset, real data (kind "real") or a reference generator (kind "reference": real-heldout, the
real-data ceiling; copy-nearest, the copy baseline). Real and reference rows are reference lines: shown, never
ranked, never counted in another row's rank.

Ranking rules (the page and the paper tables both read them from here):

- Per column, ranked rows are sorted best-first by the metric's direction from the metric registry (never from a
  file). Competition ranking with CI ties: a row takes the competition rank (1 + rows with a strictly better value)
  of the best row whose confidence interval overlaps its own; a row without a CI is the point [v, v]. So a row ties
  with every better row that its CI cannot tell apart from it, as far up as such a row exists.
- Per-class columns (metric `family/class`) are details: shown, not aggregated; so is a column that ranks nobody
  (only the reference line has a number there).
- Aggregates weight each task equally: a row's task score is the mean over that task's aggregated columns of its
  rank (mean rank) or of its Borda points (the number of ranked rows with a strictly worse rank in the column);
  the row's Borda is the sum of its task scores, its mean rank the mean of them.
- Partial coverage (a ranked row without a value in some aggregated column of the view) gets null aggregates, as in
  MTEB, so a row cannot climb by skipping tasks.
- The suite's rules (histosynth.benchmark.suite): a subject whose memorization share is above the limit with 95 %
  confidence is disqualified (shown with the reason, ranked nowhere); a column without power (too few seeds or
  samples, no intervals, unable to tell the real row from the metric's floor, or an FD fitted to fewer samples than
  its encoder's feature dimensions) is shown, ranked, but never aggregated; every row says on how many of the
  view's columns it was ranked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from histosynth.benchmark.metric_registry import metric_spec
from histosynth.benchmark.results import (
    REFERENCE_ROLES,
    BenchmarkRun,
    DataRef,
    MetricResult,
    Subject,
    current_task_version,
)
from histosynth.errors import InputError, MissingInputError

RESULTS_GLOB = "*.json"
REFERENCE_KINDS = ("real", "reference")
SEEDED_TASKS = ("tstr", "seg")
NO_ENCODER = "-"  # the encoder of encoder-free metrics (LPIPS, mIoU, PQ) in column ids and filters


@dataclass(frozen=True)
class Row:
    """One subject of the leaderboard: what produced the scored images."""

    id: str
    kind: str
    name: str
    content_hash: str
    version: str | None = None
    checkpoint_hash: str | None = None
    repo: str | None = None
    revision: str | None = None
    dataset: str | None = None  # a reference generator's held-out dataset; real data's own set name
    title: str | None = field(default=None, compare=False)  # a submission's display title
    citation: str | None = field(default=None, compare=False)  # a submission's BibTeX entry

    @property
    def ranked(self) -> bool:
        """Real data and reference generators are reference lines, never ranked."""
        return self.kind not in REFERENCE_KINDS

    @property
    def label(self) -> str:
        """Display name: generators with version and a short checkpoint hash, datasets with repo@revision, a
        reference generator with the dataset it is the reference line of."""
        if self.kind == "reference":
            short = (self.checkpoint_hash or "").split(":")[-1][:8]
            return f"{self.name} on {self.dataset}" + (f" ({short})" if short else "")
        if self.title:
            short = (self.checkpoint_hash or self.content_hash or "").split(":")[-1][:8]
            return f"{self.title} ({short})"
        if self.kind == "generator":
            short = (self.checkpoint_hash or "").split(":")[-1][:8]
            return f"{self.name} {self.version or ''}".strip() + (f" ({short})" if short else "")
        if self.repo:
            return f"{self.repo}@{self.revision}" if self.revision else self.repo
        if self.kind == "real" and self.dataset:
            return f"{self.name}: {self.dataset}"  # which real set: the training set, the test set
        return self.name


def reference_generators() -> frozenset[str]:
    """Names of the registered generators of family "reference" (real-heldout, copy-nearest)."""
    from histosynth.generators.registry import GENERATORS

    return frozenset(name for name in GENERATORS if GENERATORS.get(name).family == "reference")


def row_of(subject: Subject) -> Row:
    """The leaderboard row of a subject: generators by checkpoint, everything else by content; a reference
    generator's row has kind "reference"."""
    if subject.kind == "generator" and subject.name in reference_generators():
        key = f"reference:{subject.name}@{subject.checkpoint_hash or subject.content_hash}"
        return Row(key, "reference", subject.name, subject.content_hash, subject.version, subject.checkpoint_hash,
                   subject.repo, subject.revision)
    if subject.kind == "generator":
        key = f"generator:{subject.name}@{subject.checkpoint_hash or subject.content_hash}"
    elif subject.repo:
        key = f"{subject.kind}:{subject.repo}@{subject.revision or subject.content_hash}"
    else:
        key = f"{subject.kind}:{subject.name}@{subject.content_hash}"
    return Row(key, subject.kind, subject.name, subject.content_hash, subject.version, subject.checkpoint_hash,
               subject.repo, subject.revision)


@dataclass(frozen=True)
class Column:
    """One comparable group: a task's metric under one encoder and one comparability key."""

    id: str
    task: str
    task_version: int
    metric: str
    encoder: str  # NO_ENCODER for encoder-free metrics
    dataset: str  # the reference data it is measured against (names the filter)
    comparability_key: str
    comparability: dict[str, Any] = field(compare=False, hash=False)

    @property
    def higher_is_better(self) -> bool:
        return metric_spec(self.metric).higher_is_better

    @property
    def detail(self) -> bool:
        """Per-class breakdowns (iou/stroma) are shown but not aggregated."""
        return "/" in self.metric

    @property
    def title(self) -> str:
        return self.metric if self.encoder == NO_ENCODER else f"{self.metric} ({self.encoder})"

    @property
    def task_label(self) -> str:
        """The task as headers name it: with the model it trains where it trains one (a results file's task is
        "tstr" for both DeepLabv3+ and HoVer-Net; settings.model says which)."""
        model = self.comparability.get("settings", {}).get("model")
        return f"{self.task} ({model})" if model else self.task


@dataclass(frozen=True)
class Cell:
    """One number on the board, with where it came from and its rank in its column (None: not ranked)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    ci_level: float | None
    n_fake: int | None
    file: str
    run_id: str
    code: dict[str, Any] = field(compare=False, hash=False)
    undefined: str | None = None
    rank: int | None = None


@dataclass(frozen=True)
class Aggregate:
    """A row's aggregates over one view (a set of columns); None where its coverage is partial or it is not ranked."""

    borda: float | None
    mean_rank: float | None
    coverage: int  # aggregated columns of the view the row has a value in
    columns: int  # aggregated columns (those with power) in the view
    view_columns: int = 0  # every non-detail column of the view, aggregated or not


@dataclass(frozen=True)
class Power:
    """Whether a column can rank: its resolvable difference (median CI half-width of its ranked rows), the seeds and
    samples its numbers rest on, and why it has no power (None: it has)."""

    resolvable: float | None
    seeds: int | None
    samples: int | None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def label(self) -> str:
        """The short word a header shows when the column cannot rank: "stale" (an older task version) or
        "no power"."""
        return "stale" if self.reason is not None and self.reason.startswith("stale") else "no power"


@dataclass
class Leaderboard:
    """Rows, columns and cells (row id -> column id -> Cell), ranks filled in."""

    rows: list[Row]
    columns: list[Column]
    cells: dict[str, dict[str, Cell]]
    files: list[str]
    power: dict[str, Power] = field(default_factory=dict)  # column id -> its power
    disqualified: dict[str, str] = field(default_factory=dict)  # row id -> why it is not ranked

    def ranked(self, row: Row | str) -> bool:
        """Whether the row is ranked: not a reference line and not disqualified."""
        row = row if isinstance(row, Row) else next(r for r in self.rows if r.id == row)
        return row.ranked and row.id not in self.disqualified

    def cell(self, row: Row | str, column: Column | str) -> Cell | None:
        row_id = row if isinstance(row, str) else row.id
        column_id = column if isinstance(column, str) else column.id
        return self.cells.get(row_id, {}).get(column_id)

    @property
    def tasks(self) -> list[str]:
        return sorted({c.task for c in self.columns})

    @property
    def datasets(self) -> list[str]:
        return sorted({c.dataset for c in self.columns})

    @property
    def encoders(self) -> list[str]:
        return sorted({c.encoder for c in self.columns})

    def select(self, tasks: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
               encoders: Iterable[str] | None = None, metrics: Iterable[str] | None = None) -> list[Column]:
        """The columns matching every given filter (None: no filter); unknown names raise, listing the known ones."""
        chosen = self.columns
        for attr, wanted, known in (("task", tasks, self.tasks), ("dataset", datasets, self.datasets),
                                    ("encoder", encoders, self.encoders),
                                    ("metric", metrics, sorted({c.metric for c in self.columns}))):
            if wanted is None:
                continue
            wanted = list(wanted)
            unknown = [w for w in wanted if w not in known]
            if unknown:
                raise InputError(f"no results for {attr} {', '.join(map(repr, unknown))}; the results have: "
                                 f"{', '.join(known) or 'none'}")
            chosen = [c for c in chosen if getattr(c, attr) in wanted]
        return chosen

    def aggregate(self, columns: list[Column] | None = None) -> dict[str, Aggregate]:
        """Borda and mean rank of every ranked row over the columns with power among `columns` (default all), each
        task weighted equally."""
        shown = [c for c in (self.columns if columns is None else columns) if not c.detail]
        columns = [c for c in shown if self.power.get(c.id, Power(None, None, None)).ok
                   and any(cell.rank is not None for cell in self._column_cells(c))]
        by_task: dict[str, list[Column]] = {}
        for column in columns:
            by_task.setdefault(column.task, []).append(column)
        points = {c.id: borda_points([cell.rank for cell in self._column_cells(c) if cell.rank is not None])
                  for c in columns}
        out = {}
        for row in self.rows:
            cells = [self.cell(row, c) for c in columns]
            coverage = sum(cell is not None and cell.value is not None for cell in cells)
            if not self.ranked(row) or not columns or coverage < len(columns):
                out[row.id] = Aggregate(None, None, coverage, len(columns), len(shown))
                continue
            task_borda, task_rank = [], []
            for task_columns in by_task.values():
                ranks = [self.cell(row, c).rank for c in task_columns]
                task_rank.append(sum(ranks) / len(ranks))
                task_borda.append(sum(points[c.id][r] for c, r in zip(task_columns, ranks, strict=True)) / len(ranks))
            out[row.id] = Aggregate(sum(task_borda), sum(task_rank) / len(task_rank), coverage, len(columns),
                                    len(shown))
        return out

    def subtitle(self, column: Column) -> str:
        """The header's second line: reference data, task (with its model) and version, plus the start of the
        comparability key where another column has the same title and data (so the two can be told apart)."""
        text = f"{column.dataset}, {column.task_label} v{column.task_version}"
        twins = [c for c in self.columns if (c.task, c.metric, c.encoder, c.dataset) ==
                 (column.task, column.metric, column.encoder, column.dataset)]
        return text + (f", {column.comparability_key[:11]}" if len(twins) > 1 else "")

    def _column_cells(self, column: Column) -> list[Cell]:
        return [cells[column.id] for cells in self.cells.values() if column.id in cells]


def borda_points(ranks: list[int]) -> dict[int, int]:
    """Borda points of each rank in a column: the number of ranked rows with a strictly worse rank."""
    return {r: sum(other > r for other in ranks) for r in set(ranks)}


def ci_ranks(entries: list[tuple[float, float | None, float | None]], higher_is_better: bool) -> list[int]:
    """Ranks (1 = best) of (value, ci_low, ci_high) entries with CI ties (the rule in the module docstring)."""
    def better(a: float, b: float) -> bool:
        return a > b if higher_is_better else a < b

    bounds = [(lo if lo is not None else v, hi if hi is not None else v) for v, lo, hi in entries]
    competition = [1 + sum(better(o[0], e[0]) for o in entries) for e in entries]
    order = sorted(range(len(entries)), key=lambda i: competition[i])
    # the first overlapping row in best-first order; every row overlaps itself, so there is one
    return [competition[next(j for j in order if bounds[j][0] <= hi and lo <= bounds[j][1])] for lo, hi in bounds]


def _data_name(ref: DataRef) -> str:
    """How the board names a data set: repo@revision when it is on the Hub, else its name."""
    return f"{ref.repo}@{ref.revision}" if ref.repo and ref.revision else ref.repo or ref.name


def reference_dataset(run: BenchmarkRun) -> str:
    """The name of the data a run measures against (its first reference role that it does not score)."""
    scored = {m.subject or "fake" for m in run.results} | set(run.subjects)
    for role in REFERENCE_ROLES:
        if role in run.data and role not in scored:
            return _data_name(run.data[role])
    return "-"


def heldout_dataset(run: BenchmarkRun) -> str:
    """The name of the held-out real data a run scores against: its test set (TSTR), the real held-out patches of
    label consistency's ceiling, else its reference (distribution, completion). A column belongs to it, so one
    held-out set gathers every task measured on it (label consistency's segmenter trains on the training set, but
    its ceiling, the number its column is read against, is on the held-out patches)."""
    for role in ("test", "real-test", "real"):
        if role in run.data:
            return _data_name(run.data[role])
    return reference_dataset(run)


def load_results(folder: Path | str) -> list[tuple[str, BenchmarkRun]]:
    """Every results file under `folder` (recursively, *.json, sorted), validated: (path relative to folder, run).

    Hidden files and folders are skipped: histosynth.atomic writes into hidden partial folders, so a folder being
    scored into never shows half a subject. Any other *.json entry must be a readable results file: a folder, a
    dangling or looping link of that name is an error naming it, never skipped (a subject would vanish unseen)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"{folder}: results folder not found")
    paths = sorted(p for p in folder.rglob(RESULTS_GLOB)
                   if not any(part.startswith(".") for part in p.relative_to(folder).parts))
    if not paths:
        raise InputError(f"{folder}: no results files ({RESULTS_GLOB}) in this folder")
    return [(p.relative_to(folder).as_posix(), BenchmarkRun.load(p)) for p in paths]


def _role_of(run: BenchmarkRun, result: MetricResult) -> str:
    """The data role a result scores: its own, else "fake", else the run's only subject."""
    return result.subject or ("fake" if "fake" in run.subjects or len(run.subjects) != 1 else next(iter(run.subjects)))


def _subject_of(run: BenchmarkRun, result: MetricResult, where: str) -> Subject:
    role = _role_of(run, result)
    if role not in run.subjects:
        raise InputError(f"{where}: metric {result.metric!r} scores data role {role!r}, which has no entry in "
                         f"subjects ({', '.join(run.subjects) or 'none'}); the leaderboard cannot say whose number it is")
    return run.subjects[role]


def _real_set_name(run: BenchmarkRun, result: MetricResult) -> str | None:
    """The folder name of the real set a real-data row scores (sim-train, sim-test), from the run's data records."""
    data = run.data.get(_role_of(run, result))
    return None if data is None else (data.location or data.name)


def build_leaderboard(runs: list[tuple[str, BenchmarkRun]]) -> Leaderboard:
    """Group the runs' numbers into rows and columns and rank every column (see the module docstring)."""
    rows: dict[str, Row] = {}
    columns: dict[str, Column] = {}
    cells: dict[str, dict[str, Cell]] = {}
    for where, run in runs:
        key = run.comparability_key
        dataset = heldout_dataset(run)
        for result in run.results:
            row = row_of(_subject_of(run, result, where))
            if row.kind == "real":
                row = replace(row, dataset=_real_set_name(run, result))
            if row.kind == "reference":  # a reference line belongs to its held-out data: one row per dataset
                row = replace(row, id=f"{row.id}|{dataset}", dataset=dataset)
            submitted = run.settings.get("submission") or {}
            if row.kind in ("generator", "dataset") and submitted.get("name") == row.name:
                row = replace(row, title=submitted.get("title"), citation=submitted.get("citation"))
            encoder = result.encoder or NO_ENCODER
            column_id = f"{run.task}/{result.metric}/{encoder}/{dataset}/{key}"
            columns.setdefault(column_id, Column(column_id, run.task, run.task_version, result.metric, encoder,
                                                 dataset, key, run.comparability()))
            rows.setdefault(row.id, row)
            previous = cells.setdefault(row.id, {}).get(column_id)
            if previous is not None and (previous.value, previous.ci_low, previous.ci_high) == \
                    (result.value, result.ci_low, result.ci_high):
                continue  # the same measurement in two files (a rerun, a copy): one cell, the first file's
            if previous is not None:
                raise InputError(f"{where} and {previous.file} both score {row.label} on {columns[column_id].title} "
                                 f"of {run.task} under {key} with different numbers; keep one of the two files")
            undefined = result.extra.get("undefined") if result.value is None else None
            cells[row.id][column_id] = Cell(result.value, result.ci_low, result.ci_high, result.ci_level,
                                            result.n_fake, where, run.run_id, dict(run.code), undefined)
    disqualified = disqualifications(rows, columns, cells)
    for column in columns.values():
        ranked = [(rid, c) for rid, by in cells.items() if (c := by.get(column.id)) is not None
                  and c.value is not None and rows[rid].ranked and rid not in disqualified]
        ranks = ci_ranks([(c.value, c.ci_low, c.ci_high) for _, c in ranked], column.higher_is_better)
        for (rid, c), rank in zip(ranked, ranks, strict=True):
            cells[rid][column.id] = replace(c, rank=rank)
    power = {column.id: column_power(column, rows, cells) for column in columns.values()}
    ordered_columns = sorted(columns.values(), key=lambda c: (c.task, c.dataset, c.metric, c.encoder, c.comparability_key))
    ordered_rows = sorted(rows.values(), key=lambda r: (not r.ranked, r.id in disqualified, r.kind, r.name, r.id))
    return Leaderboard(ordered_rows, ordered_columns, cells, [w for w, _ in runs], power, disqualified)


def _covariance_short_of_dimensions(column: Column, samples: int | None) -> str | None:
    """Why a covariance-fitted metric's column (FD) has no power, when a set behind it has fewer samples than its
    encoder has feature dimensions (the suite's rule); None when it has enough, or the encoder is not registered."""
    from histosynth.benchmark.encoders import ENCODERS

    if not metric_spec(column.metric).covariance or column.encoder not in ENCODERS:
        return None
    dim = ENCODERS.get(column.encoder).feature_dim
    real = ((column.comparability.get("reference") or {}).get("real") or {}).get("n")
    sizes = {"generated": samples, "real": real if isinstance(real, int) else None}
    short = {role: n for role, n in sizes.items() if n is not None and n < dim}
    if not short:
        return None
    told = " and ".join(f"{n} {role}" for role, n in short.items())
    return (f"{told} samples of {dim}-dimensional features: a rank-deficient covariance, so {column.metric} is "
            f"biased by an N-dependent term (the suite asks for as many samples as dimensions; KID ranks small sets)")


def disqualifications(rows: dict[str, Row], columns: dict[str, Column], cells: dict[str, dict[str, Cell]]
                      ) -> dict[str, str]:
    """Ranked rows whose memorization share is above the suite's limit with 95 % confidence, with the reason."""
    from histosynth.benchmark.suite import MEMORIZATION_LIMIT

    out = {}
    for rid, by in cells.items():
        if not rows[rid].ranked:
            continue
        for column_id, cell in by.items():
            column = columns[column_id]
            low = cell.ci_low if cell.ci_low is not None else cell.value
            if column.metric == "memorization" and low is not None and low > MEMORIZATION_LIMIT:
                out[rid] = (f"memorizes: {format_number(cell.value)} of its samples are near-copies of training "
                            f"patches on {column.dataset} (95 % interval from {format_number(low)}, above the suite's "
                            f"limit {MEMORIZATION_LIMIT:g})")
                break
    return out


def column_power(column: Column, rows: dict[str, Row], cells: dict[str, dict[str, Cell]]) -> Power:
    """The column's Power under the suite's rules (histosynth.benchmark.suite)."""
    from histosynth.benchmark.suite import MIN_SAMPLES, MIN_SEEDS, POWER_SPAN

    present = [(rows[rid], by[column.id]) for rid, by in cells.items()
               if column.id in by and by[column.id].value is not None]
    ranked = [c for _, c in present if c.rank is not None]
    widths = sorted((c.ci_high - c.ci_low) / 2 for c in ranked if c.ci_low is not None and c.ci_high is not None)
    resolvable = widths[len(widths) // 2] if widths else None
    seeds = column.comparability.get("settings", {}).get("seeds")
    seeds = len(seeds) if isinstance(seeds, list) else None
    samples = min((c.n_fake for c in ranked if c.n_fake is not None), default=None)
    reason = None
    current = current_task_version(column.task, column.comparability.get("settings"))
    if column.task_version < current:
        reason = (f"stale: measured by {column.task_label} v{column.task_version}, whose numbers the current "
                  f"v{current} replaces; rescore to rank")
    elif column.task in SEEDED_TASKS and (seeds or 0) < MIN_SEEDS:
        reason = f"{seeds or 0} seed{'s' if seeds != 1 else ''} (the suite asks for {MIN_SEEDS})"
    elif column.task not in SEEDED_TASKS and samples is not None and samples < MIN_SAMPLES:
        reason = f"N = {samples} (the suite asks for {MIN_SAMPLES})"
    elif (short := _covariance_short_of_dimensions(column, samples)) is not None:
        reason = short
    elif resolvable is None:
        reason = "no confidence intervals to say what difference it resolves"
    else:
        floor = metric_spec(column.metric).floor
        ceiling = [c.value for row, c in present if row.kind == "real"]
        if floor is not None and ceiling and abs(ceiling[0] - floor) < POWER_SPAN * resolvable:
            reason = (f"the real-data row ({format_number(ceiling[0])}) is within {POWER_SPAN:g} resolvable "
                      f"differences ({format_number(resolvable)}) of what predicting nothing scores ({floor:g})")
    return Power(resolvable, seeds, samples, reason)


def load_leaderboard(folder: Path | str) -> Leaderboard:
    """`build_leaderboard(load_results(folder))`."""
    return build_leaderboard(load_results(folder))


def format_number(value: float | None, digits: int = 3) -> str:
    """A number as the page, the CSV view and the tables print it: `digits` significant digits, no exponent for
    ordinary magnitudes."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if -4 <= magnitude < 6:
        decimals = max(digits - 1 - magnitude, 0)
        return f"{value:.{decimals}f}"
    return f"{value:.{digits - 1}e}"
