"""Synthetic instead of real, on the simulator: does a segmenter trained on HTD samples match
one trained on the real patches those samples were conditioned on, when both are tested on held-out slides?

The simulator's labels are exact and each seed is one slide (`sim-<seed>`), so slides are split by seed:
- real training set: `--train-slides` slides of `--per-slide` patches each; held-out test set: `--test-slides`
  other slides (no test slide is in training; `bench tstr` refuses a shared slide);
- patches are simulated directly at the generator's resolution (64 px for HTD's demo preset) at 2 um/px, the same
  128 um field of view as 256 px at 0.5 um/px, so real, synthetic and test patches share one scale;
- HTD (demo preset) trains on every real training patch (the 20-80 % heterogeneity filter off, so the generator
  sees the same data as the real row) and generates one sample per training map, conditioned on that map (its
  output carries that map as its label); the unconditional ablation (`htd-unconditional`, same preset) generates
  as many samples, labeled with the maps they were nominally given: a model trained on it learns only class
  priors, the floor;
- `histosynth bench tstr` trains DeepLabv3+ (`--seg-preset`) once per seed on each set and tests on the held-out
  slides: mean over seeds with a Student-t 95 % interval over the training seeds, and the synthetic/real mIoU
  ratio paired seed by seed;
- the picture: held-out patches, their truth, the real-trained and the HTD-trained models' predictions (first seed;
  the models are read back from `bench tstr`'s checkpoints, not trained again).

Run (about 25 min on a loaded 2-core CPU):
    .venv/bin/python perf/tstr_simulator.py --out tstr_output --figure docs/tstr_simulator.png
`--quick` runs every stage with tiny settings (a smoke test; numbers meaningless). Rerunning resumes: finished
datasets, models, generated chunks and segmenter checkpoints are reused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from histosynth.recipes.floors import label_with_nominal_maps

SIMULATOR_SCHEMA = "simulator-tissue"
TRAIN_SLIDE_SEED = 0  # training slides: seeds 0, 1, ...
TEST_SLIDE_SEED = 100  # held-out slides: seeds 100, 101, ...
QUICK = {"per_slide": 8, "htd_steps": 2, "sample_steps": 2, "seg_steps": 3, "seeds": 2}


def build_slides(seeds: list[int], per_slide: int, size: int, mpp: float, out: Path, split: str, what: str) -> Path:
    """One dataset folder (split `split`) of `per_slide` simulator patches from each slide seed."""
    from itertools import chain

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources.simulator import SimulatorSource

    if (out / "README.md").is_file():
        return out
    samples = chain.from_iterable(SimulatorSource(n=per_slide, size=size, seed=s, mpp=mpp) for s in seeds)
    card = CardInfo(f"simulator {what} slides", f"{per_slide} {size} px patches at {mpp} um/px from each of the "
                    f"simulator slides sim-{', sim-'.join(map(str, seeds))} (one seed = one slide).", license="cc0-1.0")
    write_dataset({split: samples}, out, card, total=per_slide * len(seeds))
    return out


def train_generator(name: str, data: Path, steps: int | None, out: Path) -> None:
    """Train `name` (demo preset) on every patch of `data` into `out` (skipped if a finished model is there)."""
    from histosynth.generators import build_generator

    if (out / "config.json").is_file():
        print(f"  {out} exists: reused")
        return
    generator = build_generator(name, "demo")
    config = {"heterogeneity": None} | ({"steps": steps} if steps else {})
    report = generator.train(data, config, out)
    print(f"  {name}: {report.data.patches} patches, {report.steps} steps, final loss {report.final_loss:.4f}, "
          f"{report.images_per_second:.2f} images/s")


def summary_table(run) -> str:
    """Markdown rows: training set, N, mIoU [CI], image mIoU [CI], mean Dice [CI], mIoU ratio to real [CI]."""
    cells: dict[str, dict[str, str]] = {}
    n_train: dict[str, int] = {}
    for r in run.results:
        name = r.extra["train"]
        n_train[name] = r.extra["n_train"]
        ci = f" [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else ""
        cells.setdefault(name, {})[r.metric] = "undefined" if r.value is None else f"{r.value:.3f}{ci}"
    role = {"real": " (ceiling)", "htd-unconditional": " (floor)"}
    lines = ["| training set | N train | mIoU [95% CI] | image mIoU [95% CI] | mean Dice [95% CI] | mIoU synthetic / real [95% CI] |",
             "|---|---:|---|---|---|---|"]
    for name, row in cells.items():
        lines.append(f"| {name}{role.get(name, '')} | {n_train[name]} | {row.get('miou', '')} | {row.get('image_miou', '')} "
                     f"| {row.get('mean_dice', '')} | {row.get('miou_ratio_to_real', '')} |")
    return "\n".join(lines) + "\n"


def per_class_table(run) -> str:
    """Markdown rows of the pooled per-class IoU (mean over seeds) of each training set."""
    cells: dict[str, dict[str, str]] = {}
    classes: list[str] = []
    for r in run.results:
        if r.metric.startswith("iou/"):
            cls = r.metric[4:]
            classes += [cls] if cls not in classes else []
            cells.setdefault(r.extra["train"], {})[cls] = "undefined" if r.value is None else f"{r.value:.3f}"
    lines = ["| training set | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    lines += [f"| {name} | " + " | ".join(row.get(c, "") for c in classes) + " |" for name, row in cells.items()]
    return "\n".join(lines) + "\n"


def color_maps(maps: np.ndarray) -> np.ndarray:
    """(N, H, W) class ids -> (N, H, W, 3) uint8 in the schema's palette (ignore black)."""
    from histosynth.classes import get_schema

    lut = np.zeros((256, 3), np.uint8)
    for class_id, color in get_schema(SIMULATOR_SCHEMA).palette().items():
        lut[class_id] = color
    return lut[maps]


def pick_patches(maps: np.ndarray, n: int) -> list[int]:
    """The first `n` test patches showing at least two foreground classes (fewer if there are not enough)."""
    picked = [i for i, m in enumerate(maps) if len(set(np.unique(m).tolist()) - {0, 255}) >= 2][:n]
    return picked + [i for i in range(len(maps)) if i not in picked][: n - len(picked)]


def draw_predictions(test, predictions: dict[str, np.ndarray], out: Path, n: int = 4) -> Path:
    """One row per held-out patch: image, truth, each model's prediction; a class legend below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from histosynth.atomic import atomic_file
    from histosynth.classes import get_schema

    rows = pick_patches(test.maps, n)
    columns = [("held-out image", test.images), ("truth", color_maps(test.maps))]
    columns += [(f"trained on {name}", color_maps(pred)) for name, pred in predictions.items()]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(1.45 * len(columns), 1.45 * len(rows) + 0.45),
                             squeeze=False)
    for r, index in enumerate(rows):
        for c, (title, pictures) in enumerate(columns):
            axes[r][c].imshow(pictures[index], interpolation="nearest")
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(title, fontsize=7)
    schema = get_schema(SIMULATOR_SCHEMA)
    handles = [Patch(facecolor=np.array(schema[i].color) / 255, edgecolor="0.6", label=schema[i].name) for i in range(schema.num_classes)]
    fig.legend(handles=handles, loc="lower center", ncol=schema.num_classes, fontsize=6, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=100, format="png")
    plt.close(fig)
    return out


def first_seed_predictions(trains: dict[str, Path], test_path: Path, preset: str, seg_steps: int | None, seed: int,
                           checkpoints: Path) -> tuple[object, dict[str, np.ndarray]]:
    """The test set and the seed-`seed` predictions of the models `bench tstr` trained on each of `trains`
    (read back from its checkpoints: train_model finds the finished state and does not train again)."""
    from histosynth.benchmark.downstream.data import load_set
    from histosynth.benchmark.downstream.kinds import TISSUE, predict_maps, train_config
    from histosynth.benchmark.downstream.training import train_model
    from histosynth.classes import get_schema

    test = load_set(test_path, "test", "tissue")
    config = train_config(preset, "deeplabv3plus", steps=seg_steps)
    num_classes = get_schema(test.schema).num_classes
    predictions = {}
    for name, path in trains.items():
        trained = train_model(TISSUE, load_set(path, "train", "tissue", name=name), num_classes, preset, config, seed,
                              checkpoints)
        if trained.resumed_at != config.steps:
            print(f"  warning: {name} seed {seed} was not found finished in {checkpoints}; it was trained again")
        predictions[name] = predict_maps(trained.model, test.images)
    return test, predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("tstr_output"), help="work and results folder")
    parser.add_argument("--figure", type=Path, help="also copy the prediction picture here (e.g. docs/tstr_simulator.png)")
    parser.add_argument("--train-slides", type=int, default=4, help="simulator slides (seeds) to train on (default 4)")
    parser.add_argument("--test-slides", type=int, default=2, help="held-out simulator slides (default 2)")
    parser.add_argument("--per-slide", type=int, help="patches per slide (default 64)")
    parser.add_argument("--size", type=int, default=64, help="patch side in px: the generator's resolution (default 64)")
    parser.add_argument("--mpp", type=float, default=2.0, help="um per pixel (default 2.0: 128 um fields at 64 px)")
    parser.add_argument("--htd-steps", type=int, help="HTD training steps (default: the demo preset's)")
    parser.add_argument("--sampler", default="dpm++", help="sampler (default dpm++)")
    parser.add_argument("--sample-steps", type=int, help="sampler steps (default 20)")
    parser.add_argument("--no-unconditional", action="store_true", help="skip the unconditional floor row")
    parser.add_argument("--seg-preset", default="demo", choices=["tiny", "demo"], help="DeepLabv3+ preset (default demo)")
    parser.add_argument("--seg-steps", type=int, help="segmenter training steps (default: the preset's)")
    parser.add_argument("--seeds", type=int, help="segmenter training seeds (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed and first segmenter seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="tiny settings end to end (smoke test)")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    per_slide = args.per_slide or quick.get("per_slide", 64)
    htd_steps = args.htd_steps or quick.get("htd_steps")
    sample_steps = args.sample_steps or quick.get("sample_steps", 20)
    seg_steps = args.seg_steps or quick.get("seg_steps")
    seeds = args.seeds or quick.get("seeds", 3)

    import torch

    from histosynth.atomic import write_text_atomic
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.generators.jobs import generate_dataset

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings: list[tuple[str, float]] = []

    def stage(name: str, fn, *a, **k):
        start = time.perf_counter()
        print(f"[tstr] {name} ...", flush=True)
        result = fn(*a, **k)
        timings.append((name, time.perf_counter() - start))
        return result

    train_seeds = list(range(TRAIN_SLIDE_SEED, TRAIN_SLIDE_SEED + args.train_slides))
    test_seeds = list(range(TEST_SLIDE_SEED, TEST_SLIDE_SEED + args.test_slides))
    real = stage(f"simulate {args.train_slides} training slides", build_slides, train_seeds, per_slide, args.size,
                 args.mpp, out / "real-train", "train", "training")
    test = stage(f"simulate {args.test_slides} held-out slides", build_slides, test_seeds, per_slide, args.size,
                 args.mpp, out / "real-test", "test", "held-out")
    n = per_slide * args.train_slides
    generators = ["htd"] + ([] if args.no_unconditional else ["htd-unconditional"])
    for name in generators:
        stage(f"train {name} (demo preset)", train_generator, name, real, htd_steps, out / "models" / name)
        stage(f"generate {n} patches with {name} on the training maps", generate_dataset, out / "models" / name, real,
              n, out / f"synthetic-{name}", seed=args.seed, sampler=args.sampler, steps=sample_steps, progress=False)
    trains = {"real": real, "htd": out / "synthetic-htd"}
    if not args.no_unconditional:
        trains["htd-unconditional"] = stage("label the unconditional samples with their nominal maps",
                                            label_with_nominal_maps, out / "synthetic-htd-unconditional", real,
                                            out / "synthetic-htd-unconditional-labeled")
    checkpoints = out / "seg-checkpoints"
    command = [str(Path(sys.executable).with_name("histosynth")), "bench", "tstr", "--real-train", f"{real}@train",
               *[f"--train={name}={path}@train" for name, path in trains.items() if name != "real"],
               "--test", f"{test}@test", "--preset", args.seg_preset, "--seeds", str(seeds), "--seed", str(args.seed),
               "--threads", str(args.threads), "--checkpoints", str(checkpoints), "--out", str(out / "tstr.json")]
    command += ["--steps", str(seg_steps)] if seg_steps else []
    print("[tstr] " + " ".join(command), flush=True)
    stage(f"bench tstr: DeepLabv3+ {args.seg_preset}, {seeds} seeds x {len(trains)} training sets",
          subprocess.run, command, check=True)
    run = BenchmarkRun.load(out / "tstr.json")
    test_set, predictions = stage("predictions of the first seed's real- and HTD-trained models",
                                  first_seed_predictions, {k: trains[k] for k in ("real", "htd")}, test,
                                  args.seg_preset, seg_steps, args.seed, checkpoints)
    picture = draw_predictions(test_set, predictions, out / "tstr_predictions.png")
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(picture, args.figure)
    settings = run.settings["train"]
    report = (f"Train: {n} real patches of {args.train_slides} simulator slides (sim-{train_seeds[0]}..sim-{train_seeds[-1]}) "
              f"and {n} samples of each generator conditioned on those maps; test: {test_set.ref.n} patches of "
              f"{args.test_slides} held-out slides (sim-{test_seeds[0]}..sim-{test_seeds[-1]}); {args.size} px at {args.mpp} um/px.\n"
              f"Segmenter: DeepLabv3+ `{args.seg_preset}` preset, {settings['steps']} steps of {settings['batch_size']} "
              f"crops of {min(settings['crop'], args.size - args.size % 16)} px; {seeds} training seeds; mean over seeds [95% Student-t interval over "
              "seeds]; the ratio is paired seed by seed.\n\n" + summary_table(run)
              + "\nPooled per-class IoU (mean over seeds):\n\n" + per_class_table(run)
              + "\nStages:\n\n" + "\n".join(f"- {s:7.1f} s  {name}" for name, s in timings) + "\n")
    write_text_atomic(out / "results.md", report)
    write_text_atomic(out / "timings.json", json.dumps(dict(timings), indent=1) + "\n")
    print(report)
    print(f"[tstr] results in {out}: results.md, tstr.json, tstr_predictions.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
