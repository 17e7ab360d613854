"""Score a submission in isolation and add its results to a leaderboard folder, or report why not.

For a generator submission, every step that runs submitted code runs in the sandbox (leaderboard/sandbox.py):
1. describe: `python -m histosynth.generators.plugins NAME` prints its metadata (the scorer never imports it);
2. generate: `histosynth generate NAME --checkpoint ... --conditions ... --n N` into the sandbox's own folder from
   the synthesis conditions (never the test set), and `--task complete` on the held-out test patches too when the
   generator completes;
Then, in this process, the folder is validated row by row as Samples (histosynth.hub.validate_folder), the row
count and every row's generator are checked, and only then the suite runs on it. A dataset submission skips the
sandbox steps. Results land in `<results>/<subject>/` in one atomic move, so a failed or malicious submission
leaves the leaderboard exactly as it was; the report says which step failed and why.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from histosynth.atomic import atomic_directory, write_text_atomic
from histosynth.errors import UserFacingError
from histosynth.leaderboard.sandbox import SandboxLimits, SandboxResult, run_sandboxed
from histosynth.leaderboard.submission import Submission
from histosynth.leaderboard.suite import Outputs, References, Variant, outputs_of, run_suite

REPORT = "report.json"


@dataclass
class Step:
    """One step of scoring a submission: its name, whether it passed, and the detail."""

    name: str
    ok: bool
    detail: str
    seconds: float = 0.0
    sandbox: dict[str, Any] | None = None


@dataclass
class ScoreReport:
    """What happened to a submission; `results` lists the files added to the leaderboard (empty if it failed)."""

    submission: str
    variant: str
    steps: list[Step] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    subject: str | None = None

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)

    def failed(self) -> Step | None:
        """The first failed step, if any."""
        return next((s for s in self.steps if not s.ok), None)

    def summary(self) -> str:
        """Human-readable lines, one per step."""
        lines = [f"{'PASS' if s.ok else 'FAIL'} {s.name}: {s.detail}" for s in self.steps]
        return "\n".join(lines + ([f"added {len(self.results)} results files under {self.subject}/"] if self.ok else []))


class ScoringFailed(UserFacingError, RuntimeError):
    """A step failed; the report has been filled in."""


def _sandboxed(report: ScoreReport, name: str, command: list[str], work: Path, limits: SandboxLimits,
               plugin: Path | None) -> SandboxResult:
    env = {"PYTHONPATH": str(plugin)} if plugin else {}
    result = run_sandboxed(command, work, limits, extra_env=env)
    report.steps.append(Step(name, result.ok, result.describe(), round(result.seconds, 1), result.isolation))
    if not result.ok:
        raise ScoringFailed(f"{name}: {result.describe()}")
    return result


def _check_rows(report: ScoreReport, folder: Path, n: int | None, generator: str | None) -> Outputs:
    from histosynth.benchmark.features import scan_rows
    from histosynth.benchmark.results import DataRef
    from histosynth.benchmark.subjects import subject_of
    from histosynth.hub import validate_folder

    start = time.perf_counter()
    try:
        if folder.is_symlink() or not folder.is_dir() or any(p.is_symlink() for p in folder.rglob("*")):
            raise ScoringFailed(f"{folder.name}: missing, or holds symbolic links (refused: they could point "
                                "outside the submission's folder)")
        checked = validate_folder(folder, progress=False)
        rows = checked.split_sizes.get("train", 0)
        if n is not None and rows != n:
            raise ScoringFailed(f"{folder.name}: {rows} rows, {n} were asked for")
        scan = scan_rows(folder, "train")
        subject = subject_of(folder, "train", DataRef(folder.name, str(folder), scan.content_hash, scan.total))
        if generator is not None and (subject.kind != "generator" or subject.name != generator):
            raise ScoringFailed(f"{folder.name}: rows name generator {subject.name!r} ({subject.kind}), not the "
                                f"submitted {generator!r}")
    except UserFacingError as err:
        report.steps.append(Step("validate rows", False, str(err), round(time.perf_counter() - start, 1)))
        raise ScoringFailed(f"validate rows: {err}") from err
    report.steps.append(Step("validate rows", True, f"{rows} valid Samples in {folder.name}",
                             round(time.perf_counter() - start, 1)))
    report.subject = f"{subject.name}-{(subject.checkpoint_hash or subject.content_hash).split(':')[-1][:12]}"
    return outputs_of(folder)


def score_submission(submission: Submission, refs: References, chosen: Variant, results: Path, work: Path,
                     limits: SandboxLimits | None = None, log: Callable[[str], None] = print) -> ScoreReport:
    """Score `submission` with suite variant `chosen` against `refs`; on success its results files are added
    under `results/<subject>/` (an existing subject folder is never overwritten). The report is also written to
    `work/report.json`."""
    report = ScoreReport(submission.label, chosen.name)
    limits = limits or SandboxLimits()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if submission.kind == "generator":
            outputs = _generate(report, submission, refs, chosen, work / "sandbox", limits, log)
        else:
            outputs = _check_rows(report, submission.dataset, None, None)
        target = results / str(report.subject)
        if target.exists():
            raise ScoringFailed(f"{target} already holds results for this subject; published results are never "
                                "overwritten (remove it by hand to rescore)")
        start = time.perf_counter()
        with atomic_directory(target) as partial:
            written = run_suite(outputs, refs, chosen, partial, log)
        report.steps.append(Step("suite", True, f"{len(written)} results files", round(time.perf_counter() - start, 1)))
        report.results = sorted(str(Path(report.subject) / p.name) for p in written)
    except ScoringFailed as err:
        if not report.failed():
            report.steps.append(Step("leaderboard", False, str(err)))
    write_text_atomic(work / REPORT, json.dumps(asdict(report), indent=1, default=str) + "\n")
    return report


def _generate(report: ScoreReport, submission: Submission, refs: References, chosen: Variant, sandbox: Path,
              limits: SandboxLimits, log: Callable[[str], None]) -> Outputs:
    if sandbox.exists():
        shutil.rmtree(sandbox)  # a previous attempt's leftovers are never trusted
    sandbox.mkdir(parents=True)
    python, name = sys.executable, str(submission.generator)
    log(f"describe {name} (sandboxed)")
    described = _sandboxed(report, "describe", [python, "-m", "histosynth.generators.plugins", name], sandbox, limits,
                           submission.plugin)
    try:
        meta = json.loads(described.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as err:
        report.steps[-1] = Step("describe", False, f"no metadata JSON on stdout ({err})")
        raise ScoringFailed("describe: no metadata") from err
    def generate(conditions: Path) -> list[str]:
        return [python, "-m", "histosynth.cli", "generate", name, "--checkpoint", str(submission.checkpoint),
                "--conditions", str(conditions), "--n", str(chosen.n), "--seed", str(chosen.seed), "--device", "cpu"]

    tasks = meta.get("tasks", [])
    outputs = Outputs(None)
    if "synthesis" in tasks:
        log(f"generate {chosen.n} samples (sandboxed)")
        _sandboxed(report, "generate", [*generate(refs.conditions), "--out", "synthesized"], sandbox, limits,
                   submission.plugin)
        outputs = _check_rows(report, sandbox / "synthesized", chosen.n, name)
    if "completion" in tasks:
        log("complete held-out masks (sandboxed)")
        _sandboxed(report, "complete", [*generate(refs.test), "--task", "complete", "--out", "completed"], sandbox,
                   limits, submission.plugin)
        _check_rows(report, sandbox / "completed", chosen.n, name)
        outputs = Outputs(outputs.synthesized, sandbox / "completed", outputs.tissue, outputs.nuclei)
    if outputs.synthesized is None and outputs.completed is None:
        report.steps.append(Step("describe", False, f"{name} declares neither synthesis nor completion (tasks: {tasks})"))
        raise ScoringFailed("describe: no task the suite scores")
    return outputs
