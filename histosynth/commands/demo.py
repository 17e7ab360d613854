"""`histosynth demo`: the main job on the embedded sample (grows as generators and benchmarks land)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from histosynth.commands.data import build_dataset, pseudolabel_lines, show_dataset, summary_lines
    from histosynth.labels.heterogeneity import save_composition_plot

    out: Path = args.out
    timings: list[tuple[str, float]] = []

    def stage(name: str, fn, *a, **k):
        start = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        result = fn(*a, **k)
        timings.append((name, time.perf_counter() - start))
        return result

    embedded = stage("build the embedded CC0 sample dataset with pseudo tissue maps and nuclei", build_dataset,
                     "embedded", out / "embedded", {"size": args.size}, pseudolabel=True, cache=out / "cache")
    print("\n".join(summary_lines(out / "embedded", embedded.summary)))
    print("\n".join(pseudolabel_lines(embedded.labeller, embedded.composition)))
    composition = embedded.composition
    stage("draw its grid with the pseudo labels", show_dataset, out / "embedded", out / "embedded_grid.png", 8)
    save_composition_plot({f"k={k}": s for k, s in composition.items()}, out / "embedded_composition.png",
                          title="embedded sample: pseudo tissue composition per patch")
    simulated = stage("build a simulator dataset (exact labels)", build_dataset, "simulator", out / "simulator", {"n": 16, "size": args.size, "seed": args.seed})
    print("\n".join(summary_lines(out / "simulator", simulated.summary)))
    stage("draw its grid with label overlays", show_dataset, out / "simulator", out / "simulator_grid.png", 8)

    print("\n[demo] stages:")
    for name, seconds in timings:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"[demo] report in {out.resolve()}: embedded_grid.png, embedded_composition.png, simulator_grid.png, "
          "embedded/ (with pseudolabels.json), simulator/, cache/ (embeddings: a rerun reuses them)")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("demo", help="run the main job on the embedded sample",
                              description="Build the embedded CC0 sample dataset with pseudo tissue phenotypes and "
                              "pseudo nuclei, and a simulator dataset, draw them, and print summaries and stage timings.")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="report folder (default demo_output/)")
    parser.add_argument("--size", type=int, default=256, help="patch size in pixels (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)
