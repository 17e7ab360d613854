"""`histosynth demo`: the main job on the embedded CC0 sample, end to end.

pseudo-labels -> heterogeneous patches -> train HTD and its unconditional ablation (demo preset) -> generate
-> FD (effnet-lite0, with a bootstrap CI) of each against the real patches -> a report folder with a results
table, a real-vs-synthetic grid and an FD bar chart. Every stage's time is printed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_MODELS = ("htd", "htd-unconditional")


def real_at_resolution(source: Path, out: Path, resolution: int) -> Path:
    """The real patches resized to the generators' resolution, so FD compares like with like."""
    from PIL import Image

    import numpy as np

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset
    from histosynth.schema import Sample

    def resized():
        for s in iter_samples(source):
            image = np.asarray(Image.fromarray(s.image).resize((resolution, resolution), Image.Resampling.LANCZOS))
            yield Sample(image, s.provenance.__class__(**{**s.provenance.__dict__, "mpp": None}))

    write_dataset(resized(), out, CardInfo("real reference", f"{source.name} resized to {resolution} px (FD reference)"))
    return out


def draw_comparison(paths: dict[str, Path], out: Path, n: int = 6) -> Path:
    """Rows of real and synthetic patches (conditioning maps overlaid in a second row for labelled sets)."""
    import matplotlib

    matplotlib.use("Agg")
    from itertools import islice

    import matplotlib.pyplot as plt

    from histosynth.disk import iter_samples
    from histosynth.viz import overlay

    rows = [(name, list(islice(iter_samples(path), n))) for name, path in paths.items()]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.8 * n, 1.9 * len(rows)), squeeze=False)
    for r, (name, samples) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(samples):
                ax.imshow(overlay(samples[c]) if name.endswith("map") else samples[c].image)
        axes[r][0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def run(args: argparse.Namespace) -> int:
    import torch

    from histosynth.benchmark.results import markdown_table, plot_metric_bars, results_table
    from histosynth.benchmark.runner import score_distribution
    from histosynth.commands.data import build_dataset, pseudolabel_lines, show_dataset, summary_lines
    from histosynth.generators import build_generator
    from histosynth.generators.jobs import generate_dataset
    from histosynth.labels.heterogeneity import save_composition_plot
    from histosynth.labels.sampling import sample_dataset

    out: Path = args.out.resolve()
    timings: list[tuple[str, float]] = []
    if args.threads:
        torch.set_num_threads(args.threads)

    def stage(name: str, fn, *a, **k):
        start = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        result = fn(*a, **k)
        timings.append((name, time.perf_counter() - start))
        return result

    embedded = stage("pseudo-label the embedded CC0 sample (tissue phenotypes k=5,10,20 + nuclei)", build_dataset,
                     "embedded", out / "embedded", {"size": args.size}, pseudolabel=True, cache=out / "cache")
    print("\n".join(summary_lines(out / "embedded", embedded.summary)))
    print("\n".join(pseudolabel_lines(embedded.labeller, embedded.composition)))
    stage("draw its grid with the pseudo labels", show_dataset, out / "embedded", out / "embedded_grid.png", 8)
    save_composition_plot({f"k={k}": s for k, s in embedded.composition.items()}, out / "embedded_composition.png",
                          title="embedded sample: pseudo tissue composition per patch")

    sampled = stage("keep the heterogeneous patches (20-80% rule)", sample_dataset, out / "embedded", out / "heterogeneous",
                    progress=False)
    print("\n".join(sampled.selected_stats.lines("heterogeneous patches")))
    if sampled.summary.split_sizes.get("train", 0) < 4:
        raise ValueError("fewer than 4 heterogeneous patches: too few to train on")

    reports = {}
    for name in DEMO_MODELS:
        generator = build_generator(name, "demo")
        config = generator.preset.train
        if args.steps:
            from histosynth.generators.diffusion.presets import override

            config = override(config, steps=args.steps)
        reports[name] = stage(f"train {name} (demo preset, {config.steps} steps)", generator.train, out / "heterogeneous",
                              config, out / "models" / name)
        print(f"  {name}: {reports[name]['patches']} patches, final loss {reports[name]['final_loss']:.4f}, "
              f"{reports[name]['train_images_per_second']} images/s")
        stage(f"generate {args.n} patches with {name}", generate_dataset, out / "models" / name, out / "heterogeneous",
              args.n, out / f"synthetic-{name}", seed=args.seed, sampler=args.sampler, steps=args.sample_steps,
              progress=False)

    resolution = build_generator("htd", "demo").preset.model.resolution
    real = stage(f"real reference at {resolution} px", real_at_resolution, out / "heterogeneous", out / "real", resolution)
    runs = []
    for name in DEMO_MODELS:
        run_ = stage(f"FD of {name} vs real (effnet-lite0, bootstrap CI)", score_distribution, real,
                     out / f"synthetic-{name}", ["effnet-lite0"], ["fd"], bootstrap=200, seed=args.seed,
                     cache_dir=out / "cache", progress=False)
        run_.save(out / f"fd-{name}.json")
        runs.append(run_)
    table = results_table(runs)
    (out / "results.md").write_text(markdown_table(table), encoding="utf-8")
    plot_metric_bars(runs, "fd", out / "fd.png")
    draw_comparison({"real": real, "htd": out / "synthetic-htd", "htd: conditioning map": out / "synthetic-htd",
                     "htd-unconditional": out / "synthetic-htd-unconditional"}, out / "real_vs_synthetic.png")

    print("\n[demo] results (FD, effnet-lite0; lower is closer to the real patches):")
    print(table.to_string(index=False))
    print("\n[demo] stages:")
    for name, seconds in timings:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {sum(s for _, s in timings):7.1f} s  total")
    print(f"[demo] report in {out}: results.md, fd.png, real_vs_synthetic.png, embedded_grid.png, "
          "embedded_composition.png, fd-*.json; datasets embedded/, heterogeneous/, synthetic-*/; models/")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("demo", help="run the main job on the embedded sample",
                              description="The main job on the embedded CC0 H&E sample: pseudo-labels, heterogeneous "
                              "patches, train HTD and its unconditional ablation (demo preset), generate, FD with a CI, "
                              "and a report folder (table, real-vs-synthetic grid, FD chart). About 10-15 min on 2 cores.")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="report folder (default demo_output/)")
    parser.add_argument("--size", type=int, default=256, help="patch size of the real tiles in pixels (default 256)")
    parser.add_argument("--n", type=int, default=64, help="synthetic patches per model (default 64)")
    parser.add_argument("--steps", type=int, help="training steps per model (default: the demo preset's)")
    parser.add_argument("--sampler", default="dpm++", help="sampler for generation (default dpm++)")
    parser.add_argument("--sample-steps", type=int, default=20, help="sampler steps (default 20)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)
