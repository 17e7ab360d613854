"""FD from statistics at d=2048, side by side in one process: scipy sqrtm (pytorch-fid / clean-fid), torch-fidelity's
eigvals formula, and histosynth's symmetric Cholesky + eigvalsh form (cold, and with a cached reference factor).

Run: .venv/bin/python perf/bench_fd.py [--dim 2048] [--samples 5000] [--repeats 3] [--no-write]
Rounds are interleaved (one call of each method per round) so background load hits all methods alike; the table
reports the best and the median time per method (the best is the least disturbed by other jobs). BLAS threading
is left at the environment's default.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import scipy
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric

from histosynth.atomic import write_text_atomic
from histosynth.benchmark.frechet import ReferenceSqrt, frechet_distance

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def sqrtm_fd(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid's `calculate_frechet_distance` (clean-fid and dgm-eval are the same), minus the `disp` keyword
    that SciPy deprecated in 1.16 and removed in 1.18."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def torch_fidelity_fd(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """torch_fidelity.metric_fid.fid_statistics_to_metric: Σ sqrt(eigvals(Σ1 Σ2)).real."""
    out = fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2}, verbose=False)
    return float(out["frechet_inception_distance"])


def random_stats(rng: np.random.Generator, dim: int, samples: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of `samples` draws from a Gaussian with eigenvalues in [0.5, 2] (well-conditioned)."""
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    root = (q * np.sqrt(rng.uniform(0.5, 2.0, dim))) @ q.T
    x = rng.standard_normal((samples, dim)) @ root + shift * rng.standard_normal(dim)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def machine_info() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    try:
        match = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = match.group(1).strip() if match else cpu
    except OSError:
        pass
    blas = "unknown"
    try:
        import threadpoolctl

        infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        blas = ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)" for i in infos)
    except ImportError:
        pass
    return {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "blas": blas,
        "versions": f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}, "
        f"torch {torch.__version__}",
        "load": "load average %.2f %.2f %.2f" % os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help=f"do not update {RESULTS.name}")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    print(f"building statistics: 2 x {args.samples} samples, d={args.dim} ...", flush=True)
    mu1, sigma1 = random_stats(rng, args.dim, args.samples, 0.0)
    mu2, sigma2 = random_stats(rng, args.dim, args.samples, 0.1)
    info_before = machine_info()

    t0 = time.perf_counter()
    reference = ReferenceSqrt(mu1, sigma1)
    factor_seconds = time.perf_counter() - t0
    methods: dict[str, Callable[[], float]] = {
        "scipy.linalg.sqrtm (pytorch-fid, clean-fid)": lambda: sqrtm_fd(mu1, sigma1, mu2, sigma2),
        "torch-fidelity eigvals": lambda: torch_fidelity_fd(mu1, sigma1, mu2, sigma2),
        "histosynth frechet_distance": lambda: frechet_distance(mu1, sigma1, mu2, sigma2),
        "histosynth ReferenceSqrt.distance (factor cached)": lambda: reference.distance(mu2, sigma2),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    values: dict[str, float] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for round_ in range(args.repeats):
            for name, fn in methods.items():
                start = time.perf_counter()
                values[name] = fn()
                times[name].append(time.perf_counter() - start)
                print(f"  round {round_ + 1}: {name}: {times[name][-1]:.3f} s", flush=True)
    info = machine_info()
    info["load"] = f"{info_before['load']} before, {info['load']} after"

    best_base = min(times[next(iter(methods))])
    median_base = statistics.median(times[next(iter(methods))])
    ours = values["histosynth frechet_distance"]
    lines = [
        "| method | best s | median s | speedup vs sqrtm (best) | speedup vs sqrtm (median) | FD value "
        "| rel. diff vs ours |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in methods:
        best, median = min(times[name]), statistics.median(times[name])
        rel = abs(values[name] - ours) / abs(ours)
        lines.append(
            f"| {name} | {best:.3f} | {median:.3f} | {best_base / best:.1f}x | {median_base / median:.1f}x "
            f"| {values[name]:.10g} | {rel:.1e} |"
        )
    table = "\n".join(lines)
    print()
    print(table)

    section = "\n".join(
        [
            f"## FD from statistics (d={args.dim})",
            "",
            f"Command: `.venv/bin/python perf/bench_fd.py --dim {args.dim} --samples {args.samples} "
            f"--repeats {args.repeats}` (one process, rounds interleaved, default BLAS threading).",
            f"Inputs: two covariances, each from {args.samples} samples of a {args.dim}-d Gaussian with eigenvalues "
            "in [0.5, 2] (sample covariance condition number ~1e2), means 0 and a random 0.1-scale offset.",
            "",
            f"- Date: {info['date']}",
            f"- CPU: {info['cpu']}",
            f"- BLAS: {info['blas']}",
            f"- Versions: {info['versions']}",
            f"- Machine load during the run: {info['load']} (shared machine: other jobs were running)",
            "",
            table,
            "",
            f"ReferenceSqrt's one-off factorization (Cholesky of the reference covariance) took "
            f"{factor_seconds:.3f} s and is excluded from its row. histosynth's form: Cholesky factor L of Σ1, "
            "LᵀΣ2L with two triangular products (BLAS trmm), one symmetric eigenvalue solve, eigenvalues clamped "
            "at 0; see benchmark/frechet.py.",
            "",
        ]
    )
    if not args.no_write:
        write_section(RESULTS, f"## FD from statistics (d={args.dim})", section)
        print(f"\nwrote {RESULTS}")


def write_section(path: Path, heading: str, section: str) -> None:
    """Replace the section starting at `heading` (up to the next '## ' heading) or append it; keep other sections."""
    text = path.read_text(encoding="utf-8") if path.exists() else "# Performance results\n\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text.rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
