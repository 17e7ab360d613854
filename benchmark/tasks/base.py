"""The type every benchmark task is: its metadata, its CLI options and run, and what it does in the suite."""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.tasks.meta import META_BY_NAME, TaskMeta

if TYPE_CHECKING:
    from histosynth.benchmark.suite import Outputs, References, Variant

SPLIT = "train"  # the split the suite reads of every dataset folder
# a completion-only generator: its completed patches are mostly the real test pixels, so scoring them as a synthesized
# set would rank pass-through first
COMPLETION_ONLY = "the generator does not synthesize (completion only)"


@dataclass
class SuiteContext:
    """What a task sees when the suite runs it: the outputs scored, the real references, the variant's settings,
    the reference cache (real-data rows computed once), a log, and data refs scanned once per folder."""

    outputs: "Outputs"
    refs: "References"
    variant: "Variant"
    cache: Path
    log: Callable[[str], None] = print
    models: tuple[str, ...] | None = None  # downstream models the suite runs (None: every applicable one)
    _refs: dict[Path, DataRef] = field(default_factory=dict)

    def data_ref(self, folder: Path) -> DataRef:
        """A DataRef of `folder` (its split SPLIT), scanned once."""
        from histosynth.benchmark.features import scan_rows

        folder = Path(folder)
        if folder not in self._refs:
            rows = scan_rows(folder, SPLIT)
            self._refs[folder] = DataRef(folder.name, str(folder.resolve()), rows.content_hash, rows.total)
        return self._refs[folder]


class BenchmarkTask(ABC):
    """A benchmark task: `meta` names it (histosynth.benchmark.tasks.meta); `add_arguments` and `run` are its
    `histosynth bench <name>` command; `applies_to` and `suite_runs` are its part of the suite."""

    name: ClassVar[str]

    @property
    def meta(self) -> TaskMeta:
        return META_BY_NAME[self.name]

    @abstractmethod
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The options of `histosynth bench <name>` (typed with histosynth.options)."""

    @abstractmethod
    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        """Run from parsed options; refuse bad ones (InputError) before any work."""

    def report(self, run: BenchmarkRun, args: argparse.Namespace) -> None:
        """Save the run to --out and print it (a table and a bar chart of `chart_metric` beside --out)."""
        from histosynth.benchmark.tasks.arguments import report

        report(run, args.out, self.chart_metric(run))

    def chart_metric(self, run: BenchmarkRun) -> str:
        """The metric the bar chart shows."""
        return run.results[0].metric

    def applies_to(self, outputs: "Outputs") -> str | None:
        """None when the suite runs this task on `outputs`, else why it does not."""
        return "not a suite task"

    def suite_runs(self, ctx: SuiteContext) -> list[tuple[str, BenchmarkRun]]:
        """The suite's runs of this task: (results file stem, run) pairs, a not-run one where a part cannot run."""
        raise NotImplementedError(f"{self.name} is not a suite task")


def not_run(task: str, metrics: tuple[str, ...], reason: str, data: dict[str, DataRef], encoder: str | None = None,
            settings: dict[str, Any] | None = None) -> BenchmarkRun:
    """A results file saying a task was not run and why (null values with the reason), so coverage is explicit.
    `data` holds the refs the task would have used, its reference data included, so that its leaderboard column
    sits with the measured columns of the same data."""
    results = [MetricResult(m, None, encoder=encoder, extra={"undefined": reason, "not_run": True}) for m in metrics]
    return BenchmarkRun(task=task, results=results, data=data, settings={"not_run": reason, **(settings or {})})
