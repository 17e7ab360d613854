"""Does `torch.compile` speed up training on this CPU? The plain diffusers training loop of
perf/bench_training_speed.py over a generator's demo networks, eager against `torch.compile` (inductor, its
defaults), in fp32 and in bf16 autocast.

Each (generator, precision, mode) keeps its own copy of the networks, its AdamW and, when compiled, its compiled
forward for the whole run, so the compilation is paid once (its time is reported apart: the first step's time
minus the eager first step's) and every round measures the steady speed. Rounds are interleaved: each round runs
every setting `--steps` optimizer steps, in the same order, so machine load falls on all of them alike; images/s
over the steps after the first two of each measurement.

    .venv/bin/python perf/bench_compile.py --generators htd cosyn --threads 1 --rounds 3 --steps 8 --out /tmp/compile.json
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from bench_training_speed import (  # perf/ is the script's folder, on sys.path
    WARMUP,
    anchor_inputs,
    anchor_parts,
    built,
    speed_arguments,
    write_data,
)

MODES = ("eager", "compiled")
PRECISIONS = ("no", "bf16")


def make_loop(generator, precision: str, compiled: bool) -> tuple[Callable[[], float], list[float]]:
    """A closure running one optimizer step of the plain diffusers loop (seconds it took), and a list the first
    call's time is appended to."""
    from diffusers import DDPMScheduler

    modules, forward, channels, condition_channels = anchor_parts(generator)
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    batch_size, resolution = generator.preset.train.batch_size, generator.preset.model.resolution
    x0, batch = anchor_inputs(modules[0], channels, condition_channels, batch_size, resolution)
    run_forward = torch.compile(forward) if compiled else forward
    first: list[float] = []

    def step() -> float:
        start = time.perf_counter()
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch_size,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = run_forward(scheduler.add_noise(x0, noise, t), t, batch)
            loss = torch.nn.functional.mse_loss(prediction.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        seconds = time.perf_counter() - start
        if not first:
            first.append(seconds)
        return seconds

    return step, first


def main() -> None:
    args = speed_arguments(__doc__.splitlines()[0], ["htd", "cosyn"], 1, 32)  # --n only builds the networks
    from histosynth.speed import speed_record

    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.n)
        prototypes = {name: built(name, data) for name in args.generators}
    loops = {(name, precision, mode): make_loop(prototypes[name], precision, mode == "compiled")
             for name in args.generators for precision in PRECISIONS for mode in MODES}
    rates: dict[str, list[float]] = {"|".join(key): [] for key in loops}
    for round_index in range(args.rounds):
        for key, (step, _) in loops.items():
            times = [step() for _ in range(args.steps)]
            rate = len(times[WARMUP:]) * prototypes[key[0]].preset.train.batch_size / sum(times[WARMUP:])
            rates["|".join(key)].append(rate)
            print(f"round {round_index} {key[0]:18s} {key[1]:4s} {key[2]:8s} {rate:7.2f} img/s", flush=True)
    compile_seconds = {f"{name}|{precision}": loops[(name, precision, "compiled")][1][0]
                       - loops[(name, precision, "eager")][1][0]
                       for name in args.generators for precision in PRECISIONS}
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": speed_record("no"), "threads": args.threads,
              "torch": torch.__version__, "load_after": os.getloadavg(), "steps": args.steps, "rounds": args.rounds,
              "rates": rates, "median": {k: statistics.median(v) for k, v in rates.items()},
              "compile_seconds": compile_seconds}
    args.out.write_text(json.dumps(record, indent=1))
    print("| generator | precision | eager img/s | compiled img/s | compiled / eager | compile s |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.generators:
        for precision in PRECISIONS:
            eager = record["median"][f"{name}|{precision}|eager"]
            fast = record["median"][f"{name}|{precision}|compiled"]
            print(f"| {name} | {'fp32' if precision == 'no' else 'bf16'} | {eager:.2f} | {fast:.2f} | "
                  f"{fast / eager:.2f} | {compile_seconds[f'{name}|{precision}']:.0f} |")


if __name__ == "__main__":
    main()
