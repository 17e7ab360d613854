"""How long scoring a submission takes: one generator submission scored on a built track (`histosynth submit
--track`, the committed leaderboard's settings) into a copy of a results folder, and optionally a `submit --check`
of another submission file, each timed end to end through the CLI, with the scorer's own per-step seconds.

    .venv/bin/python perf/time_submission.py --track sim-v1 --track-dir runs/tracks/sim-v1-demo \
        --generator htd --checkpoint MODEL_FOLDER --results results/simulator --check-submission tiny.yaml \
        --out perf/submission_timing.json

The checkpoint is a model folder trained on the track's training set at the track's patch size (a learning-curve
snapshot does). Run it on a quiet machine: the target is "a demo submission scored in under 10 minutes, `--check`
in under 2".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _histosynth() -> list[str]:
    return [sys.executable, "-m", "histosynth.cli"]


def _run(command: list[str], cwd: Path) -> tuple[float, str]:
    """Wall seconds and output of one CLI call (raises with the output if it fails)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def time_scoring(args: argparse.Namespace, tmp: Path) -> dict:
    """Score the generator submission on the track into a copy of --results; wall time and the report's steps."""
    results = tmp / "results"
    shutil.copytree(args.results, results)
    (tmp / "submission.yaml").write_text(f"kind: generator\ngenerator: {args.generator}\n"
                                         f"checkpoint: {args.checkpoint.resolve()}\ntitle: timing run\n")
    work = tmp / "work"
    seconds, out = _run([*_histosynth(), "submit", "submission.yaml", "--track", args.track, "--track-dir",
                         str(args.track_dir.resolve()), "--results", str(results), "--work", str(work)], tmp)
    report = json.loads((work / "report.json").read_text())
    steps = [{"name": s["name"], "seconds": s["seconds"], "detail": s["detail"][:160]} for s in report["steps"]]
    built, _ = _run([*_histosynth(), "leaderboard", "build", "--results", str(results), "--out", str(tmp / "site")], tmp)
    return {"wall_seconds": round(seconds, 1), "steps": steps, "summary": out.strip().splitlines()[-3:],
            "leaderboard_build_seconds": round(built, 1)}


def time_check(submission: Path, tmp: Path) -> dict:
    """`histosynth submit FILE --check`, timed."""
    seconds, out = _run([*_histosynth(), "submit", str(submission.resolve()), "--check"], tmp)
    return {"wall_seconds": round(seconds, 1), "summary": out.strip().splitlines()[-2:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--track", default="sim-v1")
    parser.add_argument("--track-dir", type=Path, required=True, help="the built track (histosynth bench track build)")
    parser.add_argument("--generator", required=True, help="a registered generator name")
    parser.add_argument("--checkpoint", type=Path, required=True, help="its model folder")
    parser.add_argument("--results", type=Path, required=True, help="results folder copied and added to")
    parser.add_argument("--check-submission", type=Path, help="also time `submit --check` of this submission file")
    parser.add_argument("--out", type=Path, required=True, help="JSON record")
    args = parser.parse_args()
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": os.getloadavg(), "track": args.track,
              "generator": args.generator, "checkpoint": str(args.checkpoint)}
    with tempfile.TemporaryDirectory(prefix="time-submission-") as tmp:
        for name in ("score", "check"):
            (Path(tmp) / name).mkdir()
        record["scoring"] = time_scoring(args, Path(tmp) / "score")
        if args.check_submission:
            record["check"] = time_check(args.check_submission, Path(tmp) / "check")
    record["load_after"] = os.getloadavg()
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
