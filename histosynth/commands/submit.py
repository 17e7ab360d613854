"""`histosynth submit`: check a leaderboard submission on mock data, or score it against real references."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from histosynth import options as opt
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.suite import References


def mock_references(root: Path) -> References:
    """Simulator references for `--check`: a training set (also the conditions), a held-out set (another virtual
    slide) as test, 32 px with tissue maps and nuclei, like the tiny presets expect."""
    from histosynth.benchmark.suite import References
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    for name, seed, n in (("train", 1, 32), ("test", 2, 16)):
        write_dataset(build_source("simulator", n=n, size=32, seed=seed, mpp=4.0), root / name,
                      CardInfo(f"mock {name}", "simulator patches for histosynth submit --check"))
    return References(train=root / "train", test=root / "test", conditions=root / "train")


def run(args: argparse.Namespace) -> int:
    from histosynth.benchmark.suite import variant
    from histosynth.leaderboard.sandbox import limits_from_options, require_sandbox
    from histosynth.leaderboard.scoring import ScoringLimits, score_submission
    from histosynth.leaderboard.submission import load_submission

    submission = load_submission(args.submission)
    limits = ScoringLimits(submission=limits_from_options(args.timeout, args.memory_gb),
                           scorer=limits_from_options(args.scoring_timeout, args.memory_gb))
    require_sandbox()
    if args.work is not None and args.work.exists() and not args.work.is_dir():
        raise InputError(f"--work {args.work}: exists and is not a folder")
    if args.check:
        if args.results or args.train or args.test or args.track:
            raise InputError("--check scores on mock data and adds nothing: drop --results/--train/--test/--track")
        with tempfile.TemporaryDirectory(prefix="histosynth-submit-") as tmp:
            refs = mock_references(Path(tmp) / "refs")
            report = score_submission(submission, refs, variant("tiny"), Path(tmp) / "results", Path(tmp) / "work",
                                      limits, check=True)
        print(report.summary())
        print("check passed: the submission ran and was scored in the sandbox (advisory: the real run is what is "
              "judged)" if report.ok else "check FAILED: fix the step above")
        return 0 if report.ok else 1
    refs, chosen, threads, cache = _references(args)
    work = args.work or Path(tempfile.mkdtemp(prefix="histosynth-submit-"))
    report = score_submission(submission, refs, chosen, args.results, work, limits, keep_work=args.keep_work,
                              threads=threads, reference_cache=cache)
    print(report.summary())
    print(f"report: {work / 'report.json'}")
    return 0 if report.ok else 1


def _references(args: argparse.Namespace):
    """(References, suite variant, thread count, reference cache) from --track or from --train/--test/--variant."""
    from histosynth.benchmark.suite import References, variant
    from histosynth.leaderboard.tracks import get_track, open_track

    if args.results is None:
        raise InputError("scoring needs --results (the leaderboard folder to add to), or use --check for a mock run")
    if args.track:
        given = [flag for flag, value in (("--train", args.train), ("--test", args.test),
                                          ("--conditions", args.conditions), ("--variant", args.variant)) if value]
        if given:
            raise InputError(f"--track {args.track} fixes the data and the suite variant: drop {', '.join(given)}")
        built = open_track(get_track(args.track, args.track_scale), args.track_dir)
        refs = References(train=built.train, test=built.test, conditions=built.conditions)
        return refs, variant(built.track.variant), built.track.threads, built.reference_cache
    missing = [flag for flag, value in (("--train", args.train), ("--test", args.test)) if value is None]
    if missing:
        raise InputError(f"scoring needs --track NAME (histosynth bench track ls), or {', '.join(missing)}")
    refs = References(train=args.train.resolve(), test=args.test.resolve(),
                      conditions=(args.conditions or args.train).resolve())
    return refs, variant(args.variant or "tiny"), None, None


def _seconds(text: str) -> float:
    from histosynth.leaderboard.sandbox.limits import MAX_WALL_SECONDS

    return opt.number(1.0, MAX_WALL_SECONDS)(text)


def _gib(text: str) -> float:
    from histosynth.leaderboard.sandbox.limits import MIN_MEMORY_BYTES, GiB

    low, high = MIN_MEMORY_BYTES / GiB, opt.memory_bytes() / GiB
    try:
        return opt.number(low, high)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a number of GiB in [{low:g}, {high:.1f}] (at most this machine's "
                                         f"memory), got {text[:40]!r}") from None


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "submit", help="check or score a leaderboard submission (a generator or a dataset)",
        description="Score a submission (submission.yaml: kind generator|dataset; the guide, with an example and "
                    "how to package a plugin: docs/submitting.md) "
                    "with the histosynth-bench suite. Submitted code runs only under bubblewrap (no capabilities, "
                    "seccomp, fresh namespaces, read-only binds of what it needs, one writable folder, whole-sandbox "
                    "time, memory and process limits; docs/sandbox.md); its output is read within caps and validated "
                    "row by row, in the sandbox too, before any score. The subject is the submission's name plus the "
                    "scorer's hash of the submitted files, never what the rows claim. --check runs the same path on "
                    "mock simulator data with the tiny suite and adds nothing (advisory: the real run is what is "
                    "judged); otherwise the results land in --results/<name>-<hash>/ (never overwritten).")
    parser.add_argument("submission", type=Path, help="the submission.yaml")
    parser.add_argument("--check", action="store_true", help="mock run: tiny suite on simulator data, report what fails")
    parser.add_argument("--track", help="score on a named benchmark track (histosynth bench track ls; the way to get "
                        "numbers that share columns with the committed leaderboard): fixes the data, the suite "
                        "variant and the threads, and reuses its real-data rows")
    parser.add_argument("--track-dir", type=opt.existing_folder,
                        help="the built track's folder, if not the default (histosynth bench track build --out)")
    parser.add_argument("--track-scale", choices=("tiny", "demo", "full"), help=argparse.SUPPRESS)
    parser.add_argument("--train", type=opt.existing_folder, help="real training set folder (memorization, segmenter, TSTR real row)")
    parser.add_argument("--test", type=opt.existing_folder, help="real held-out set folder (split by slide or region from --train)")
    parser.add_argument("--conditions", type=opt.existing_folder, help="synthesis conditions: the training set (default) or another held-out set, never --test (a set "
                        "made from the test maps leaks them into TSTR); completion always fills --test's held-out masks")
    parser.add_argument("--results", type=opt.output_folder, help="leaderboard results folder to add to")
    parser.add_argument("--variant", choices=("tiny", "demo", "full"),
                        help="without --track: suite variant tiny (CI; the default), demo (CPU, the committed "
                             "leaderboard) or full (GPU)")
    parser.add_argument("--work", type=opt.output_folder, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--keep-work", action="store_true",
                        help="keep what the submission wrote in --work (removed by default, success or failure)")
    parser.add_argument("--timeout", type=_seconds, default=3600.0,
                        help="wall-clock limit of each step that runs submitted code, seconds (default 3600)")
    parser.add_argument("--scoring-timeout", type=_seconds, default=4 * 3600.0,
                        help="wall-clock limit of the scorer's own sandboxed steps (validation, suite), seconds")
    parser.add_argument("--memory-gb", type=_gib, default=16.0,
                        help="memory limit of each sandbox, all its processes together, GiB (default 16; at least 1)")
    parser.set_defaults(handler=run)
