"""FD (effnet-lite0, bootstrap CI) and seconds per image of a trained generator versus sampler and step count.

HTD samples with 200 DDIM steps; the question is whether DPM-Solver++ reaches the same FD (within its CI) in 25
steps or fewer. Each configuration generates the same n samples (same conditions, same per-sample seeds) with
`histosynth generate`'s job code, then scores them against the real dataset.

Run (the long version, minutes per configuration on 2 CPU cores):
    .venv/bin/python perf/bench_samplers.py --checkpoint CKPT --conditions COND_DIR --real REAL_DIR --n 256
Smoke check (seconds; writes nothing):
    .venv/bin/python perf/bench_samplers.py --checkpoint CKPT --conditions COND_DIR --real REAL_DIR --n 8 \\
        --configs ddim:4,dpm++:2 --bootstrap 10 --no-write
Results are written to perf/RESULTS.md (section "Sampler steps vs FD"), replacing an earlier run's section.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from histosynth.atomic import write_text_atomic
from histosynth.benchmark.tasks.distribution import score_distribution
from histosynth.disk import count_samples, read_metadata
from histosynth.generators.jobs import generate_dataset

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Sampler steps vs FD"
DEFAULT_CONFIGS = "ddim:200,dpm++:10,dpm++:20,dpm++:25"


def parse_configs(text: str) -> list[tuple[str, int]]:
    """"ddim:200,dpm++:20" -> [("ddim", 200), ("dpm++", 20)]."""
    configs = []
    for item in text.split(","):
        sampler, _, steps = item.strip().rpartition(":")
        configs.append((sampler, int(steps)))
    return configs


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--conditions", required=True, type=Path)
    parser.add_argument("--real", required=True, type=Path, help="real dataset folder to compare against")
    parser.add_argument("--n", type=int, default=256, help="samples per configuration")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"sampler:steps list (default {DEFAULT_CONFIGS})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates for the FD CI")
    parser.add_argument("--work", type=Path, help="folder for the generated sets (default: a temporary folder)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-samplers-"))
    load_before = load_average()
    rows = []
    # warm-up (imports, first-call allocations) so the first configuration's time is not inflated
    generate_dataset(args.checkpoint, args.conditions, 1, work / "warm-up", steps=1, progress=False)
    for sampler, steps in parse_configs(args.configs):
        out = work / f"{sampler}-{steps}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        generate_dataset(args.checkpoint, args.conditions, args.n, out, seed=args.seed, steps=steps, sampler=sampler,
                         guidance=args.guidance, chunk_size=max(1, args.n), progress=False)
        seconds = time.perf_counter() - start
        run = score_distribution(args.real, out, encoders=("effnet-lite0",), metrics=("fd",), bootstrap=args.bootstrap,
                                 seed=args.seed, progress=False)
        fd = next(r for r in run.results if r.metric == "fd")
        rows.append((sampler, steps, fd.value, fd.ci_low, fd.ci_high, seconds / args.n))
        print(f"{sampler:>8} {steps:>4} steps: FD {fd.value:.2f} [{fd.ci_low:.2f}, {fd.ci_high:.2f}], "
              f"{seconds / args.n:.3f} s/img (generation incl. model load and shard writing)", flush=True)

    generator = read_metadata(work / f"{rows[0][0]}-{rows[0][1]}")["histosynth"]["generator"]
    lines = [
        SECTION, "",
        f"Command: `.venv/bin/python perf/bench_samplers.py --checkpoint {args.checkpoint.name} --conditions "
        f"{args.conditions.name} --real {args.real.name} --n {args.n} --configs {args.configs}`", "",
        f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}",
        f"- Generator: {generator['name']} {generator['version']}, weights {generator['checkpoint_hash']}",
        f"- Real set: {args.real.name} ({count_samples(args.real)} patches); generated: {args.n} per configuration, "
        f"the same conditions and per-sample seeds for every configuration",
        f"- CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; "
        f"torch {torch.__version__}",
        f"- Machine load: {load_before} before, {load_average()} after (shared machine)", "",
        "Seconds per image: the whole `generate_dataset` call (model load, sampling, PNG/parquet writing) / n.", "",
        "| sampler | steps | FD (effnet-lite0) | 95% bootstrap CI | s / image |",
        "|---|---:|---:|---|---:|",
    ]
    for sampler, steps, value, low, high, per_image in rows:
        ci = f"[{low:.2f}, {high:.2f}]" if low is not None else "-"
        lines.append(f"| {sampler} | {steps} | {value:.2f} | {ci} | {per_image:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        current = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else "# Performance results\n"
        pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        current = pattern.sub("", current).rstrip() + "\n\n"
        write_text_atomic(RESULTS, current + text)
        print(f"written to {RESULTS}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
