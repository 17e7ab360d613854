"""The scores of perf/dual_lora_compare.py: completion (PSNR, SSIM, masked LPIPS) and synthesis (FD, KID) of one
generated set each, saved as results files and reused, and the paired differences between two completers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from histosynth.benchmark.results import BenchmarkRun


def score_completion_set(heldout: Path, completed: Path, out: Path, backbone: Path | None, net: str, bootstrap: int,
                         seed: int) -> BenchmarkRun:
    """`bench complete`'s scores (PSNR/SSIM in the mask, and masked LPIPS when a backbone is given), saved as JSON.

    Without a backbone the scorer still has to run one LPIPS mode (it needs at least one); it runs on a random
    network and those rows are dropped, never reported."""
    from histosynth.benchmark.lpips_masked import MODES
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.benchmark.tasks.completion import score_completion

    if out.is_file():
        return BenchmarkRun.load(out)
    modes = MODES if backbone else MODES[:1]
    run = score_completion(heldout, completed, modes, net=net, backbone=backbone, pnet_rand=backbone is None,
                           bootstrap=bootstrap, seed=seed)
    if backbone is None:
        run.results = [r for r in run.results if not r.metric.startswith("lpips")]
        run.encoders = {}
        run.settings["modes"] = []
        run.settings["lpips"] = "not run: no --lpips-backbone weights"
    run.save(out)
    return run


def score_synthesis_set(heldout: Path, fake: Path, out: Path, bootstrap: int, seed: int, cache: Path) -> BenchmarkRun:
    """FD and KID with CIs under effnet-lite0 against the held-out patches, as `histosynth demo` scores them."""
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.recipes.demo import score_with_kid_ci

    if out.is_file():
        return BenchmarkRun.load(out)
    run = score_with_kid_ci(heldout, fake, bootstrap, seed, cache)
    run.save(out)
    return run


def result(run: BenchmarkRun, metric: str) -> dict[str, Any] | None:
    """The value, CI, N and standard deviation of `metric` in `run` (None when it has none)."""
    r = next((r for r in run.results if r.metric == metric), None)
    if r is None:
        return None
    return {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n_fake, "std": r.extra.get("std")}


def paired_difference(runs: dict[str, BenchmarkRun], metric: str, a: str, b: str, bootstrap: int, seed: int) -> dict[str, Any] | None:
    """Mean of a - b over the paired rows of `metric` with its percentile bootstrap 95 % CI."""
    from histosynth.benchmark.tasks.completion import mean_interval

    values = []
    for name in (a, b):
        r = next((r for r in runs[name].results if r.metric == metric), None)
        if r is None:
            return None
        values.append(np.asarray(r.extra["per_sample"], np.float64))
    mean, low, high = mean_interval(values[0] - values[1], bootstrap, seed)
    return {"value": mean, "ci_low": low, "ci_high": high, "n": len(values[0]),
            "relative": mean / float(values[1].mean()) if values[1].mean() else None}
