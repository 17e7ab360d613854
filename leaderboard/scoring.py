"""Score a submission in the sandbox and add its results to a leaderboard folder, or report why not.

The steps, each a line of the report:
1. identify (host): the submitted folders are walked with lstat only (regular files, within caps) and hashed; the
   subject is the submission's name plus that hash (histosynth.leaderboard.identity), never what rows claim. A
   subject already on the board is refused before anything runs.
2. plugin (sandbox): a wheel is unpacked, a source tree with pyproject.toml built offline
   (histosynth.leaderboard.plugin_package); an installed folder is used as it is.
3. describe, generate, complete (sandbox, the plugin importable): the generator's metadata, then its samples from the
   synthesis conditions (never the test set) and its completions of the held-out test masks.
4. output files (host): the output folders walked with lstat only: no FIFO, link or device, within caps.
5. validate rows (sandbox, no plugin): shard footers against row and decompressed-size caps, every row as a
   Sample, the row count, and what the rows claim; a claim of another generator, or of a checkpoint already on the
   board, is refused.
6. suite (sandbox, no plugin): the histosynth-bench suite; results files come out.
7. add (host): each results file read within caps, its subject set to the scorer's identity, all of them moved
   into `<results>/<name>-<hash12>/` at once; with `check=True` nothing is added.
Every step that runs or parses submitted bytes is sandboxed (histosynth.leaderboard.sandbox); the host only walks
folders and reads the suite's small JSON files. The work folder's step folders are removed afterwards, success or
failure; report.json stays.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from histosynth.atomic import atomic_directory, write_text_atomic
from histosynth.benchmark.suite import SCORED_ROLES, References, Variant
from histosynth.errors import UserFacingError
from histosynth.leaderboard.identity import Identity, identify
from histosynth.leaderboard.plugin_package import prepare_plugin
from histosynth.leaderboard.sandbox import (
    SANDBOX_WORK,
    SandboxLimits,
    SandboxResult,
    run_sandboxed,
    sandbox_input,
)
from histosynth.leaderboard.submission import Submission
from histosynth.leaderboard.untrusted import TreeCaps, check_tree

REPORT = "report.json"
STEP_FOLDERS = ("submission", "validate", "suite")
RESULTS_CAPS = TreeCaps(files=64, bytes=16 << 20, file_bytes=4 << 20)
OUTPUT_CAPS = TreeCaps(files=10_000, bytes=32 << 30, file_bytes=8 << 30)
MAX_DATASET_ROWS = 1_000_000


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
    """What happened to a submission; `results` lists the files added to the leaderboard (empty if it failed or was
    a check)."""

    submission: str
    variant: str
    check: bool = False
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
        """Human-readable lines, one per step, then what happened to the leaderboard."""
        lines = [f"{'PASS' if s.ok else 'FAIL'} {s.name}: {s.detail}" for s in self.steps]
        if self.ok and self.check:
            lines.append(f"check: nothing added (it would be {self.subject}/)")
        elif self.ok:
            lines.append(f"added {len(self.results)} results files under {self.subject}/")
        return "\n".join(lines)


class ScoringFailed(UserFacingError, RuntimeError):
    """A step failed; the report has been filled in."""


@dataclass(frozen=True)
class ScoringLimits:
    """Limits of the submission's own steps, and of the scorer's sandboxed reading and suite."""

    submission: SandboxLimits = SandboxLimits()
    scorer: SandboxLimits = SandboxLimits(wall_seconds=4 * 3600.0)


class _Run:
    """The state of one scoring: its report, work folder, limits and the sandbox's environment additions."""

    def __init__(self, report: ScoreReport, work: Path, limits: ScoringLimits, log: Callable[[str], None],
                 env: dict[str, str] | None = None, reference_cache: Path | None = None) -> None:
        self.report, self.work, self.limits, self.log = report, work, limits, log
        self.env, self.reference_cache = env or {}, reference_cache

    def host_step(self, name: str, action: Callable[[], Any], detail: Callable[[Any], str]) -> Any:
        start = time.perf_counter()
        try:
            value = action()
        except UserFacingError as err:
            self.report.steps.append(Step(name, False, str(err), round(time.perf_counter() - start, 1)))
            raise ScoringFailed(f"{name}: {err}") from err
        self.report.steps.append(Step(name, True, detail(value), round(time.perf_counter() - start, 1)))
        return value

    def sandboxed(self, name: str, folder: str, command: list[str], inputs: dict[str, Path], scorer: bool,
                  answer: bool = False) -> tuple[SandboxResult, Any]:
        self.log(f"{name} (sandboxed)")
        limits = self.limits.scorer if scorer else self.limits.submission
        result = run_sandboxed(command, self.work / folder, limits, inputs=inputs, extra_env=self.env)
        reply = None
        if result.ok and answer:
            try:
                reply = json.loads(_read_small(self.work / folder / "answer.json"))
            except (OSError, ValueError) as err:
                result = replace(result, returncode=1, stderr=f"no answer from the step ({err})")
        self.report.steps.append(Step(name, result.ok, result.describe(), round(result.seconds, 1), result.isolation))
        if not result.ok:
            raise ScoringFailed(f"{name}: {result.describe()}")
        return result, reply


def _read_small(path: Path, limit: int = 1 << 20) -> str:
    """A small regular file's text: refuses a link, FIFO or device (checked with lstat, before opening) and anything
    over `limit` bytes."""
    import os
    import stat

    mode = os.lstat(path)
    if not stat.S_ISREG(mode.st_mode) or mode.st_size > limit:
        raise OSError(f"{path.name}: not a regular file of at most {limit} bytes")
    with open(path, "rb") as handle:
        return handle.read(limit + 1).decode("utf-8")


def _python(*module_args: str) -> list[str]:
    """`python -I -B -m ...`: isolated mode (no PYTHON* variables, no user site, no cwd on the path), no bytecode."""
    return [sys.executable, "-I", "-B", "-m", *module_args]


def score_submission(submission: Submission, refs: References, chosen: Variant, results: Path, work: Path,
                     limits: SandboxLimits | ScoringLimits | None = None, log: Callable[[str], None] = print,
                     check: bool = False, keep_work: bool = False, tasks: Sequence[str] | None = None,
                     threads: int | None = None, reference_cache: Path | None = None) -> ScoreReport:
    """Score `submission` with suite variant `chosen` against `refs` (see the module docstring). On success its
    results files land in `results/<subject>/` (never over an existing subject), unless `check`. The report is
    also written to `work/report.json`; the step folders are removed unless `keep_work` (for debugging a
    submission: they hold what it wrote). `tasks` narrows the suite (all of it by default). `threads` pins the
    sandbox's thread count and `reference_cache` (a track's: histosynth.leaderboard.tracks) is copied into the suite's
    cache, so the real-data rows are read back, never recomputed (and never differ from the reference rows')."""
    if isinstance(limits, SandboxLimits):
        limits = ScoringLimits(submission=limits, scorer=replace(limits, wall_seconds=max(limits.wall_seconds, 3600.0)))
    env = {key: str(threads) for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} if threads else {}
    run = _Run(ScoreReport(submission.label, chosen.name, check), Path(work), limits or ScoringLimits(), log, env,
               reference_cache)
    run.work.mkdir(parents=True, exist_ok=True)
    _clean(run.work)
    try:
        _score(run, submission, refs, chosen, Path(results), tasks)
    except ScoringFailed as err:
        if not run.report.failed():
            run.report.steps.append(Step("leaderboard", False, str(err)))
    finally:
        if not keep_work:
            _clean(run.work)
    write_text_atomic(run.work / REPORT, json.dumps(asdict(run.report), indent=1, default=str) + "\n")
    return run.report


def _clean(work: Path) -> None:
    for name in STEP_FOLDERS:
        shutil.rmtree(work / name, ignore_errors=True)


def _score(run: _Run, submission: Submission, refs: References, chosen: Variant, results: Path,
           tasks: Sequence[str]) -> None:
    from histosynth.leaderboard.board import board_subjects

    identity = run.host_step("identify", lambda: _identify(submission),
                             lambda i: f"{i.kind} {i.name}, sha256 {i.sha256[:12]} over the submitted files")
    run.report.subject = identity.folder
    board = board_subjects(results) if results.is_dir() else None
    if board is not None:
        run.host_step("new subject", lambda: board.refuse_known(identity), lambda _: "not on the board yet")
    if submission.kind == "generator":
        folders = _generate(run, submission, refs, chosen)
    else:
        folders = {"synthesized": submission.dataset}
    run.host_step("output files", lambda: [check_tree(f, OUTPUT_CAPS, what=f"{r} set") for r, f in folders.items()],
                  lambda trees: ", ".join(f"{r}: {len(t.files)} files" for r, t in zip(folders, trees, strict=True)))
    inputs = {role: path for role, path in folders.items()}
    inside = {role: str(sandbox_input(role)) for role in folders}
    spec = {"folders": inside, "n": chosen.n if submission.kind == "generator" else None,
            "generator": submission.generator, "max_rows": MAX_DATASET_ROWS,
            "answer": str(SANDBOX_WORK / "answer.json")}
    _, answer = run.sandboxed("validate rows", "validate", _step_command(run, "validate", spec), inputs, True, True)
    if submission.kind == "generator" and board is not None:
        run.host_step("claims", lambda: board.refuse_claims(identity, answer["claims"]),
                      lambda _: "the rows claim no other subject's checkpoint")
    run.host_step("patch size", lambda: _patch_sizes(answer, refs, folders), _size_detail)
    ref_inputs = {f"{role}/{Path(path).name}": Path(path) for role, path in asdict(refs).items()}
    suite_spec = {"folders": inside, "tissue": bool(answer["tissue"]), "nuclei": bool(answer["nuclei"]),
                  "refs": {role: str(sandbox_input(key)) for key, role in ((k, k.split("/")[0]) for k in ref_inputs)},
                  "variant": asdict(chosen), "tasks": None if tasks is None else list(tasks),
                  "out": str(SANDBOX_WORK / "scored"),
                  "answer": str(SANDBOX_WORK / "answer.json")}
    if run.reference_cache is not None and Path(run.reference_cache).is_dir():  # the track's real-data rows
        shutil.copytree(run.reference_cache, run.work / "suite" / "home" / "cache" / "references", dirs_exist_ok=True)
    run.sandboxed("suite", "suite", _step_command(run, "suite", suite_spec), {**inputs, **ref_inputs}, True, True)
    added = run.host_step("results files", lambda: _collect(run.work / "suite" / "scored", identity, answer,
                                                            submission),
                          lambda runs: f"{len(runs)} results files")
    if run.report.check:
        return
    target = results / identity.folder
    if target.exists():
        raise ScoringFailed(f"{target} already holds results; published results are never overwritten")
    with atomic_directory(target) as partial:
        for name, scored in added.items():
            scored.save(partial / name)
    run.report.results = sorted(f"{identity.folder}/{name}" for name in added)


def _patch_sizes(answer: dict[str, Any], refs: References, folders: dict[str, Path]) -> tuple[Any, list[int]]:
    """(the outputs' first patch size as the sandbox read it, the references' own), the references being the
    conditions the samples were drawn from (the test set for a completion-only generator)."""
    from histosynth.leaderboard.score_step import first_patch_size

    reference = Path(refs.conditions) if "synthesized" in folders else Path(refs.test)
    return answer.get("size"), first_patch_size(reference)


def _size_detail(sizes: tuple[Any, list[int]]) -> str:
    """Same size, or a warning: a task whose settings follow the patch size (the TSTR crop) gives the row columns of
    its own. Not a failure: distribution columns are still shared, and a check's mock references are 32 px."""
    found, reference = sizes
    ref = "x".join(map(str, reference))
    if not (isinstance(found, list) and len(found) == 2 and all(isinstance(n, int) for n in found)):
        return f"the outputs' size is unknown; the references are {ref} px"
    if found == reference:
        return f"{ref} px, the references' size"
    return (f"warning: the outputs are {'x'.join(map(str, found))} px, the references {ref} px; tasks whose settings "
            "follow the patch size (the TSTR crop) will put this row in columns of its own (docs/submitting.md#tracks)")


def _identify(submission: Submission) -> Identity:
    if submission.kind == "generator":
        folders = [submission.checkpoint] + ([submission.plugin] if submission.plugin else [])
        return identify("generator", str(submission.generator), [Path(f) for f in folders])
    return identify("dataset", submission.name, [Path(submission.dataset)])


def _step_command(run: _Run, verb: str, spec: dict[str, Any]) -> list[str]:
    folder = run.work / verb
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    return _python("histosynth.leaderboard.score_step", verb, str(SANDBOX_WORK / "spec.json"))


def _generate(run: _Run, submission: Submission, refs: References, chosen: Variant) -> dict[str, Path]:
    plugin = "-" if submission.plugin is None else str(sandbox_input("plugin"))
    package = None if submission.plugin is None else run.host_step(
        "plugin", lambda: prepare_plugin(Path(submission.plugin), run.work / "submission", run.limits.submission),
        lambda prepared: prepared.detail)
    inputs = {"model": Path(submission.checkpoint)} | ({"plugin": package.folder} if package else {})
    name = str(submission.generator)
    describe, _ = run.sandboxed("describe", "submission",
                                _python("histosynth.leaderboard.plugin_step", plugin, "histosynth.generators.plugins",
                                        name), inputs, False)
    try:
        tasks = json.loads(describe.stdout.strip().splitlines()[-1]).get("tasks", [])
    except (ValueError, IndexError, AttributeError) as err:
        run.report.steps[-1] = Step("describe", False, f"no metadata JSON on stdout ({err})")
        raise ScoringFailed("describe: no metadata") from err

    def generate(conditions: str, out: str, *extra: str) -> list[str]:
        return _python("histosynth.leaderboard.plugin_step", plugin, "histosynth.cli", "generate", name,
                       "--checkpoint", str(sandbox_input("model")), "--conditions", conditions, "--n", str(chosen.n),
                       "--seed", str(chosen.seed), "--device", "cpu", "--out", str(SANDBOX_WORK / out), *extra)

    folders: dict[str, Path] = {}
    if "synthesis" in tasks:
        conditions = {"conditions": Path(refs.conditions)}
        run.sandboxed("generate", "submission", generate(str(sandbox_input("conditions")), "synthesized"),
                      inputs | conditions, False)
        folders["synthesized"] = run.work / "submission" / "synthesized"
    if "completion" in tasks:
        run.sandboxed("complete", "submission",
                      generate(str(sandbox_input("test")), "completed", "--task", "complete"),
                      inputs | {"test": Path(refs.test)}, False)
        folders["completed"] = run.work / "submission" / "completed"
    if not folders:
        run.report.steps.append(Step("describe", False, f"{name} declares neither synthesis nor completion (tasks: {tasks})"))
        raise ScoringFailed("describe: no task the suite scores")
    return folders


def _collect(folder: Path, identity: Identity, answer: dict[str, Any], submission: Submission) -> dict[str, Any]:
    """The suite's results files, each read within caps and its scored subjects set to the scorer's identity."""
    from histosynth.benchmark.results import BenchmarkRun, ResultsFormatError, Subject

    tree = check_tree(folder, RESULTS_CAPS, what="results")
    runs: dict[str, BenchmarkRun] = {}
    for name in tree.files:
        if "/" in name or not name.endswith(".json"):
            raise ScoringFailed(f"{name}: not a results file name")
        try:
            scored = BenchmarkRun.load(folder / name)
        except (ResultsFormatError, ValueError, OSError) as err:
            raise ScoringFailed(f"{name}: {err}") from err
        # the real-data rows (label consistency's ceiling, TSTR's real row) belong to the reference results: a
        # submission's file never restates them, so it can never disagree with them
        scored.results = [r for r in scored.results if (r.subject or "fake") in SCORED_ROLES]
        if not scored.results:
            continue
        claims = answer["claims"]
        version = next(iter(claims.values())).get("version")
        for role, subject in list(scored.subjects.items()):
            if role not in SCORED_ROLES:
                if subject.kind != "real":
                    raise ScoringFailed(f"{name}: role {role!r} holds a {subject.kind}; only the scored roles "
                                        f"{SCORED_ROLES} may")
                continue
            content = scored.data[role].content_hash if role in scored.data else subject.content_hash
            if identity.kind == "generator":
                scored.subjects[role] = Subject("generator", identity.name, content, version=version,
                                                checkpoint_hash=identity.checkpoint_hash)
            else:
                scored.subjects[role] = Subject("dataset", identity.name, content)
        scored.settings["submission"] = {"name": identity.name, "kind": identity.kind, "sha256": identity.sha256,
                                         "claims": claims, "title": submission.title, "citation": submission.citation}
        runs[name] = scored
    if not runs:
        raise ScoringFailed("the suite wrote no results files of the submission's own numbers")
    return runs
