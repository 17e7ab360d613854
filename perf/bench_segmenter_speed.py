"""Training speed of the benchmark's segmenters: fp32 against bf16 autocast in histosynth's loop, at the suite's
`demo` settings.

Three models, each trained through its own public entry point (so each measurement pays exactly what a suite run
pays per step: batch assembly, the loss, AdamW and the cosine schedule):
- `deeplabv3plus`: the tstr/seg tissue model (benchmark/downstream, train_model), the suite's demo setting: the
  downstream `tiny` preset (DeepLabv3+ on the ImageNet EfficientNet-Lite0 encoder, 64 px crops, batch 4);
- `hovernet`: the tstr/seg nuclei model at the same setting (the HoVer-UNet-style `tiny` preset: an smp Unet on
  Lite0, 64 px crops, batch 4, the HoVer-Net loss and targets; MONAI's HoVerNet is the `paper` preset only);
- `label-consistency`: the label-consistency segmenter (benchmark/segmenter.py, train_segmenter) at the demo
  variant's resolution (64 px) and its default batch (16), Lite0 ImageNet weights.
Data: simulator patches of 64 px (histosynth.sources.build_source("simulator", ...)).

Each speed measurement trains a fresh model (same seed) for `--steps` optimizer steps and reports steps/s and
images/s over the steps after the first two (kernel selection, first allocations). Rounds are interleaved: each
round runs every (model, precision) once, in the same order, so machine load falls on all alike; medians over the
rounds. Then one run per (model, precision) of `--loss-steps` steps from the same seed (same initial weights, same
batches) gives the loss at the end, to show bf16 trains like fp32. Last, where the time of a step goes: each
model's forward + backward alone per precision, timed and profiled (torch.profiler: convolutions forward and
backward, aten::copy_, the rest). Threads: torch.set_num_threads(--threads).

    .venv/bin/python perf/bench_segmenter_speed.py --threads 1 --rounds 3 --steps 20 --loss-steps 100 --out /tmp/seg_speed.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

MODELS = ("deeplabv3plus", "hovernet", "label-consistency")
PRECISIONS = ("no", "bf16")
WARMUP = 2  # steps left out of each measurement
SEED = 0


def write_data(root: Path, n: int) -> Path:
    """Simulator patches of 64 px with tissue maps and nuclei."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    folder = root / "sim"
    write_dataset(build_source("simulator", n=n, size=64, seed=0, mpp=0.5), folder,
                  CardInfo("segmenter-speed", "simulator patches for the segmenter training-speed benchmark"))
    return folder


@dataclass
class Trainer:
    """One model at its demo setting: `train(precision, steps)` -> (step seconds, losses, precision trained in)."""

    batch: int
    classes: int
    train: Callable[[str, int], tuple[list[float], list[float], str]]


def trainers(data: Path) -> dict[str, Trainer]:
    """model -> its Trainer on the patches in `data`."""
    from histosynth.benchmark.downstream.data import load_set
    from histosynth.benchmark.downstream.kinds import kind_of
    from histosynth.benchmark.downstream.training import train_model
    from histosynth.benchmark.label_consistency import dataset_arrays
    from histosynth.benchmark.segmenter import train_segmenter
    from histosynth.benchmark.suite import VARIANTS
    from histosynth.classes import get_schema
    from histosynth.disk import read_metadata

    demo = VARIANTS["demo"]
    out = {}
    for model in ("deeplabv3plus", "hovernet"):
        kind = kind_of(model)
        labeled = load_set(data, "train", kind.label)
        classes = get_schema(labeled.schema).num_classes
        batch = kind.config(demo.tstr_preset).batch_size

        def downstream(precision: str, steps: int, kind=kind, labeled=labeled, classes=classes):
            config = kind.config(demo.tstr_preset, steps=steps, mixed_precision=precision)
            with contextlib.redirect_stderr(io.StringIO()):  # its progress bar, dozens of times over
                trained = train_model(kind, labeled, classes, demo.tstr_preset, config, SEED)
            return trained.step_seconds, trained.losses, trained.precision

        out[model] = Trainer(batch, classes, downstream)
    images, maps = dataset_arrays(data, demo.resolution)
    classes = get_schema(read_metadata(data)["histosynth"]["tissue_schema"]).num_classes  # as the task reads it
    batch = 16  # train_segmenter's default, which the label-consistency task uses

    def segmenter(precision: str, steps: int):
        trained = train_segmenter(images, maps, classes, steps=steps, batch_size=batch, seed=SEED,
                                  mixed_precision=precision)
        return trained.step_seconds, trained.losses, trained.precision

    out["label-consistency"] = Trainer(batch, classes, segmenter)
    return out


CONV_FORWARD = ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward")
CONV_BACKWARD = ("aten::convolution_backward", "aten::_slow_conv2d_backward")


def where_time_goes(model: str, classes: int, batch: int, repeats: int = 5) -> dict[str, dict[str, float]]:
    """The model's forward + backward alone (random init, a random batch of 64 px, sum of squared outputs; no
    data, loss or optimizer), per precision: median seconds over `repeats` after 3 warm-up passes, and the profiler's
    self CPU time per pass in convolutions forward and backward and in aten::copy_ (which holds autocast's casts)."""
    from torch.profiler import ProfilerActivity, profile

    from histosynth.benchmark.downstream.hovernet import build_hovernet
    from histosynth.benchmark.downstream.tissue import build_deeplab
    from histosynth.benchmark.segmenter import build_segmenter

    torch.manual_seed(SEED)
    net = {"deeplabv3plus": lambda: build_deeplab("tiny", classes, pretrained=False),
           "hovernet": lambda: build_hovernet("tiny", classes, pretrained=False),
           "label-consistency": lambda: build_segmenter(classes, pretrained=False)}[model]()
    net.train()
    x = torch.randn(batch, 3, 64, 64)

    def fwd_bwd(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        parts = out.values() if isinstance(out, dict) else [out]
        sum(p.float().square().mean() for p in parts).backward()

    out = {}
    for precision in PRECISIONS:
        bf16 = precision == "bf16"
        for _ in range(3):
            fwd_bwd(bf16)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fwd_bwd(bf16)
            times.append(time.perf_counter() - start)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                fwd_bwd(bf16)
        self_ms = {e.key: e.self_cpu_time_total / 1e3 / 3 for e in prof.key_averages()}
        total = sum(self_ms.values())
        groups = {"conv_forward_ms": sum(self_ms.get(k, 0.0) for k in CONV_FORWARD),
                  "conv_backward_ms": sum(self_ms.get(k, 0.0) for k in CONV_BACKWARD),
                  "copy_ms": self_ms.get("aten::copy_", 0.0)}
        out[precision] = {"fwd_bwd_s": statistics.median(times), "profiled_ms": total, **groups,
                          "other_ms": total - sum(groups.values())}
    return out


def steady_rate(step_seconds: list[float]) -> float:
    """Optimizer steps per second over the steps after the first WARMUP."""
    timed = step_seconds[WARMUP:]
    return len(timed) / sum(timed)


def cpu_description() -> dict[str, object]:
    """lscpu's model name and the bf16-relevant flags."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}
    flags = set(fields.get("Flags", "").split())
    wanted = ("avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
    return {"model": fields.get("Model name"), "cpus": fields.get("CPU(s)"),
            "flags": {flag: flag in flags for flag in wanted}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per speed measurement")
    parser.add_argument("--loss-steps", type=int, default=100, help="steps of the run whose final loss is compared")
    parser.add_argument("--n", type=int, default=64, help="training patches (the demo variant's n)")
    parser.add_argument("--out", type=Path, required=True, help="JSON of every measurement")
    args = parser.parse_args()
    if args.steps <= WARMUP:
        parser.error(f"--steps must be > {WARMUP} (the first {WARMUP} steps are not timed)")
    torch.set_num_threads(args.threads)
    from histosynth.speed import cpu_bf16_speedup, speed_record

    load = {"before": os.getloadavg(), "during": []}
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.n)
        runs = trainers(data)
        settings = [(model, precision) for model in args.models for precision in PRECISIONS]
        rates: dict[str, list[float]] = {f"{m}|{p}": [] for m, p in settings}
        for round_index in range(args.rounds):
            for model, precision in settings:
                seconds, _, trained_in = runs[model].train(precision, args.steps)
                assert trained_in == precision, (model, precision, trained_in)
                rates[f"{model}|{precision}"].append(steady_rate(seconds))
                load["during"].append(os.getloadavg()[0])
                print(f"round {round_index} {model:17s} {precision:4s} {rates[f'{model}|{precision}'][-1]:6.2f} "
                      f"steps/s", flush=True)
        losses: dict[str, list[float]] = {}
        for model, precision in settings:
            _, curve, _ = runs[model].train(precision, args.loss_steps)
            losses[f"{model}|{precision}"] = curve
            load["during"].append(os.getloadavg()[0])
            print(f"loss {model:17s} {precision:4s} first {curve[0]:.4f} last {curve[-1]:.4f}", flush=True)
        profiles = {model: where_time_goes(model, runs[model].classes, runs[model].batch) for model in args.models}
    load["after"] = os.getloadavg()
    table = {}
    for model in args.models:
        batch = runs[model].batch
        row = {"batch": batch}
        for precision in PRECISIONS:
            steps_per_s = statistics.median(rates[f"{model}|{precision}"])
            curve = losses[f"{model}|{precision}"]
            row[precision] = {"steps_per_s": steps_per_s, "images_per_s": steps_per_s * batch,
                              "first_loss": curve[0], "final_loss": curve[-1],
                              "final_loss_mean_last5": float(np.mean(curve[-5:]))}
        row["bf16_speedup"] = row["bf16"]["steps_per_s"] / row["no"]["steps_per_s"]
        row["bf16_speedup_paired"] = statistics.median(  # bf16 over the fp32 run just before it, per round
            b / f for f, b in zip(rates[f"{model}|no"], rates[f"{model}|bf16"], strict=True))
        table[model] = row
    record = {"date": started, "cpu": cpu_description(), "machine": speed_record("no"), "threads": args.threads,
              "torch": torch.__version__, "bf16_probe_speedup": cpu_bf16_speedup(), "load": load,
              "steps": args.steps, "warmup": WARMUP, "rounds": args.rounds, "loss_steps": args.loss_steps,
              "n": args.n, "seed": SEED, "rates": rates, "losses": losses, "table": table, "where_time_goes": profiles}
    args.out.write_text(json.dumps(record, indent=1))
    print("| model | batch | fp32 steps/s | bf16 steps/s | fp32 img/s | bf16 img/s | bf16 / fp32 | paired | "
          f"loss step 1 fp32 / bf16 | loss step {args.loss_steps} fp32 / bf16 | mean of the last 5 fp32 / bf16 |")
    for model, row in table.items():
        fp32, bf16 = row["no"], row["bf16"]
        print(f"| {model} | {row['batch']} | {fp32['steps_per_s']:.2f} | {bf16['steps_per_s']:.2f} | "
              f"{fp32['images_per_s']:.1f} | {bf16['images_per_s']:.1f} | {row['bf16_speedup']:.2f} | "
              f"{row['bf16_speedup_paired']:.2f} | "
              f"{fp32['first_loss']:.4f} / {bf16['first_loss']:.4f} | {fp32['final_loss']:.4f} / {bf16['final_loss']:.4f} | "
              f"{fp32['final_loss_mean_last5']:.4f} / {bf16['final_loss_mean_last5']:.4f} |")

    print("\n| model | precision | fwd+bwd ms | conv forward ms | conv backward ms | aten::copy_ ms | other ms |")
    for model, rows in profiles.items():
        for precision, row in rows.items():
            print(f"| {model} | {'fp32' if precision == 'no' else precision} | {1e3 * row['fwd_bwd_s']:.0f} | "
                  f"{row['conv_forward_ms']:.0f} | {row['conv_backward_ms']:.0f} | {row['copy_ms']:.0f} | "
                  f"{row['other_ms']:.0f} |")


if __name__ == "__main__":
    main()
