"""The equal-training-time comparison: the conditional GANs, HTD and its unconditional ablation under EQUAL training wall
time, with the real-data ceiling and the copy baseline, on two datasets split so no scored pixel was trained on.

Datasets (patches at the generators' demo resolution, 64 px):
- simulator, split by slide: training slides sim-0..3, held-out reference slides sim-100..101 (FD/KID reference,
  mIoU ceiling), and two more held-out slides sim-200..201 that the real-heldout row passes through, so the
  real-vs-real FD/KID row compares real tissue with real tissue it does not contain;
- the embedded CC0 sample, split by region as `histosynth demo` does (70/30 by rows, pseudo tissue maps fitted on
  the training rows, heterogeneous patches); it has no third part, so its real-vs-real row passes the training
  patches through (the demo's real-train row).
Every generator registered among pix2pix, spade, htd and htd-unconditional trains from its demo preset for the
same wall time (`--budget` seconds of training loop): two short calibration runs measure
its seconds per step on this machine (the difference of a 2- and a 6-step run, so set-up cancels), and the real run takes budget / (seconds per step) steps, so the LR schedule
fits the run. The actual loop time is reported beside each row (machine load moves it). Each trained generator
makes `--n` samples conditioned on the training maps (condition i mod N, as `histosynth generate` assigns them);
HTD is also sampled with its crop channels zeroed (htd-no-copy, as the demo). copy-nearest (trained on the
training set) answers the held-out reference maps.

Scores, per row: FD and KID (effnet-lite0 with its offline ImageNet weights, 95 % bootstrap intervals; the
demo's score_with_kid_ci) against the held-out reference; label-consistency mIoU (a DeepLabv3+ trained on the real
training patches segments each set; mIoU over foreground classes against the maps each sample was given; for
htd the pasted crop boxes are left out, as in the demo; the simulator's maps are exact, the embedded sample's are
pseudo maps at k = 5); memorization (share of samples whose nearest training patch is under 1/3 of the distance
to the second nearest; benchmark.memorization) in effnet-lite0 features and in pixels. Picture: the first training
maps, their real patches and every generator's output for those maps, per dataset.

Run (`--budget 150`: about 35 min on a loaded 2-core CPU at 1 thread):
    .venv/bin/python perf/gan_compare.py --out gan_output --figure docs/gan_compare.png
`--quick` runs every stage with tiny settings (a smoke test; numbers meaningless). Rerunning reuses finished
datasets, models and generated sets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GAN_AND_HTD = ("pix2pix", "spade", "htd", "htd-unconditional")
NO_COPY = "htd-no-copy"
CALIBRATION_STEPS = (2, 6)  # two short runs: seconds per step from their difference
SIMULATOR_SCHEMA = "simulator-tissue"
SIM_SLIDES = {"train": [0, 1, 2, 3], "reference": [100, 101], "real-row": [200, 201]}
QUICK = {"per_slide": 4, "budget": 4.0, "n": 8, "sample_steps": 2, "seg_steps": 3, "bootstrap": 10}


@dataclass
class Prepared:
    """One dataset's folders at the model resolution and how its maps are scored."""

    name: str
    train: Path  # training patches with maps (the generators' data; the memorization reference)
    reference: Path  # held-out real patches with maps (FD/KID reference, mIoU ceiling)
    real_row: Path  # real patches the real-heldout row passes through (not in the reference)
    real_row_note: str
    num_classes: int
    lut: np.ndarray | None = None  # fine map ids -> scored ids (the embedded sample's k = 5 level)
    notes: list[str] = field(default_factory=list)


def prepare_simulator(out: Path, per_slide: int, size: int, mpp: float) -> Prepared:
    """Simulator slides split by slide seed into training, reference and real-row groups."""
    from histosynth.classes import get_schema
    from perf.tstr_simulator import build_slides

    folders = {part: build_slides(seeds, per_slide, size, mpp, out / f"sim-{part}", "train", part)
               for part, seeds in SIM_SLIDES.items()}
    return Prepared("simulator", folders["train"], folders["reference"], folders["real-row"],
                    f"held-out slides sim-{SIM_SLIDES['real-row'][0]}..{SIM_SLIDES['real-row'][-1]}",
                    get_schema(SIMULATOR_SCHEMA).num_classes,
                    notes=[f"{per_slide} patches of {size} px at {mpp} um/px per slide; training slides "
                           f"sim-{SIM_SLIDES['train'][0]}..{SIM_SLIDES['train'][-1]}, reference slides "
                           f"sim-{SIM_SLIDES['reference'][0]}..{SIM_SLIDES['reference'][-1]}"])


def prepare_embedded(out: Path, resolution: int, quick: bool, k: int = 5) -> Prepared:
    """The demo's split of the embedded region (70/30 by rows), pseudo maps fitted on the training rows,
    heterogeneous patches, resized to the model resolution."""
    from histosynth.labels.sampling import sample_dataset
    from histosynth.recipes.demo import QUICK as DEMO_QUICK
    from histosynth.recipes.demo import split_and_label

    size = 256
    strides = {p: (DEMO_QUICK["train_stride"] if quick else size // 4) for p in ("train", "held-out")}
    labeler, parts, _ = split_and_label(out, size, strides, 0.7, DEMO_QUICK["label_input_size"] if quick else None,
                                         out / "cache")
    folders = {}
    for part, name in (("train", "heterogeneous"), ("held-out", "real-held-out-maps")):
        sample_dataset(parts[part], out / name, progress=False)
        folders[part] = at_resolution(out / name, out / f"{name}-{resolution}", resolution)
    return Prepared("embedded", folders["train"], folders["held-out"], folders["train"],
                    "the training patches (the region has no third part; as the demo's real-train row)", k + 1,
                    lut=labeler.hierarchy.lut(k),
                    notes=[f"256 px tiles every {strides['train']} px, resized to {resolution} px; pseudo maps fitted "
                           f"on the training rows, scored at k = {k}"])


def at_resolution(source: Path, out: Path, resolution: int) -> Path:
    """`source` with images (Lanczos) and maps (nearest) at `resolution`, provenance mpp rescaled."""
    from dataclasses import replace

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, read_metadata, write_dataset
    from histosynth.resize import resize_image, resize_map

    if (out / "README.md").is_file():
        return out
    samples = []
    for s in iter_samples(source):
        mpp = s.provenance.mpp * s.width / resolution if s.provenance.mpp else None
        samples.append(replace(s, image=resize_image(s.image, resolution), provenance=replace(s.provenance, mpp=mpp),
                               tissue=None if s.tissue is None else resize_map(s.tissue, resolution)))
    schema = next((s.tissue_schema for s in samples if s.tissue_schema), None)
    write_dataset(samples, out, CardInfo(f"{source.name} at {resolution} px",
                                         f"{read_metadata(source).get('pretty_name', source.name)}, resized to "
                                         f"{resolution} px.", license="cc0-1.0"), schema)
    return out


def train_for(name: str, data: Path, budget: float, out: Path) -> dict[str, Any]:
    """Train `name` (demo preset) for about `budget` seconds of training loop; returns steps and times."""
    from histosynth.generators import build_generator

    record = out / "gan_compare.json"
    if (out / "config.json").is_file() and record.is_file():
        return json.loads(record.read_text())
    config = {"heterogeneity": None}
    short, long = (build_generator(name, "demo").train(data, {**config, "steps": k}).seconds for k in CALIBRATION_STEPS)
    per_step = max(long - short, 1e-3) / (CALIBRATION_STEPS[1] - CALIBRATION_STEPS[0])  # first-step set-up cancels
    steps = max(CALIBRATION_STEPS[1], int(budget / per_step))
    generator = build_generator(name, "demo")
    report = generator.train(data, {**config, "steps": steps}, out)
    info = {"steps": steps, "calibrated_s_per_step": round(per_step, 3), "loop_s": round(report.seconds, 1),
            "final_loss": report.final_loss, "extra": report.extra, "patches": report.data.patches}
    record.write_text(json.dumps(info, indent=1, default=float) + "\n")
    print(f"  {name}: {steps} steps ({per_step:.2f} s/step calibrated) in {report.seconds:.0f} s of loop, "
          f"final loss {report.final_loss:.4f}", flush=True)
    return info


def train_reference(name: str, data: Path, out: Path) -> None:
    """A reference row (real-heldout, copy-nearest), demo preset, on `data`."""
    from histosynth.generators import build_generator

    if not (out / "config.json").is_file():
        build_generator(name, "demo").train(data, {"heterogeneity": None}, out)


def make_sets(prep: Prepared, out: Path, generators: list[str], args: argparse.Namespace) -> tuple[dict, dict]:
    """Train and sample every row; returns ({row: synthetic folder}, {row: training record})."""
    from histosynth.disk import count_samples
    from histosynth.generators import generator_meta
    from histosynth.generators.jobs import generate_dataset
    from histosynth.recipes.demo import generate_without_crops

    sets, training = {}, {}
    for name in generators:
        print(f"[{prep.name}] train {name} for {args.budget:.0f} s", flush=True)
        training[name] = train_for(name, prep.train, args.budget, out / "models" / name)
        diffusion = generator_meta(name).family == "diffusion"
        sets[name] = generate_dataset(out / "models" / name, prep.train, args.n, out / f"synthetic-{name}",
                                      seed=args.seed, sampler="dpm++" if diffusion else None,
                                      steps=args.sample_steps if diffusion else None, progress=False)
    if "htd" in generators:
        if not (out / f"synthetic-{NO_COPY}" / "README.md").is_file():
            generate_without_crops(out / "models" / "htd", prep.train, args.n, out / f"synthetic-{NO_COPY}", args.seed,
                                   "dpm++", args.sample_steps)
        sets[NO_COPY] = out / f"synthetic-{NO_COPY}"
    for name, data, conditions in (("real-heldout", prep.train, prep.real_row),
                                   ("copy-nearest", prep.train, prep.reference)):
        train_reference(name, data, out / "models" / name)
        n = count_samples(conditions, "train") if name == "real-heldout" else args.n
        sets[name] = generate_dataset(out / "models" / name, conditions, n, out / f"synthetic-{name}", seed=args.seed,
                                      progress=False)
    return sets, training


def given_maps(name: str, folder: Path, prep: Prepared, n: int, resolution: int, seed: int) -> np.ndarray:
    """The maps the samples of row `name` were given (their own copied labels, else nominal training maps;
    htd's crop boxes ignored)."""
    from histosynth.benchmark.label_consistency import dataset_arrays
    from histosynth.generators import build_generator
    from histosynth.recipes.demo import exclude_crop_boxes
    from histosynth.recipes.floors import nominal_maps

    maps = dataset_arrays(folder, resolution)[1]
    if maps is None:  # an unconditional row: the maps it was nominally given
        maps = nominal_maps(prep.train, n, resolution)
    if name == "htd":
        maps = exclude_crop_boxes(maps, seed, build_generator("htd", "demo").preset.model.crops)
    return maps


def score(prep: Prepared, sets: dict[str, Path], out: Path, args: argparse.Namespace, resolution: int) -> dict:
    """FD/KID, mIoU and memorization of every row."""
    from histosynth.benchmark.features import extract_features
    from histosynth.benchmark.label_consistency import dataset_arrays, label_consistency
    from histosynth.benchmark.memorization import memorization_ratios
    from histosynth.benchmark.segmenter import train_segmenter
    from histosynth.recipes.demo import score_with_kid_ci

    cache = out / "cache"

    def lut(maps: np.ndarray) -> np.ndarray:
        return prep.lut[maps] if prep.lut is not None else maps

    def effnet(path: Path) -> np.ndarray:
        return extract_features(path, ["effnet-lite0"], cache_dir=cache, progress=False).encoders["effnet-lite0"].features

    train_images, train_maps = dataset_arrays(prep.train, resolution)
    start = time.perf_counter()
    segmenter = train_segmenter(train_images, lut(train_maps), prep.num_classes, steps=args.seg_steps, seed=args.seed)
    seg_seconds = time.perf_counter() - start
    ref_images, ref_maps = dataset_arrays(prep.reference, resolution)
    rows: dict[str, dict[str, Any]] = {"real held-out (mIoU ceiling)": {"miou": label_consistency(
        segmenter.predict(ref_images), lut(ref_maps), prep.num_classes, seed=args.seed).to_dict(), "n": len(ref_images)}}
    train_feats, train_pixels = effnet(prep.train), train_images.reshape(len(train_images), -1).astype(np.float64)
    for name, folder in sets.items():
        print(f"[{prep.name}] score {name}", flush=True)
        run = score_with_kid_ci(prep.reference, folder, args.bootstrap, args.seed, cache)
        run.save(out / f"scores-{name}.json")
        images = dataset_arrays(folder, resolution)[0]
        row: dict[str, Any] = {"n": len(images)}
        for r in run.results:
            if r.metric in ("fd", "kid"):
                row[r.metric] = {"value": r.value, "ci_low": r.ci_low, "ci_high": r.ci_high}
        maps = given_maps(name, folder, prep, len(images), resolution, args.seed)
        row["miou"] = label_consistency(segmenter.predict(images), lut(maps), prep.num_classes, seed=args.seed).to_dict()
        if not (name == "real-heldout" and prep.real_row == prep.train):  # its own training patches: trivially 100 %
            row["memorization_effnet"] = memorization_ratios(effnet(folder), train_feats).fraction
            row["memorization_pixels"] = memorization_ratios(images.reshape(len(images), -1).astype(np.float64),
                                                             train_pixels).fraction
        rows[name] = row
    return {"rows": rows, "segmenter": {"steps": args.seg_steps, "seconds": round(seg_seconds, 1),
                                        "first_loss": segmenter.losses[0],
                                        "final_loss": float(np.mean(segmenter.losses[-10:]))}}


def table(prep: Prepared, scores: dict, training: dict) -> str:
    """Markdown rows: N, training steps and loop seconds, FD, KID x 1e3, mIoU, memorization."""
    def interval(d: dict | None, scale: float = 1.0) -> str:
        if not d or d.get("value") is None:
            return ""
        ci = f" [{d['ci_low'] * scale:.1f}, {d['ci_high'] * scale:.1f}]" if d.get("ci_low") is not None else ""
        return f"{d['value'] * scale:.1f}{ci}"

    role = {"real-heldout": f" (real vs real: {prep.real_row_note})", "htd-unconditional": " (floor)",
            "copy-nearest": " (copies of training patches)", NO_COPY: " (htd, crop channels zeroed)"}
    lines = ["| row | N | training steps (loop s) | FD [95% CI] | KID x 1e3 [95% CI] | mIoU [95% CI] | "
             "memorization effnet / pixels |", "|---|---:|---|---|---|---|---|"]
    for name, row in scores["rows"].items():
        t = training.get(name)
        steps = f"{t['steps']} ({t['loop_s']:.0f})" if t else ("as htd" if name == NO_COPY else "")
        m = row["miou"]
        memo = (f"{row['memorization_effnet']:.0%} / {row['memorization_pixels']:.0%}"
                if "memorization_effnet" in row else "")
        lines.append(f"| {name}{role.get(name, '')} | {row['n']} | {steps} | {interval(row.get('fd'))} | "
                     f"{interval(row.get('kid'), 1e3)} | {m['miou']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] | "
                     f"{memo} |")
    return "\n".join(lines) + "\n"


def picture(preps: dict[str, Prepared], sets: dict[str, dict[str, Path]], out: Path, n: int = 6) -> Path:
    """Per dataset: the first training maps, their real patches and each conditioned row's outputs for them."""
    from PIL import Image

    from histosynth.recipes.demo import draw_comparison

    parts = []
    for name, prep in preps.items():
        rows = {f"{name}: training map": prep.train, "real patch": prep.train}
        rows |= {row: path for row, path in sets[name].items() if row not in ("real-heldout", "copy-nearest")}
        parts.append(Image.open(draw_comparison(rows, out / f"compare-{name}.png", n)).convert("RGB"))
    width = max(p.width for p in parts)
    canvas = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    top = 0
    for p in parts:
        canvas.paste(p, (0, top))
        top += p.height
    canvas.quantize(256).save(out / "gan_compare.png", optimize=True)  # 256 colors: a third of the bytes
    return out / "gan_compare.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gan_output"), help="work and results folder")
    parser.add_argument("--figure", type=Path, help="also copy the picture here (e.g. docs/gan_compare.png)")
    parser.add_argument("--datasets", default="simulator,embedded", help="comma-separated: simulator, embedded")
    parser.add_argument("--budget", type=float, help="training-loop seconds per generator (default 150)")
    parser.add_argument("--per-slide", type=int, help="simulator patches per slide (default 32)")
    parser.add_argument("--n", type=int, help="samples per generator (default 64)")
    parser.add_argument("--sample-steps", type=int, help="diffusion sampler steps (dpm++, default 20)")
    parser.add_argument("--seg-steps", type=int, help="label-consistency segmenter steps (default 150, as the demo)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap replicates for the FD/KID intervals (default 200)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings end to end (smoke test)")
    args = parser.parse_args(argv)
    quick = QUICK if args.quick else {}
    for key, default in (("budget", 150.0), ("per_slide", 32), ("n", 64), ("sample_steps", 20), ("seg_steps", 150),
                         ("bootstrap", 200)):
        if getattr(args, key) is None:
            setattr(args, key, quick.get(key, default))

    import torch

    from histosynth.atomic import write_text_atomic
    from histosynth.generators import GENERATORS, build_generator

    torch.set_num_threads(args.threads)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    generators = [g for g in GAN_AND_HTD if g in GENERATORS]
    missing = [g for g in GAN_AND_HTD if g not in generators]
    resolution = build_generator("htd", "demo").preset.model.resolution
    started = time.perf_counter()
    preps, all_sets, results, sections = {}, {}, {}, []
    for dataset in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        folder = out / dataset
        t0 = time.perf_counter()
        if dataset == "simulator":
            prep = prepare_simulator(folder, args.per_slide, resolution, 2.0)
        elif dataset == "embedded":
            prep = prepare_embedded(folder, resolution, args.quick)
        else:
            raise SystemExit(f"unknown dataset {dataset!r}")
        prepare_s = time.perf_counter() - t0
        sets, training = make_sets(prep, folder, generators, args)
        scores = score(prep, sets, folder, args, resolution)
        preps[dataset], all_sets[dataset] = prep, sets
        results[dataset] = {"scores": scores, "training": training, "notes": prep.notes,
                            "prepare_s": round(prepare_s, 1), "total_s": round(time.perf_counter() - t0, 1)}
        sections.append(f"### {dataset}\n\n" + "; ".join(prep.notes) + f". Segmenter: DeepLabv3+, {args.seg_steps} "
                        f"steps on the real training patches ({scores['segmenter']['seconds']:.0f} s).\n\n"
                        + table(prep, scores, training) + f"\nStage time: {results[dataset]['total_s']:.0f} s.\n")
        write_text_atomic(out / "results.json", json.dumps(results, indent=1, default=float) + "\n")
    figure = picture(preps, all_sets, out)
    if args.figure:
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        args.figure.write_bytes(figure.read_bytes())
    header = (f"Budget: {args.budget:.0f} s of training loop per generator (demo presets, 1 torch thread = "
              f"{args.threads}), {args.n} samples each, dpm++ {args.sample_steps} steps for diffusion; FD/KID under "
              f"effnet-lite0 with {args.bootstrap} bootstrap replicates. Not registered (skipped): "
              f"{', '.join(missing) or 'none'}. Total {time.perf_counter() - started:.0f} s.\n\n")
    write_text_atomic(out / "results.md", header + "\n".join(sections))
    print(header + "\n".join(sections))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
