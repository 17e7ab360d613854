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
This file runs the stages; the data, the scores and the report are in dual_lora_data.py, dual_lora_scores.py and
dual_lora_report.py beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

# perf/ is the script's folder, first on sys.path
from dual_lora_data import RESOLUTION, embedded_data, real_reference, simulator_data
from dual_lora_report import draw_examples, render_report
from dual_lora_scores import paired_difference, result, score_completion_set, score_synthesis_set

from histosynth.recipes.floors import mean_fill

DATASETS = ("simulator", "embedded")
COMPLETERS = ("dual-lora", "harp-inpaint")
PAIRS = (("dual-lora", "harp-inpaint"), ("dual-lora", "mean-fill"), ("harp-inpaint", "mean-fill"))  # paired a - b
QUICK = {"steps": 2, "n_test": 8, "sample_steps": 2, "per_slide": 8, "bootstrap": 20}


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


# ---------------------------------------------------------------------------------------------------- main


def stage_timer(timings_file: Path) -> Callable:
    """A stage runner that keeps each stage's time in `timings_file` (one per dataset, so datasets may run in
    parallel processes). A resumed stage that only reads its finished output keeps the time of the run that
    did the work (unless it took longer than a second)."""
    from histosynth.atomic import write_text_atomic

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
    write_text_atomic(args.out / "results.json", json.dumps({"settings": s | {"seed": args.seed}, "compute": compute,
                                                             "timings": timings, "datasets": results}, indent=1,
                                                            default=str) + "\n")
    report = render_report(results, s, args, timings, compute)
    write_text_atomic(args.out / "results.md", report)
    print(report)
    print(f"[dual-lora-compare] results in {args.out}: results.md, results.json, examples.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
