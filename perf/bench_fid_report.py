"""Images to FID, and the full default report, against torch-fidelity's FID: interleaved rounds, fresh processes.

Each measurement runs in a fresh process, in rounds A, B, C, A, B, C, ... so background load hits every pipeline
alike; the table gives the median and the spread (min-max) of each. Pipelines:
A. torch-fidelity at its defaults (`calculate_metrics(fid=True)`: batch 64, DataLoader workers on), FID only;
B. histosynth `score_distribution(..., metrics=["fd"], bootstrap=0)`: images to FID;
C. histosynth's full default report (`bench fd`: FD + 100-replicate bootstrap CI + KID + PRDC), no feature cache.
All use one Inception weights file (torch-fidelity's inception-v3-compat architecture, Kaiming-random: the real
file needs a download), so the features agree to float32 rounding. Images: N real H&E patches of the shipped
CMU-1-Small-Region (256 px, overlapping tiles) against N simulator patches.
Memory: peak RSS of the measuring process minus its RSS once everything is imported (torch-fidelity's decoding
workers are separate processes: their largest peak is given on its own).

Run: .venv/bin/python perf/bench_fid_report.py --n 250 --rounds 2 [--rss-n 250,2000 --rss-pipelines ABC]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PERF = Path(__file__).resolve().parent
PIPELINES = {
    "A": "torch-fidelity 0.4 defaults, FID only",
    "B": "histosynth, images to FID (`--metrics fd --bootstrap 0`)",
    "C": "histosynth, full default report (FD + CI + KID + PRDC)",
}


def build_data(root: Path, n: int) -> tuple[Path, Path]:
    """N real patches (CMU-1-Small-Region, 256 px tiles every 40 px) and N simulator patches, written once."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    real, fake = root / f"real-{n}", root / f"fake-{n}"
    if not real.exists():
        write_dataset(build_source("embedded", size=256, stride=40, n=n), real, CardInfo("real", "perf"))
    if not fake.exists():
        write_dataset(build_source("simulator", n=n, size=256, seed=2), fake, CardInfo("fake", "perf"))
    return real, fake


def weights_file(root: Path) -> Path:
    """One Kaiming-random torch-fidelity InceptionV3 state dict, used by every pipeline."""
    path = root / "inception-random.pth"
    if not path.exists():
        import torch

        from histosynth.atomic import atomic_file
        from histosynth.benchmark.encoders import load_encoder

        with atomic_file(path) as partial:  # a rerun trusts any file it finds
            torch.save(load_encoder("inception", pretrained=False, seed=1).backbone.state_dict(), partial)
    return path


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(kind: str, real: Path, fake: Path, weights: Path) -> dict:
    """One measurement in this (fresh) process."""
    import warnings

    warnings.simplefilter("ignore")
    import torch  # noqa: F401
    import torch_fidelity

    sys.path.insert(0, str(PERF))
    from bench_features import UInt8Folder  # noqa: E402

    from histosynth.benchmark.tasks.distribution import score_distribution

    after_import = _rss_mb()
    start = time.perf_counter()
    if kind == "A":
        out = torch_fidelity.calculate_metrics(input1=UInt8Folder(real), input2=UInt8Folder(fake), fid=True, cuda=False,
                                               verbose=False, feature_extractor_weights_path=str(weights))
        fd = out["frechet_inception_distance"]
    else:
        metrics = ["fd"] if kind == "B" else ["fd", "kid", "prdc"]
        run = score_distribution(real, fake, ["inception"], metrics, bootstrap=0 if kind == "B" else 100,
                                 weights={"inception": str(weights)}, use_cache=False, progress=False)
        fd = next(r.value for r in run.results if r.metric == "fd")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "fd": fd, "after_import_mb": after_import,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "children_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(kind: str, real: Path, fake: Path, weights: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--real", str(real), "--fake", str(fake), "--weights", str(weights)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=250, help="patches per side for the speed table")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rss-n", default="", help="comma-separated N per side for the memory runs")
    parser.add_argument("--rss-pipelines", default="ABC", help="which pipelines the memory runs measure (default ABC)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "histosynth-perf-report")
    parser.add_argument("--child", choices=sorted(PIPELINES), help=argparse.SUPPRESS)
    parser.add_argument("--real", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--fake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.real, args.fake, args.weights)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    weights = weights_file(args.work)
    load_before = os.getloadavg()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, {os.cpu_count()} cores, load {load_before}", flush=True)
    if args.rounds:
        real, fake = build_data(args.work, args.n)
        runs: dict[str, list[dict]] = {k: [] for k in PIPELINES}
        for round_ in range(args.rounds):
            for kind in PIPELINES:
                runs[kind].append(measure(kind, real, fake, weights))
                r = runs[kind][-1]
                print(f"round {round_ + 1} {kind}: {r['seconds']:.1f} s, {2 * args.n / r['seconds']:.2f} img/s, FD {r['fd']:.8g}, "
                      f"peak-import {r['peak_mb'] - r['after_import_mb']:.0f} MB, load {os.getloadavg()[0]:.1f}", flush=True)
        base = statistics.median(r["seconds"] for r in runs["A"])
        print(f"\nN = {args.n} per side, {args.rounds} interleaved rounds; load {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
        print("| run | wall s median (min-max) | img/s median | vs torch-fidelity | FD | rel. diff vs torch-fidelity | peak RSS - after import, MB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        tf_fd = runs["A"][0]["fd"]
        for kind, label in PIPELINES.items():
            secs = [r["seconds"] for r in runs[kind]]
            med = statistics.median(secs)
            mem = statistics.median(r["peak_mb"] - r["after_import_mb"] for r in runs[kind])
            print(f"| {label} | {med:.1f} ({min(secs):.1f}-{max(secs):.1f}) | {2 * args.n / med:.2f} | {base / med:.2f}x "
                  f"| {runs[kind][0]['fd']:.8g} | {abs(runs[kind][0]['fd'] - tf_fd) / abs(tf_fd):.1e} | {mem:.0f} |")
    for n in [int(v) for v in args.rss_n.split(",") if v]:
        real, fake = build_data(args.work, n)
        for kind in args.rss_pipelines:
            label = PIPELINES[kind]
            r = measure(kind, real, fake, weights)
            print(f"RSS N={n}: {label}: peak {r['peak_mb']:.0f} MB, after import {r['after_import_mb']:.0f} MB, peak - import "
                  f"{r['peak_mb'] - r['after_import_mb']:.0f} MB, largest worker {r['children_peak_mb']:.0f} MB, "
                  f"{r['seconds']:.1f} s, load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
