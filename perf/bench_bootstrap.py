"""The FD bootstrap CI below d: replicates from the pooled Gram matrix versus resampled feature matrices.

Same seed, so the same resamples: the intervals must agree to rounding. Rounds are interleaved (gram, lowrank,
gram, lowrank, ...); median and min-max seconds are printed with the load average.

Run: .venv/bin/python perf/bench_bootstrap.py [--n 500] [--dim 2048] [--boot 100] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np

from histosynth.benchmark.frechet import fd_bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--boot", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    scales = rng.uniform(0.1, 2.0, args.dim)
    x1 = (rng.standard_normal((args.n, args.dim)) * scales + 5.0).astype(np.float32)
    x2 = (rng.standard_normal((args.n, args.dim)) * scales + 5.01).astype(np.float32)
    times: dict[str, list[float]] = {"gram": [], "lowrank": []}
    cis = {}
    load = os.getloadavg()[0]
    for _ in range(args.rounds):
        for method in times:
            start = time.perf_counter()
            cis[method] = fd_bootstrap(x1, x2, n_boot=args.boot, seed=0, method=method)
            times[method].append(time.perf_counter() - start)
    print(f"N = {args.n} per side, d = {args.dim}, {args.boot} replicates, {args.rounds} interleaved rounds, "
          f"load {load:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| replicates from | seconds median (min-max) | CI | MC error of the bounds |")
    print("|---|---:|---|---|")
    for method, secs in times.items():
        ci = cis[method]
        print(f"| {method} | {statistics.median(secs):.2f} ({min(secs):.2f}-{max(secs):.2f}) | [{ci.low:.6f}, {ci.high:.6f}] "
              f"| ±{ci.mc_error[0]:.3f}, ±{ci.mc_error[1]:.3f} |")
    rel = max(abs(cis["gram"].low - cis["lowrank"].low) / cis["lowrank"].low,
              abs(cis["gram"].high - cis["lowrank"].high) / cis["lowrank"].high)
    print(f"largest relative difference of the bounds: {rel:.1e}")


if __name__ == "__main__":
    main()
