"""FD when N < d: the low-rank form against covariance routes (ours, torch-fidelity, scipy sqrtm) on real features.

Features: Inception (torch-fidelity's inception-v3-compat architecture, Kaiming-random weights as the real file
needs a download; d = 2048) of N simulator patches, all kept. Two comparisons, each at several N < d:
1. Known answer: set 2 = a * set 1 + c, for which FD = |(a - 1) mu1 + c|^2 + (1 - a)^2 tr S1 exactly, on the
   real features' spectrum. Relative error of each method.
2. Two different sets (real vs fake patches): the values of each method and their distance from the low-rank one.

Run: .venv/bin/python perf/bench_fd_rank.py --real /tmp/perf1000/real-1000 --fake /tmp/perf1000/fake-1000
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch


def inception_features(folder: Path, work: Path) -> np.ndarray:
    """All Inception features of a dataset folder (float64), saved in `work` for reruns."""
    from histosynth.atomic import atomic_file
    from histosynth.benchmark.encoders import load_encoder
    from histosynth.benchmark.features import extract_features

    saved = work / f"inception-features-{folder.name}.npy"
    if saved.is_file():
        return np.load(saved)
    weights = work / "inception-random.pth"
    if not weights.is_file():
        with atomic_file(weights) as partial:  # a rerun trusts any file it finds
            torch.save(load_encoder("inception", pretrained=False, seed=1).backbone.state_dict(), partial)
    encoder = load_encoder("inception", weights=weights)
    run = extract_features(folder, [encoder], use_cache=False, progress=True, keep=10**7)
    features = np.asarray(run.encoders["inception"].features, np.float64)
    with atomic_file(saved) as partial:
        np.save(partial, features)
    return features


def methods(x1: np.ndarray, x2: np.ndarray) -> dict[str, tuple[float, float]]:
    """{method: (FD, seconds)} for the same two feature sets."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    from histosynth.benchmark.frechet import fd_from_stats
    from histosynth.benchmark.stats import StreamingStats

    s1, s2 = StreamingStats.from_features(x1), StreamingStats.from_features(x2)
    out = {}

    def timed(name, fn):
        start = time.perf_counter()
        value = float(fn())
        out[name] = (value, time.perf_counter() - start)

    timed("histosynth, low-rank form on the features (used when N < d)", lambda: fd_from_stats(s1, s2, x1, x2))
    timed("histosynth, covariance route (eigvalsh, the min(N) - 1 largest count)", lambda: fd_from_stats(s1, s2))
    timed("torch-fidelity fid_statistics_to_metric (eigvals of S1 S2)", lambda: fid_statistics_to_metric(
        {"mu": s1.mean, "sigma": s1.cov}, {"mu": s2.mean, "sigma": s2.cov}, False)["frechet_inception_distance"])

    def sqrtm_fd():
        diff = s1.mean - s2.mean
        return diff @ diff + np.trace(s1.cov) + np.trace(s2.cov) - 2 * np.trace(scipy.linalg.sqrtm(s1.cov @ s2.cov).real)

    timed("scipy sqrtm (pytorch-fid, clean-fid)", sqrtm_fd)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--fake", type=Path, required=True)
    parser.add_argument("--n", default="250,1000", help="sample counts (each < 2048)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "histosynth-perf-fd-rank",
                        help="folder for the Inception weights and the features (reused by reruns)")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore")  # every N here is < d: the small-sample warning is the point
    real, fake = inception_features(args.real, args.work), inception_features(args.fake, args.work)
    lines = ["", "## FD when N < d: low-rank form versus covariance routes", "",
             f"Command: `.venv/bin/python perf/bench_fd_rank.py --real {args.real} --fake {args.fake} --n {args.n}`", "",
             f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; CPU: {platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}, scipy {scipy.__version__}",
             "- Features: Inception (inception-v3-compat architecture, Kaiming-random weights), d = 2048, of simulator patches.",
             "- Known answer: set 2 = 1.001 * set 1 + 0.01, so FD = |(a - 1) mu1 + c|^2 + (1 - a)^2 tr S1 exactly.", ""]
    for n in (int(v) for v in args.n.split(",")):
        x1 = real[:n]
        x2 = 1.001 * x1 + 0.01
        mu = x1.mean(0)
        shift = 0.001 * mu + 0.01
        exact = float(shift @ shift + 0.001**2 * np.trace(np.cov(x1, rowvar=False)))
        known = methods(x1, x2)
        pair = methods(x1, fake[:n])
        reference = pair["histosynth, low-rank form on the features (used when N < d)"][0]
        lines += [f"N = {n} per set, d = 2048:", "",
                  "| method | known-answer FD | relative error | real vs fake FD | relative to low-rank | seconds (real vs fake) |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {name} | {value:.9g} | {abs(value - exact) / exact:.1e} | {pair[name][0]:.9g} | "
                  f"{abs(pair[name][0] - reference) / reference:.1e} | {pair[name][1]:.2f} |" for name, (value, _) in known.items()]
        lines += ["", f"Exact known-answer FD: {exact:.9g}.", ""]
        print("\n".join(lines[-len(known) - 6:]), flush=True)
    with open(args.results, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
