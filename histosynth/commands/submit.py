"""`histosynth submit`: check a leaderboard submission on mock data, or score it against real references."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.leaderboard.suite import References


def mock_references(root: Path) -> References:
    """Simulator references for `--check`: a training set (also the conditions), a held-out set (another virtual
    slide) as test, 32 px with tissue maps and nuclei, like the tiny presets expect."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.leaderboard.suite import References
    from histosynth.sources import build_source

    for name, seed, n in (("train", 1, 32), ("test", 2, 16)):
        write_dataset(build_source("simulator", n=n, size=32, seed=seed, mpp=4.0), root / name,
                      CardInfo(f"mock {name}", "simulator patches for histosynth submit --check"))
    return References(train=root / "train", test=root / "test", conditions=root / "train")


def run(args: argparse.Namespace) -> int:
    from histosynth.leaderboard.sandbox import SandboxLimits
    from histosynth.leaderboard.scoring import score_submission
    from histosynth.leaderboard.submission import load_submission
    from histosynth.leaderboard.suite import References, variant

    submission = load_submission(args.submission)
    limits = SandboxLimits(wall_seconds=args.timeout, memory_bytes=int(args.memory_gb * (1 << 30)))
    if args.check:
        if args.results or args.train or args.test:
            raise InputError("--check scores on mock data and adds nothing: drop --results/--train/--test")
        with tempfile.TemporaryDirectory(prefix="histosynth-submit-check-") as tmp:
            refs = mock_references(Path(tmp) / "refs")
            report = score_submission(submission, refs, variant("tiny"), Path(tmp) / "results", Path(tmp) / "work",
                                      limits)
        print(report.summary())
        print("check passed: the submission can be scored" if report.ok else "check FAILED: fix the step above")
        return 0 if report.ok else 1
    missing = [flag for flag, value in (("--train", args.train), ("--test", args.test), ("--results", args.results))
               if value is None]
    if missing:
        raise InputError(f"scoring needs {', '.join(missing)} (or use --check for a mock run)")
    refs = References(train=args.train, test=args.test, conditions=args.conditions or args.train)
    work = args.work or Path(tempfile.mkdtemp(prefix="histosynth-submit-"))
    report = score_submission(submission, refs, variant(args.variant), args.results, work, limits)
    print(report.summary())
    print(f"report: {work / 'report.json'}")
    return 0 if report.ok else 1


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "submit", help="check or score a leaderboard submission (a generator or a dataset)",
        description="Score a submission (submission.yaml: kind generator|dataset; see leaderboard/submission.py) "
                    "with the histosynth-bench suite. Submitted code runs only in a sandboxed child process (own "
                    "folder, no secrets, no network, time and memory limits); its output is validated row by row "
                    "before any score. --check runs the tiny suite on mock simulator data and adds nothing; "
                    "otherwise the results land in --results/<subject>/ (never overwritten).")
    parser.add_argument("submission", type=Path, help="the submission.yaml")
    parser.add_argument("--check", action="store_true", help="mock run: tiny suite on simulator data, report what fails")
    parser.add_argument("--train", type=Path, help="real training set folder (memorisation, segmenter, TSTR real row)")
    parser.add_argument("--test", type=Path, help="real held-out set folder (split by slide or region from --train)")
    parser.add_argument("--conditions", type=Path, help="synthesis conditions: the training set (default) or another held-out set, never --test (a set "
                        "made from the test maps leaks them into TSTR); completion always fills --test's held-out masks")
    parser.add_argument("--results", type=Path, help="leaderboard results folder to add to")
    parser.add_argument("--variant", default="tiny", choices=("tiny", "demo", "full"),
                        help="suite variant: tiny (CI), demo (CPU, the committed leaderboard), full (GPU); default tiny")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="wall-clock limit per sandboxed step, seconds")
    parser.add_argument("--memory-gb", type=float, default=16.0, help="address-space limit of submitted code, GiB")
    parser.set_defaults(handler=run)
