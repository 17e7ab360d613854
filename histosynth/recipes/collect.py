"""The `collect` recipe step: one results folder per subject, made of the last scored snapshot of each learning
curve and of reference results folders, so a leaderboard is built from models trained as far as their curves went
instead of retraining them at another budget.

`out/<generator>/` holds the results files of the curve's last point (the snapshot at its full budget, scored by
the same suite, data and thread count as the rest of the run); `out/<name>/` holds a copy of each `references`
folder (named by its folder: real-heldout, copy-nearest). `out/collected.md` says where each came from.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.recipes.curve import load_curve
from histosynth.recipes.spec import Step, StepContext


def _last_point_results(curve_folder: Path) -> tuple[str, int, float | None, Path]:
    """(generator, step, cumulative training minutes, results folder) of a finished curve's last snapshot."""
    curve = load_curve(curve_folder)
    if not curve.get("points"):
        raise InputError(f"{curve_folder}: the curve has no scored snapshot")
    last = max(curve["points"], key=lambda p: int(p["step"]))
    step = int(last["step"])
    results = curve_folder / "points" / f"step-{step:08d}" / "results"
    if not results.is_dir() or not any(results.glob("*.json")):
        raise InputError(f"{results}: no results files for the curve's last snapshot (step {step})")
    seconds = last.get("train_seconds") or (curve.get("train") or {}).get("seconds")
    return str(curve["generator"]), step, None if seconds is None else float(seconds) / 60, results


def run_collect(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Copy each curve's last scored snapshot and each reference folder into out/<subject>/ (atomically, as one
    folder); refuses two subjects of one name and a reference folder without results files."""
    from histosynth.atomic import atomic_directory

    sources: dict[str, tuple[Path, str]] = {}
    for folder in step.fields["curves"]:
        generator, at, minutes, results = _last_point_results(ctx.run / folder)
        if generator in sources:
            raise InputError(f"step {step.name!r} (collect): two curves of {generator!r}")
        trained = f", {minutes:.0f} min of training" if minutes is not None else ""
        sources[generator] = (results, f"the last snapshot of {folder}: step {at}{trained}")
    for folder in step.fields.get("references") or []:
        path = ctx.run / folder
        if not any(path.glob("*.json")):
            raise InputError(f"{path}: no results files to collect")
        if Path(folder).name in sources:
            raise InputError(f"step {step.name!r} (collect): two subjects named {Path(folder).name!r}")
        sources[Path(folder).name] = (path, f"the reference results {folder}")
    lines = ["# Where each subject's results come from", "", "| subject | results |", "|---|---|"]
    with atomic_directory(ctx.run / step.fields["out"]) as staging:
        for name, (source, text) in sorted(sources.items()):
            (staging / name).mkdir()
            for path in sorted(source.glob("*.json")):
                shutil.copy2(path, staging / name / path.name)
            lines.append(f"| {name} | {text} |")
        (staging / "collected.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"subjects": len(sources), "files": sum(len(list(s.glob("*.json"))) for s, _ in sources.values())}

