"""Do bf16-autocast loss curves stay within fp32's seed-to-seed spread? Trains each named generator's `demo` preset
from several seeds in fp32 and in bf16 autocast, on the same simulator patches, and compares the loss curves.

Per seed the two precisions see the same batches, timesteps and noise (the loop's RNGs are seeded from the
training seed, not from the arithmetic), so the paired difference bf16 - fp32 at one seed isolates precision,
while the spread between seeds (in fp32) is the yardstick it must stay inside. Per block of steps it reports
each precision's seed-mean loss, the fp32 seeds' range, and the largest |bf16 - fp32| paired gap next to the
largest fp32 seed-to-seed gap. Writes a JSON record and a figure (mean curves with min-max bands per precision).

    .venv/bin/python perf/bench_precision_curves.py --generators htd,cosyn,dual-lora,harp-inpaint,spade \
        --seeds 3 --steps 300 \
        --out perf/precision_curves.json --figure perf/precision_curves.png
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

PRECISIONS = ("no", "bf16")
LABELS = {"no": "fp32", "bf16": "bf16 autocast"}


def write_data(root: Path, n: int) -> Path:
    """Simulator patches at the demo resolution (64 px), with tissue maps and nuclei."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    folder = root / "sim"
    write_dataset(build_source("simulator", n=n, size=64, seed=0, mpp=2.0), folder,
                  CardInfo("precision", "simulator patches for the precision loss-curve check"))
    return folder


def losses(name: str, data: Path, precision: str, seed: int, steps: int) -> tuple[list[float], dict]:
    """Per-step training losses of a fresh demo-preset generator, and its speed record (the precision it trained
    in and, under CPU bf16, the attention shapes it computed in float32)."""
    from histosynth.generators import build_generator

    generator = build_generator(name, "demo")
    report = generator.train(data, {"steps": steps, "progress": False, "mixed_precision": precision,
                                    "checkpoint_every": 0, "seed": seed})
    return [float(x) for x in report.losses], report.extra.get("speed", {})


def block_means(curve: list[float], block: int) -> np.ndarray:
    """Means over consecutive blocks of `block` steps (the last partial block dropped)."""
    values = np.asarray(curve, dtype=np.float64)
    usable = len(values) // block * block
    return values[:usable].reshape(-1, block).mean(axis=1)


def summarize(curves: dict[str, dict[int, list[float]]], block: int) -> dict[str, object]:
    """Per block: seed means per precision, fp32's seed range, the largest paired precision gap and the largest
    fp32 seed-to-seed gap; and the share of blocks where bf16's seed mean lies inside fp32's seed range."""
    fp32 = np.stack([block_means(c, block) for c in curves["no"].values()])
    bf16 = np.stack([block_means(c, block) for c in curves["bf16"].values()])
    paired_gap = np.abs(bf16 - fp32).max(axis=0)
    seed_gap = fp32.max(axis=0) - fp32.min(axis=0)
    inside = (bf16.mean(axis=0) >= fp32.min(axis=0)) & (bf16.mean(axis=0) <= fp32.max(axis=0))
    return {"block": block, "fp32_mean": fp32.mean(axis=0).tolist(), "bf16_mean": bf16.mean(axis=0).tolist(),
            "fp32_min": fp32.min(axis=0).tolist(), "fp32_max": fp32.max(axis=0).tolist(),
            "max_paired_gap": paired_gap.tolist(), "fp32_seed_gap": seed_gap.tolist(),
            "blocks_inside": int(inside.sum()), "blocks": int(inside.size)}


def figure(record: dict, path: Path) -> None:
    """One column per generator. Top: block-mean loss against step, seed mean and min-max band per precision.
    Bottom: per block, the largest paired |bf16 - fp32| gap against the largest fp32 seed-to-seed gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["generators"])
    fig, axes = plt.subplots(2, len(names), figsize=(max(6.0, 4.2 * len(names)), 6.4), squeeze=False)
    block = record["block"]
    for column, name in enumerate(names):
        runs = record["generators"][name]["curves"]
        top, bottom = axes[0][column], axes[1][column]
        for precision, color in zip(PRECISIONS, ("tab:blue", "tab:orange"), strict=True):
            blocks = np.stack([block_means(c, block) for c in runs[precision].values()])
            steps = (np.arange(blocks.shape[1]) + 0.5) * block
            top.plot(steps, blocks.mean(axis=0), color=color, label=f"{LABELS[precision]} (mean of {len(blocks)} seeds)")
            top.fill_between(steps, blocks.min(axis=0), blocks.max(axis=0), color=color, alpha=0.25)
        summary = record["generators"][name]["summary"]
        steps = (np.arange(len(summary["fp32_seed_gap"])) + 0.5) * block
        bottom.plot(steps, summary["fp32_seed_gap"], color="tab:blue", marker="o", label="fp32 seed-to-seed gap")
        bottom.plot(steps, summary["max_paired_gap"], color="tab:orange", marker="o",
                    label="paired |bf16 - fp32| gap (same seed)")
        top.set_title(name)
        top.set_yscale("log")
        bottom.set_yscale("log")
        bottom.set_xlabel("optimizer step")
    axes[0][0].set_ylabel(f"training loss (mean over {block} steps)")
    axes[1][0].set_ylabel("largest gap between block means")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    fig.suptitle(f"fp32 against bf16 autocast: loss curves over seeds\n(demo presets, {record['threads']} thread, "
                 f"{record['patches']} simulator patches)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--generators", default="htd,cosyn,dual-lora,harp-inpaint,spade",
                        help="comma-separated built-in generators")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per precision (default 3)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default 300)")
    parser.add_argument("--block", type=int, default=25, help="steps per block mean (default 25)")
    parser.add_argument("--patches", type=int, default=96, help="simulator training patches (default 96)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="JSON record; a rerun resumes the runs it holds")
    parser.add_argument("--figure", type=Path, help="PNG of the curves")
    args = parser.parse_args()
    from histosynth.atomic import write_text_atomic

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    record = json.loads(args.out.read_text()) if args.out.exists() else {}
    record.update({"steps": args.steps, "block": args.block, "threads": args.threads, "patches": args.patches})
    record.setdefault("generators", {})
    with tempfile.TemporaryDirectory() as tmp:
        data = write_data(Path(tmp), args.patches)
        for name in args.generators.split(","):
            entry = record["generators"].setdefault(name, {"curves": {p: {} for p in PRECISIONS}})
            for seed in range(args.seeds):
                for precision in PRECISIONS:  # interleaved, so load falls on both alike
                    if str(seed) in entry["curves"][precision]:
                        continue
                    started = time.time()
                    curve, speed = losses(name, data, precision, seed, args.steps)
                    entry["curves"][precision][str(seed)] = curve
                    entry.setdefault("speed", {p: {} for p in PRECISIONS})[precision][str(seed)] = speed
                    print(f"{name} seed {seed} {LABELS[precision]}: {time.time() - started:.0f} s", flush=True)
                    write_text_atomic(args.out, json.dumps(record))
            entry["summary"] = summarize(entry["curves"], args.block)
            write_text_atomic(args.out, json.dumps(record))
    record["date"] = time.strftime("%Y-%m-%d %H:%M")
    write_text_atomic(args.out, json.dumps(record))
    for name, entry in record["generators"].items():
        s = entry["summary"]
        print(f"{name}: bf16 seed-mean inside fp32's seed range in {s['blocks_inside']}/{s['blocks']} blocks; "
              f"largest paired gap {max(s['max_paired_gap']):.4g}, largest fp32 seed gap {max(s['fp32_seed_gap']):.4g}")
    if args.figure:
        figure(record, args.figure)


if __name__ == "__main__":
    main()
