"""Dual-LoRA against its HARP-like inpainting baseline and HTD, what can be measured without a GPU: at demo scale and equal
training steps and batch, on the simulator (split by slide) and on the embedded CC0 sample (split by region).

Per dataset (a folder under --out):
- real data at the generators' 64 px: training patches and held-out patches that share no slide (simulator: slide
  seeds 0.. train, 100.. held out) or no 256 x 256 um region (embedded, `histosynth.splits` by region at 0.5 um/px;
  its pseudo tissue and nuclei labels are fitted on the training split only and then applied to both);
- dual-lora, harp-inpaint and htd (demo presets) train `--steps` optimizer steps at batch `--batch` each (each
  preset's own learning rate, schedule and EMA). Dual-LoRA alternates tasks, so its completion adapter gets half of
  the steps (the shared base networks get all of them);
- completion: dual-lora's completion adapter and harp-inpaint fill the same held-out masks (standard set v1, mask j
  for held-out patch j) of the held-out real patches; a mean-fill row (the hole painted with the known pixels' mean
  color) is the floor. `histosynth bench complete`'s scorer gives PSNR and SSIM inside the mask with percentile
  bootstrap 95 % CIs; the paired differences dual-lora minus harp-inpaint and each minus mean-fill have their own
  bootstrap CIs. Masked LPIPS needs the torchvision AlexNet/VGG backbone weights, which do not exist offline: given
  `--lpips-backbone PATH` it runs in the three modes, otherwise the table says "not run (weights)";
- synthesis: dual-lora's synthesis adapter on the held-out nuclei layouts, HTD on the held-out tissue maps with its
  crop channels zeroed (the crops would paste held-out pixels) and HTD on the training maps with crops (as `histosynth
  demo` runs it), and real training patches (the reference), each N = --n-test, against the held-out real patches:
  FD (bootstrap CI) and KID (bootstrap CI of the whole-set unbiased MMD^2) under the offline EfficientNet-Lite0
  encoder, as the demo scores them (histosynth.recipes.demo.score_with_kid_ci). FD is biased upward at small N;
  KID is unbiased and the statistic to read here.

Run (defaults: 48 steps at batch 16, 48 held-out patches, DDIM 10 steps; measured 58 min of one-thread process time
on the shared 2-core machine at load 3-9, so the two datasets ran as two processes, 30 min wall, then one call that
reads their finished stages and writes the joint report and picture):
    export OMP_NUM_THREADS=1
    .venv/bin/python perf/dual_lora_compare.py --out dual_lora_output --datasets simulator &
    .venv/bin/python perf/dual_lora_compare.py --out dual_lora_output --datasets embedded; wait
    .venv/bin/python perf/dual_lora_compare.py --out dual_lora_output --figure docs/dual_lora_compare.png
`--quick` runs every stage with tiny settings (a smoke test; numbers meaningless). Rerunning resumes: finished
datasets, models (and training checkpoints), generated sets and scores are reused; every file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

DATASETS = ("simulator", "embedded")
COMPLETERS = ("dual-lora", "harp-inpaint")
PAIRS = (("dual-lora", "harp-inpaint"), ("dual-lora", "mean-fill"), ("harp-inpaint", "mean-fill"))  # paired a - b
TRAIN_SLIDE_SEED, TEST_SLIDE_SEED = 0, 100
SIM_MPP = 2.0  # 64 px = 128 um, as perf/tstr_simulator.py
EMBEDDED_MPP, EMBEDDED_REGION = 0.5, 512  # 64 px tiles of 32 um; regions of 512 level-0 px = 8 x 8 tiles
RESOLUTION = 64  # every demo preset's
QUICK = {"steps": 2, "n_test": 8, "sample_steps": 2, "per_slide": 8, "bootstrap": 20}


# ---------------------------------------------------------------------------------------------------- datasets


def subset(samples: list, n: int, seed: int) -> list:
    """`n` of `samples` chosen by a seeded permutation (kept in their order), so they span slides and regions."""
    if len(samples) <= n:
        return samples
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:n])
    return [samples[i] for i in keep]


def write_rows(samples: list, out: Path, title: str, text: str) -> Path:
    """`samples` as the train split of a dataset folder (atomic; skipped when it exists)."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset

    if not (out / "README.md").is_file():
        write_dataset(samples, out, CardInfo(title, text, license="cc0-1.0"))
    return out


def simulator_data(out: Path, train_slides: int, test_slides: int, per_slide: int, n_test: int, seed: int) -> dict[str, Path]:
    """Training patches of slides sim-0.. and `n_test` held-out patches of slides sim-100.., 64 px at 2 um/px."""
    from histosynth.sources.simulator import SimulatorSource

    def slides(first: int, count: int, per: int) -> list:
        return [s for k in range(first, first + count) for s in SimulatorSource(n=per, size=RESOLUTION, seed=k, mpp=SIM_MPP)]

    paths = {"train": out / "real-train", "heldout": out / "real-heldout"}
    if not (paths["train"] / "README.md").is_file():
        write_rows(slides(TRAIN_SLIDE_SEED, train_slides, per_slide), paths["train"], "simulator training slides",
                   f"{per_slide} patches from each of slides sim-{TRAIN_SLIDE_SEED}..sim-{TRAIN_SLIDE_SEED + train_slides - 1}.")
    if not (paths["heldout"] / "README.md").is_file():
        per_test = -(-n_test // test_slides)
        write_rows(subset(slides(TEST_SLIDE_SEED, test_slides, per_test), n_test, seed), paths["heldout"],
                   "simulator held-out slides", f"{n_test} patches of slides sim-{TEST_SLIDE_SEED}.."
                   f"sim-{TEST_SLIDE_SEED + test_slides - 1}, none of which is a training slide.")
    return paths


def embedded_data(out: Path, n_test: int, seed: int) -> dict[str, Path]:
    """The embedded region tiled at 64 px / 0.5 um/px, split by region; pseudo labels fitted on the train split only."""
    from histosynth.dataset import PSEUDOLABEL_KS, build_dataset
    from histosynth.disk import iter_samples
    from histosynth.labels.pipeline import PseudolabelConfig, fit_pseudolabeler
    from histosynth.recipes.encoders import pseudolabel_encoder
    from histosynth.splits import SplitSpec

    paths = {"train": out / "real-train", "heldout": out / "real-heldout"}
    if all((p / "README.md").is_file() for p in paths.values()):
        return paths
    split = out / "embedded-split"
    if not (split / "README.md").is_file():
        build_dataset("embedded", split, {"size": RESOLUTION, "mpp": EMBEDDED_MPP}, pseudolabel=False,
                      split=SplitSpec("region", 0.25, seed, EMBEDDED_REGION))
    config = PseudolabelConfig(ks=PSEUDOLABEL_KS, cell=RESOLUTION // 4, nuclei=True, input_size=64)
    labeler = fit_pseudolabeler(iter_samples(split, "train"), config, out / "cache",
                                  encoder=pseudolabel_encoder(config.encoder), progress=False)
    train = list(labeler.label_all(iter_samples(split, "train")))
    test = subset(list(labeler.label_all(iter_samples(split, "test"))), n_test, seed)
    what = (f"{RESOLUTION} px tiles at {EMBEDDED_MPP} um/px of CMU-1-Small-Region, split by {EMBEDDED_REGION} px "
            f"level-0 regions; pseudo tissue (k={','.join(map(str, PSEUDOLABEL_KS))}) and nuclei "
            f"({config.nuclei_k} classes) fitted on the training split only.")
    write_rows(train, paths["train"], "embedded training regions", f"All training-split {what}")
    write_rows(test, paths["heldout"], "embedded held-out regions", f"{len(test)} held-out-split {what}")
    return paths


def mean_fill(heldout: Path, out: Path) -> Path:
    """The floor: each held-out patch with held-out mask j painted in the mean color of its known pixels."""
    from histosynth.disk import iter_samples
    from histosynth.masks import heldout_mask

    rows = []
    for j, s in enumerate(iter_samples(heldout)):
        mask = heldout_mask(j, s.image.shape[:2])
        image = s.image.copy()
        image[mask] = np.round(s.image[~mask].reshape(-1, 3).mean(0)).astype(np.uint8)
        rows.append(replace(s, image=image, completion_mask=mask, tissue=None, tissue_schema=None, nuclei=None,
                            provenance=replace(s.provenance, generator="mean-fill")))
    return write_rows(rows, out, "mean-fill completions", "Held-out mask j of each held-out patch j filled with the "
                      "mean color of the patch's known pixels (the completion floor).")


def real_reference(train: Path, out: Path, n: int, seed: int) -> Path:
    """`n` real training patches (seeded subset): the real-train vs held-out reference row at the same N."""
    from histosynth.disk import iter_samples

    return write_rows(subset(list(iter_samples(train)), n, seed), out, "real training reference",
                      f"{n} real training patches (seeded subset), scored against the held-out patches.")


# ---------------------------------------------------------------------------------------------------- models


def train_model(name: str, data: Path, steps: int, batch: int, out: Path) -> dict[str, Any]:
    """Train `name` (demo preset) for `steps` steps of `batch` on every patch of `data` into `out` (resumes from
    out/training; a finished model is reused). Returns its training record."""
    from histosynth.generators import build_generator

    config_file = out / "config.json"
    if not config_file.is_file():
        generator = build_generator(name, "demo")
        config = {"steps": steps, "batch_size": batch, "heterogeneity": None, "checkpoint_every": max(1, steps // 4),
                  "progress": False}
        generator.train(data, config, out, resume=True)
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    train, record = saved["train"], saved["training"]
    if (train["steps"], train["batch_size"]) != (steps, batch):
        raise SystemExit(f"{out} was trained {train['steps']} steps at batch {train['batch_size']}, not {steps} at "
                         f"{batch}: delete it or use another --out")
    return {"steps": train["steps"], "batch": train["batch_size"], "lr": train["lr"], "lr_schedule": train["lr_schedule"],
            "ema_decay": train.get("ema_decay"), "patches": record["data"]["patches"],
            "seconds": round(record["seconds"], 1), "images_per_second": round(record["images_per_second"], 2),
            "final_loss": round(record["final_loss"], 5), "resumed_from_step": record["resumed_from_step"],
            "loss_means": (record.get("extra") or {}).get("loss_means")}


def generate(checkpoint: Path, conditions: Path, n: int, out: Path, seed: int, sampler: str, steps: int,
             task: str) -> Path:
    """`generate dual-lora|harp-inpaint|htd --task` on the conditions' rows (reused when finished)."""
    from histosynth.generators.jobs import generate_dataset

    if not (out / "README.md").is_file():
        generate_dataset(checkpoint, conditions, n, out, seed=seed, sampler=sampler, steps=steps, task=task,
                         progress=False)
    return out


def generate_no_crops(checkpoint: Path, conditions: Path, n: int, out: Path, seed: int, sampler: str, steps: int) -> Path:
    """HTD on `conditions`' maps with its crop channels zeroed, as the demo's htd-no-copy row (reused when finished)."""
    from histosynth.recipes.demo import generate_without_crops

    if not (out / "README.md").is_file():
        generate_without_crops(checkpoint, conditions, n, out, seed, sampler, steps)
    return out


# ---------------------------------------------------------------------------------------------------- scores


def score_completion_set(heldout: Path, completed: Path, out: Path, backbone: Path | None, net: str, bootstrap: int,
                         seed: int):
    """`bench complete`'s scores (PSNR/SSIM in the mask, and masked LPIPS when a backbone is given), saved as JSON.

    Without a backbone the scorer still has to run one LPIPS mode (it needs at least one); it runs on a random
    network and those rows are dropped, never reported."""
    from histosynth.benchmark.lpips_masked import MODES
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.benchmark.tasks.completion import score_completion

    if out.is_file():
        return BenchmarkRun.load(out)
    modes = MODES if backbone else MODES[:1]
    run = score_completion(heldout, completed, modes, net=net, backbone=backbone, pnet_rand=backbone is None,
                           bootstrap=bootstrap, seed=seed)
    if backbone is None:
        run.results = [r for r in run.results if not r.metric.startswith("lpips")]
        run.encoders = {}
        run.settings["modes"] = []
        run.settings["lpips"] = "not run: no --lpips-backbone weights"
    run.save(out)
    return run


def score_synthesis_set(heldout: Path, fake: Path, out: Path, bootstrap: int, seed: int, cache: Path):
    """FD and KID with CIs under effnet-lite0 against the held-out patches, as `histosynth demo` scores them."""
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.recipes.demo import score_with_kid_ci

    if out.is_file():
        return BenchmarkRun.load(out)
    run = score_with_kid_ci(heldout, fake, bootstrap, seed, cache)
    run.save(out)
    return run


def result(run, metric: str) -> dict[str, Any] | None:
    r = next((r for r in run.results if r.metric == metric), None)
    if r is None:
        return None
    return {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high, "n": r.n_fake, "std": r.extra.get("std")}


def paired_difference(runs: dict[str, Any], metric: str, a: str, b: str, bootstrap: int, seed: int) -> dict[str, Any] | None:
    """Mean of a - b over the paired rows of `metric` with its percentile bootstrap 95 % CI."""
    from histosynth.benchmark.tasks.completion import mean_interval

    values = []
    for name in (a, b):
        r = next((r for r in runs[name].results if r.metric == metric), None)
        if r is None:
            return None
        values.append(np.asarray(r.extra["per_sample"], np.float64))
    mean, low, high = mean_interval(values[0] - values[1], bootstrap, seed)
    return {"value": mean, "ci_low": low, "ci_high": high, "n": len(values[0]),
            "relative": mean / float(values[1].mean()) if values[1].mean() else None}


# ---------------------------------------------------------------------------------------------------- report


def cell(r: dict[str, Any] | None, digits: int = 3, scale: float = 1.0) -> str:
    if r is None or r["value"] is None:
        return "n/a"
    text = f"{r['value'] * scale:.{digits}f}"
    if r.get("ci_low") is not None:
        text += f" [{r['ci_low'] * scale:.{digits}f}, {r['ci_high'] * scale:.{digits}f}]"
    return text


def completion_table(scores: dict[str, dict], lpips_run: bool) -> str:
    from histosynth.benchmark.lpips_masked import MODES

    lpips_cols = [f"LPIPS {m}" for m in MODES]
    lines = ["| completion (held-out masks v1) | N | PSNR in mask, dB [95% CI] | SSIM in mask [95% CI] | "
             + " | ".join(lpips_cols) + " |", "|---|---:|---|---|" + "---|" * len(lpips_cols)]
    for name, s in scores.items():
        lpips = [cell(s.get(f"lpips-{m}"), 4) if lpips_run else "not run (weights)" for m in MODES]
        lines.append(f"| {name} | {s['n']} | {cell(s.get('psnr-masked'), 2)} | {cell(s.get('ssim-masked'), 3)} | "
                     + " | ".join(lpips) + " |")
    return "\n".join(lines) + "\n"


def synthesis_table(scores: dict[str, dict]) -> str:
    lines = ["| synthesis vs held-out real (effnet-lite0) | N | FD [95% CI] | KID x 1e3 [95% CI] |", "|---|---:|---|---|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s['fd']['n']} | {cell(s['fd'], 2)} | {cell(s['kid'], 2, 1e3)} |")
    return "\n".join(lines) + "\n"


def draw_examples(sets: dict[str, dict[str, Path]], out: Path, rows_per_dataset: int = 3) -> Path:
    """Rows: held-out patches of each dataset; columns: real, masked input, each completion, synthesis samples."""
    import matplotlib

    matplotlib.use("Agg")
    from itertools import islice

    import matplotlib.pyplot as plt

    from histosynth.atomic import atomic_file
    from histosynth.disk import iter_samples

    columns = ["held-out real", "masked (v1)", "mean-fill", "harp-inpaint", "dual-lora completion",
               "dual-lora synthesis", "htd (held-out map)"]
    keys = ["real", "masked", "mean-fill", "harp-inpaint", "dual-lora", "synth-dual-lora", "synth-htd"]
    total = rows_per_dataset * len(sets)
    fig, axes = plt.subplots(total, len(columns), figsize=(1.35 * len(columns), 1.4 * total + 0.3), squeeze=False)
    r = 0
    for dataset, paths in sets.items():
        images = {k: [s for s in islice(iter_samples(p), rows_per_dataset)] for k, p in paths.items()}
        for i in range(rows_per_dataset):
            mask = images["dual-lora"][i].completion_mask
            masked = images["real"][i].image.copy()
            masked[mask] = (255, 255, 255)
            pictures = {k: v[i].image for k, v in images.items()} | {"masked": masked}
            for c, key in enumerate(keys):
                ax = axes[r][c]
                ax.imshow(pictures[key], interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(columns[c], fontsize=6)
                if c == 0:
                    ax.set_ylabel(dataset, fontsize=6)
            r += 1
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------------- main


def run_dataset(dataset: str, args: argparse.Namespace, s: dict[str, Any], stage: Callable) -> dict[str, Any]:
    """Every stage of one dataset; returns its numbers."""
    from histosynth.disk import count_samples

    out = args.out / dataset
    out.mkdir(parents=True, exist_ok=True)
    n = s["n_test"]
    if dataset == "simulator":
        paths = stage(f"{dataset}: simulate {args.train_slides} training and {args.test_slides} held-out slides",
                      simulator_data, out, args.train_slides, args.test_slides, s["per_slide"], n, args.seed)
    else:
        paths = stage(f"{dataset}: tile, split by region, pseudo-label (fitted on train)", embedded_data, out, n, args.seed)
    train, heldout = paths["train"], paths["heldout"]
    n_train, n = count_samples(train), count_samples(heldout)
    print(f"  {dataset}: {n_train} training patches, {n} held-out patches", flush=True)

    models = {}
    for name in (*COMPLETERS, "htd"):
        models[name] = stage(f"{dataset}: train {name} (demo preset, {s['steps']} steps, batch {args.batch})",
                             train_model, name, train, s["steps"], args.batch, out / "models" / name)
        print(f"  {name}: {models[name]}", flush=True)

    sampling = {"sampler": args.sampler, "steps": s["sample_steps"], "seed": args.seed}
    completed = {}
    for name in COMPLETERS:
        completed[name] = stage(f"{dataset}: complete {n} held-out patches with {name}", generate,
                                out / "models" / name, heldout, n, out / f"completed-{name}", args.seed, args.sampler,
                                s["sample_steps"], "completion")
    completed["mean-fill"] = stage(f"{dataset}: mean-fill floor", mean_fill, heldout, out / "completed-mean-fill")
    runs = {name: stage(f"{dataset}: score {name} completions", score_completion_set, heldout, path,
                        out / f"scores-complete-{name}.json", args.lpips_backbone, args.lpips_net, s["bootstrap"], args.seed)
            for name, path in completed.items()}
    lpips_metrics = [r.metric for r in runs["dual-lora"].results if r.metric.startswith("lpips")]
    completion = {name: {"n": count_samples(completed[name]), **{m: result(run, m) for m in
                                                                 ("psnr-masked", "ssim-masked", *lpips_metrics)}}
                  for name, run in runs.items()}
    for name, run in runs.items():
        changed = run.settings["rows_with_changed_known_pixels"]
        if changed:
            print(f"  warning: {name} changed known pixels in {changed} rows", flush=True)
    difference = {f"{a} - {b}": {m: paired_difference(runs, m, a, b, s["bootstrap"], args.seed)
                                 for m in ("psnr-masked", "ssim-masked", *lpips_metrics)} for a, b in PAIRS}

    synthetic = {
        "dual-lora synthesis (held-out nuclei layouts)": stage(
            f"{dataset}: synthesize {n} patches with dual-lora on the held-out layouts", generate,
            out / "models" / "dual-lora", heldout, n, out / "synth-dual-lora", args.seed, args.sampler,
            s["sample_steps"], "synthesis"),
        "htd (held-out tissue maps, crops zeroed)": stage(
            f"{dataset}: synthesize {n} patches with htd on the held-out maps, crops zeroed", generate_no_crops,
            out / "models" / "htd", heldout, n, out / "synth-htd", args.seed, args.sampler, s["sample_steps"]),
        "htd (training maps + crops, as the demo)": stage(
            f"{dataset}: synthesize {n} patches with htd on the training maps", generate, out / "models" / "htd", train,
            n, out / "synth-htd-train", args.seed, args.sampler, s["sample_steps"], "synthesis"),
        "real training patches (reference)": stage(f"{dataset}: {n} real training patches", real_reference, train,
                                                   out / "real-train-n", n, args.seed),
    }
    synthesis = {}
    for name, path in synthetic.items():
        run = stage(f"{dataset}: FD and KID of {name} vs held-out (effnet-lite0)", score_synthesis_set, heldout, path,
                    out / f"scores-synth-{path.name}.json", s["fd_bootstrap"], args.seed, out / "cache")
        synthesis[name] = {"fd": result(run, "fd"), "kid": result(run, "kid")}
    figure_paths = {"real": heldout, "mean-fill": completed["mean-fill"], "harp-inpaint": completed["harp-inpaint"],
                    "dual-lora": completed["dual-lora"], "synth-dual-lora": out / "synth-dual-lora",
                    "synth-htd": out / "synth-htd"}
    return {"n_train": n_train, "n_heldout": n, "models": models, "sampling": sampling, "completion": completion,
            "paired_differences": difference, "synthesis": synthesis, "figure_paths": figure_paths,
            "masks": runs["dual-lora"].settings["masks"], "lpips": bool(lpips_metrics)}


def dataset_report(dataset: str, r: dict[str, Any], args: argparse.Namespace) -> str:
    split = ("by slide: sim-0..sim-{} train, sim-100.. held out; 64 px at 2 um/px".format(args.train_slides - 1)
             if dataset == "simulator" else
             f"by region ({EMBEDDED_REGION} px level-0 blocks); 64 px at {EMBEDDED_MPP} um/px; pseudo labels fitted on train")
    m = r["models"]
    train_lines = "\n".join(f"- {name}: {v['steps']} steps x batch {v['batch']} on {v['patches']} patches, lr {v['lr']} "
                            f"({v['lr_schedule']}), EMA {v['ema_decay']}, {v['seconds']:.0f} s ({v['images_per_second']} img/s), "
                            f"final loss {v['final_loss']}"
                            + (f" (resumed from step {v['resumed_from_step']}: time of the resumed part)" if v['resumed_from_step'] else "") + (f", per-task loss means {v['loss_means']}" if name == "dual-lora" else "")
                            for name, v in m.items())
    diff_lines = "\n".join(f"- {pair}, {metric}: {cell(d, 4)}" + (f" ({d['relative'] * 100:+.1f} % of {pair.split(' - ')[1]}'s mean)"
                                                                  if d and d.get("relative") is not None else "")
                           for pair, by_metric in r["paired_differences"].items() for metric, d in by_metric.items())
    return (f"### {dataset} ({split})\n\n{r['n_train']} training patches, {r['n_heldout']} held-out patches.\n\n"
            f"Training (1 torch thread):\n{train_lines}\n\n" + completion_table(r["completion"], r["lpips"])
            + f"\nPaired differences (mean over the {r['n_heldout']} held-out patches, "
            f"bootstrap 95% CI):\n{diff_lines}\n\n" + synthesis_table(r["synthesis"]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("dual_lora_output"), help="work and results folder")
    parser.add_argument("--figure", type=Path, help="also copy the example picture here (e.g. docs/dual_lora_compare.png)")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: simulator, embedded (default both)")
    parser.add_argument("--steps", type=int, help="training steps of every model (default 48)")
    parser.add_argument("--batch", type=int, default=16, help="training batch of every model (default 16)")
    parser.add_argument("--train-slides", type=int, default=4, help="simulator training slides (default 4)")
    parser.add_argument("--test-slides", type=int, default=2, help="held-out simulator slides (default 2)")
    parser.add_argument("--per-slide", type=int, help="simulator training patches per slide (default 64)")
    parser.add_argument("--n-test", type=int, help="held-out patches completed and N of every synthetic set (default 48)")
    parser.add_argument("--sampler", default="ddim", help="sampler of every model (default ddim)")
    parser.add_argument("--sample-steps", type=int, help="sampler steps of every model (default 10)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples of the completion CIs (default 1000)")
    parser.add_argument("--fd-bootstrap", type=int, help="bootstrap replicates of the FD and KID CIs (default 200)")
    parser.add_argument("--lpips-backbone", type=Path, help="torchvision AlexNet/VGG weights file: runs masked LPIPS")
    parser.add_argument("--lpips-net", default="alex", choices=["alex", "vgg"], help="LPIPS network (default alex)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="training, sampling, split and bootstrap seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny settings end to end (smoke test)")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    s = {"steps": args.steps or quick.get("steps", 48), "n_test": args.n_test or quick.get("n_test", 48),
         "sample_steps": args.sample_steps or quick.get("sample_steps", 10),
         "per_slide": args.per_slide or quick.get("per_slide", 64),
         "bootstrap": args.bootstrap or quick.get("bootstrap", 1000), "fd_bootstrap": args.fd_bootstrap or quick.get("bootstrap", 200)}
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if not datasets or set(datasets) - set(DATASETS):
        parser.error(f"--datasets: choose from {', '.join(DATASETS)}")
    if args.lpips_backbone is not None and not args.lpips_backbone.is_file():
        parser.error(f"--lpips-backbone {args.lpips_backbone}: no such file")

    import warnings

    import torch

    from histosynth.atomic import write_text_atomic

    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")  # two adapters on purpose
    torch.set_num_threads(args.threads)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    def stage_timer(timings_file: Path) -> Callable:
        """A stage runner that keeps each stage's time in `timings_file` (one per dataset, so datasets may run in
        parallel processes). A resumed stage that only reads its finished output keeps the time of the run that
        did the work (unless it took longer than a second)."""
        timings: dict[str, float] = json.loads(timings_file.read_text()) if timings_file.is_file() else {}

        def stage(name: str, fn, *a, **k):
            start = time.perf_counter()
            print(f"[dual-lora-compare] {name} ...", flush=True)
            value = fn(*a, **k)
            seconds = time.perf_counter() - start
            if seconds > 1 or name not in timings:
                timings[name] = round(seconds, 1)
                write_text_atomic(timings_file, json.dumps(timings, indent=1) + "\n")
            return value

        stage.timings = timings  # type: ignore[attr-defined]
        return stage

    results, timings = {}, {}
    for d in datasets:
        (args.out / d).mkdir(parents=True, exist_ok=True)
        stage = stage_timer(args.out / d / "timings.json")
        results[d] = run_dataset(d, args, s, stage)
        timings.update(stage.timings)
    picture = draw_examples({d: r.pop("figure_paths") for d, r in results.items()}, args.out / "examples.png")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, args.figure)
    compute = {"threads": args.threads, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "cpu_count": os.cpu_count(),
               "steps": s["steps"], "batch": args.batch, "resolution": RESOLUTION, "sampler": args.sampler,
               "sample_steps": s["sample_steps"], "total_stage_seconds": round(sum(timings.values()), 1)}
    masks = next(iter(results.values()))["masks"]
    header = (f"Every model: demo preset at {RESOLUTION} px, {s['steps']} training steps at batch {args.batch} "
              f"(dual-lora alternates tasks: {s['steps'] // 2} steps per adapter), sampler {args.sampler} with "
              f"{s['sample_steps']} steps, seed {args.seed}; {args.threads} torch thread(s), OMP_NUM_THREADS="
              f"{compute['OMP_NUM_THREADS']}. Masks: {masks}. Completion CIs: percentile bootstrap of the mean over "
              f"patches ({s['bootstrap']} resamples); FD/KID CIs: {s['fd_bootstrap']} bootstrap replicates. FD is biased "
              "upward at this N; read KID. Masked LPIPS: " + ("run" if args.lpips_backbone else
                                                              "not run (no torchvision backbone weights offline)") + ".\n\n")
    stages = "\n".join(f"- {v:7.1f} s  {k}" for k, v in timings.items())
    report = header + "".join(dataset_report(d, r, args) for d, r in results.items()) + \
        f"Stages (seconds of the run that did the work):\n\n{stages}\n- {compute['total_stage_seconds']:7.1f} s  total\n"
    write_text_atomic(args.out / "results.json", json.dumps({"settings": s | {"seed": args.seed}, "compute": compute,
                                                             "timings": timings, "datasets": results}, indent=1,
                                                            default=str) + "\n")
    write_text_atomic(args.out / "results.md", report)
    print(report)
    print(f"[dual-lora-compare] results in {args.out}: results.md, results.json, examples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
