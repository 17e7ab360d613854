"""Downstream training speed: steps/s and images/s of DeepLabv3+ and HoVer-Net at the tiny and demo presets (one
process, 1 and 2 torch threads), against the encoder forward rate at the same crop as the limit.

Training is the cost of `bench seg`/`bench tstr`. A training step runs the whole model forward
and backward (about 3x a forward pass) over the batch, so its images/s cannot beat the pretrained encoder's forward
images/s; the `train / encoder` column says how close it comes. Rates are timed through the real training loop
(task.train_model, its `stop` hook stamping each step), on simulator patches, after warm-up steps; no checkpoints.

Run (a few minutes on 2 CPU cores):
    .venv/bin/python perf/bench_downstream.py
Smoke check (writes nothing):
    .venv/bin/python perf/bench_downstream.py --presets tiny --threads 1 --steps 3 --no-write
Results go to perf/RESULTS.md (section "Downstream training speed"), replacing an earlier run's section.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from histosynth.benchmark.downstream.data import load_set, to_input
from histosynth.benchmark.downstream.kinds import kind_of
from histosynth.benchmark.downstream.training import train_model
from histosynth.classes import get_schema
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.sources import build_source

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SECTION = "## Downstream training speed (`perf/bench_downstream.py`)"
MODELS = ("deeplabv3plus", "hovernet")


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def step_seconds(model: str, preset: str, data, warm: int, steps: int) -> tuple[list[float], int, int]:
    """(seconds of each of `steps` training steps timed after `warm` untimed ones, batch, crop)."""
    kind = kind_of(model)
    config = kind.config(preset, steps=warm + steps + 1)  # stop() is called after every step but the last
    stamps: list[float] = []

    def stamp(step: int, loss: float) -> bool:
        stamps.append(time.perf_counter())
        return False  # never stop

    train_model(kind, data, get_schema(data.schema).num_classes, preset, config, seed=0, stop=stamp,
                desc=f"{model} {preset}")
    timed = stamps[warm - 1 :]  # end of the last warm-up step .. end of the last timed step
    return np.diff(timed).tolist(), config.batch_size, config.crop


def encoder_seconds(model: str, preset: str, num_classes: int, batch: int, crop: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` forward passes of the model's pretrained encoder alone (no gradients) over a
    batch at the training crop."""
    kind = kind_of(model)
    encoder = kind.encoder(kind.build(preset, num_classes, None, pretrained=False)).eval()
    x = to_input(torch.randint(0, 256, (batch, crop, crop, 3), dtype=torch.uint8).numpy())
    with torch.inference_mode():
        encoder(x)  # warm-up
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            encoder(x)
            seconds.append(time.perf_counter() - start)
        return seconds


def batch_seconds(model: str, preset: str, data, repeats: int) -> list[float]:
    """Seconds of each of `repeats` batch preparations (crops, augmentation, HoVer-Net targets) of the preset."""
    kind = kind_of(model)
    config, rng, seconds = kind.config(preset), np.random.default_rng(0), []
    for _ in range(repeats):
        start = time.perf_counter()
        kind.batch(rng, data, config)
        seconds.append(time.perf_counter() - start)
    return seconds


def model_seconds(model: str, preset: str, data, repeats: int) -> list[float]:
    """Seconds of each of `repeats` forward + loss + backward passes of the whole model over one prepared batch
    (no optimizer step), after one warm-up pass."""
    kind = kind_of(model)
    config = kind.config(preset)
    net = kind.build(preset, get_schema(data.schema).num_classes, None, pretrained=False).train()
    x, targets = kind.batch(np.random.default_rng(0), data, config)
    x = to_input(x)
    seconds = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        net.zero_grad(set_to_none=True)
        kind.loss(net, x, targets, "cpu").backward()
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,demo")
    parser.add_argument("--threads", default="1,2", help="torch thread counts to time")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per row (after --warm)")
    parser.add_argument("--warm", type=int, default=2, help="untimed warm-up steps")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds over all rows (contention spreads)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    presets = args.presets.split(",")
    threads = [int(t) for t in args.threads.split(",")]

    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-downstream-") as work:
        size = 128  # the demo crop; tiny crops 64 px from the same patches
        write_dataset(build_source("simulator", n=16, size=size, seed=0), Path(work) / "sim", CardInfo("sim", "perf"))
        sets = {m: load_set(Path(work) / "sim", "train", kind_of(m).label) for m in MODELS}
        timings: dict[tuple, tuple[list[float], list[float], list[float], list[float], int, int]] = {}
        for _ in range(args.rounds):
            for n_threads in threads:
                torch.set_num_threads(n_threads)
                for preset in presets:
                    for model in MODELS:
                        steps, batch, crop = step_seconds(model, preset, sets[model], args.warm, args.steps)
                        classes = get_schema(sets[model].schema).num_classes
                        forward = encoder_seconds(model, preset, classes, batch, crop, repeats=args.steps)
                        prepare = batch_seconds(model, preset, sets[model], repeats=args.steps)
                        passes = model_seconds(model, preset, sets[model], repeats=max(2, args.steps // 2))
                        before = timings.get((model, preset, n_threads), ([], [], [], [], batch, crop))
                        timings[(model, preset, n_threads)] = (before[0] + steps, before[1] + forward,
                                                               before[2] + prepare, before[3] + passes, batch, crop)
                        print(f"{model:>13} {preset:>5} {n_threads} thr: {1 / statistics.median(steps):.2f} steps/s; "
                              f"encoder forward {batch / statistics.median(forward):.1f} img/s", flush=True)
        rows = []
        for (model, preset, n_threads), (steps, forward, prepare, passes, batch, crop) in timings.items():
            rate = 1 / statistics.median(steps)
            rows.append((model, preset, n_threads, batch, crop, rate, rate * batch, batch / statistics.median(forward),
                         1000 * statistics.median(prepare), batch / statistics.median(passes)))

    lines = [
        SECTION, "",
        f"Command: `.venv/bin/python perf/bench_downstream.py --presets {args.presets} --threads {args.threads} "
        f"--steps {args.steps} --warm {args.warm} --rounds {args.rounds}`", "",
        f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}; one process; "
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}",
        f"- Machine load: {load_before} before, {load_average()} after (shared machine: other jobs ran meanwhile)",
        f"- Data: 16 simulator patches of {size} px; the preset's batch and crop; AdamW through task.train_model, "
        f"{args.steps} steps timed after {args.warm} warm-up steps, no checkpoints; {args.rounds} rounds over all "
        "rows, "
        "interleaved; rates from the median step (and median encoder pass) over the rounds, robust to bursts of load",
        "- Encoder forward: the model's Lite0 encoder alone, eval mode, no gradients, same batch and crop: the "
        "limit a training step (forward + backward of the whole model, about 3 forward passes) stays below",
        "- Where a step goes: `batch ms` prepares one batch (crops, rotation/flip, HoVer-Net targets: numpy, one "
        "thread); `model fwd+bwd img/s` is the whole model's forward, loss and backward on a prepared batch (no "
        "optimizer step)", "",
        "| model | preset | threads | batch | crop px | steps/s | train img/s | encoder fwd img/s | train / encoder "
        "| batch ms | model fwd+bwd img/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model, preset, n_threads, batch, crop, rate, images, limit, prepare, passes in rows:
        lines.append(f"| {model} | {preset} | {n_threads} | {batch} | {crop} | {rate:.2f} | {images:.1f} | "
                     f"{limit:.1f} | {images / limit:.2f} | {prepare:.1f} | {passes:.1f} |")
    share = max(prepare / 1000 * rate for *_, rate, _, _, prepare, _ in rows)
    overhead = statistics.median(images / passes for *_, images, _, _, passes in rows)
    lines += ["", f"Reading: the encoder alone forwards {min(r[7] / r[6] for r in rows):.1f}-"
              f"{max(r[7] / r[6] for r in rows):.1f}x faster than a training step consumes images; the whole model's "
              f"forward + backward accounts for the step (train img/s / model fwd+bwd img/s: median {overhead:.2f}), "
              f"and preparing the batch takes at most {share:.0%} of a step."]
    by_key = {(r[0], r[1], r[2]): r[6] for r in rows}
    speedups = [by_key[(m, p, 2)] / by_key[(m, p, 1)] for m, p, t in by_key if t == 1 and (m, p, 2) in by_key]
    if speedups:
        lines.append(f"Two threads over one: x{min(speedups):.2f}-{max(speedups):.2f} train img/s at the machine load "
                     "above (another job's threads contend for the same 2 cores).")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        from bench_fd import write_section  # perf/ is the script's folder, first on sys.path

        write_section(RESULTS, SECTION, text)
        print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
