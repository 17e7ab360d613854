"""`histosynth demo`: the main job on the embedded CC0 sample, end to end, scored on data it never saw.

The region is cut by rows, 70/30: the pseudo-labeler is fitted and the generators are trained and conditioned on
the training rows only; every score compares with held-out rows (no pixel shared). Stages: pseudo-labels ->
heterogeneous patches -> train HTD and its unconditional ablation (demo preset) -> generate (HTD also with its
crop channels zeroed, so copying real pixels cannot help it) -> FD and KID (effnet-lite0, bootstrap CIs) against
the held-out patches -> label consistency (a DeepLabv3+ segmenter trained on the real training patches; mIoU of
its maps of each synthetic set against the maps given) -> a report folder. Every stage's time is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from histosynth import options as opt
from histosynth.atomic import atomic_file, write_text_atomic
from histosynth.errors import InputError

DEMO_MODELS = ("htd", "htd-unconditional")
NO_COPY = "htd-no-copy"


def real_at_resolution(source: Path, out: Path, resolution: int) -> Path:
    """The real patches resized to the generators' resolution (as the generators' training data is), so FD
    compares like with like."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset
    from histosynth.resize import resize_image
    from histosynth.schema import Sample

    def resized():
        for s in iter_samples(source):
            yield Sample(resize_image(s.image, resolution), s.provenance.__class__(**{**s.provenance.__dict__, "mpp": None}))

    write_dataset(resized(), out, CardInfo("real reference", f"{source.name} resized to {resolution} px (FD reference)"))
    return out


def draw_comparison(paths: dict[str, Path], out: Path, n: int = 6) -> Path:
    """Rows of real and synthetic patches (conditioning maps overlaid in a second row for labeled sets)."""
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
    with atomic_file(out) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)
    return out


def part_sample(source) -> Any:
    """The rows of an embedded source's part as one Sample (provenance y: the part's first row)."""
    from histosynth.schema import Provenance, Sample
    from histosynth.sources.embedded import SLIDE_ID

    first, _ = source.rows()
    return Sample(np.ascontiguousarray(source.region()), Provenance(source="embedded", slide_id=SLIDE_ID, x=0, y=first))


def label_part(labeller, source) -> list:
    """The tiles of one part of the embedded region with pseudo tissue maps cut from the part's own map.

    The part is labeled once as a whole (each of its cells embedded once, however much the tiles overlap) and
    every tile takes its window of that map: with tile offsets on the cell grid this is the map the labeler
    would give the tile alone, at a fraction of the cost.
    """
    from histosynth.schema import Sample

    first, _ = source.rows()
    whole = labeller.label(part_sample(source))
    size = source.size
    return [Sample(image=s.image, provenance=s.provenance, tissue=np.ascontiguousarray(
                whole.tissue[top - first : top - first + size, left : left + size]), tissue_schema=whole.tissue_schema)
            for (top, left), s in zip(source.tile_boxes(), source, strict=False)]


def split_and_label(out: Path, size: int, strides: dict[str, int], train_fraction: float, input_size: int | None,
                    cache: Path) -> tuple[Any, dict[str, Path], dict[str, dict[int, Any]]]:
    """Cut the region 70/30 by rows, fit the pseudo-labeler on the training rows only, label both parts.

    Returns the labeler, {part: dataset folder} and {part: {k: composition statistics}}.
    """
    import torch

    from histosynth.commands.data import PSEUDOLABEL_KS, pseudolabel_encoder
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.labels.heterogeneity import CompositionStats, composition
    from histosynth.labels.pipeline import PseudolabelConfig, fit_pseudolabeller
    from histosynth.sources.embedded import PARTS, EmbeddedSource

    sources = {part: EmbeddedSource(size=size, stride=strides[part], part=part, train_fraction=train_fraction)
               for part in PARTS}
    config = PseudolabelConfig(ks=PSEUDOLABEL_KS, cell=max(16, size // 4), nuclei=False, input_size=input_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in `data build`: one thread is faster than two contended ones for these small cells
    try:
        labeller = fit_pseudolabeller([part_sample(sources["train"])], config, cache,
                                      encoder=pseudolabel_encoder(config.encoder), progress=False)
        folders, stats = {}, {}
        for part, source in sources.items():
            samples = label_part(labeller, source)
            stats[part] = {k: CompositionStats() for k in labeller.hierarchy.levels}
            for s in samples:
                for k, st in stats[part].items():
                    st.add(composition(labeller.hierarchy.coarsen(s.tissue, k)))
            folders[part] = out / f"embedded-{part}"
            card = CardInfo(f"embedded CC0 sample, {part} part", f"{len(samples)} {size} px tiles (stride {strides[part]} px) "
                            f"of the {part} rows of CMU-1-Small-Region (split at {train_fraction:.0%} of its height), with pseudo "
                            f"tissue maps from the labeler fitted on the training rows only.", license="cc0-1.0")
            write_dataset(samples, folders[part], card, labeller.tissue_schema)
    finally:
        torch.set_num_threads(threads)
    return labeller, folders, stats


def generate_without_crops(checkpoint: Path, conditions: Path, n: int, out: Path, seed: int, sampler: str,
                           steps: int | None) -> Path:
    """HTD's samples for the same conditions and seeds as `generate_dataset`, with every crop channel left zero
    (placement "none"): the map alone conditions the model, so no real pixel can be pasted into its output."""
    from dataclasses import replace

    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.generators import load_generator
    from histosynth.generators.base import derive_seed
    from histosynth.generators.jobs import ConditionReader

    gen = load_generator(checkpoint)
    gen.update_condition(crops=replace(gen.preset.model.crops, placement="none"))
    reader = ConditionReader(conditions)
    samples = gen.sample([reader[i % len(reader)] for i in range(n)], [derive_seed(seed, i) for i in range(n)],
                         sampler=sampler, steps=steps)
    card = CardInfo(f"histosynth {gen.meta.name} synthetic patches, no crops",
                    f"{n} patches of `{gen.meta.name}` conditioned on the tissue maps of {conditions.name} with its crop "
                    "channels zeroed (no real pixels given to the model).", license="cc0-1.0")
    write_dataset(samples, out, card, samples[0].tissue_schema if samples else None)
    return out


def exclude_crop_boxes(maps: np.ndarray, seed: int, crops) -> np.ndarray:
    """`maps` with the boxes HTD pasted real crops into set to 255 (ignored): the same boxes as at sampling
    (drawn from each sample's seed; see HTDGenerator._sample_batch)."""
    from histosynth.classes import IGNORE_ID
    from histosynth.generators.base import derive_seed
    from histosynth.generators.conditioning.crops import crop_boxes
    from histosynth.generators.diffusion.generator import CROP_STREAM

    out = maps.copy()
    for i, m in enumerate(out):
        rng = np.random.default_rng(np.random.SeedSequence([derive_seed(seed, i), CROP_STREAM]))
        for r, c, d in crop_boxes(maps[i], rng, crops).values():
            m[r : r + d, c : c + d] = IGNORE_ID
    return out


def consistency_scores(out: Path, labeller, k: int, resolution: int, n: int, seed: int, steps: int,
                       crops) -> tuple[dict[str, Any], Any]:
    """Train the segmenter on the real training patches (pseudo maps at granularity k) and score every set."""
    from histosynth.benchmark.label_consistency import dataset_arrays, label_consistency
    from histosynth.benchmark.segmenter import train_segmenter

    lut = labeller.hierarchy.lut(k)
    images, maps = dataset_arrays(out / "heterogeneous", resolution, lut)
    segmenter = train_segmenter(images, maps, k + 1, steps=steps, seed=seed)
    held_images, held_maps = dataset_arrays(out / "real-held-out-maps", resolution, lut)
    from histosynth.leaderboard.floors import nominal_maps

    given = lut[nominal_maps(out / "heterogeneous", n, resolution)]
    sets = {
        "real held-out (ceiling)": (held_images, held_maps),
        "htd (crop boxes excluded)": (dataset_arrays(out / "synthetic-htd", resolution)[0],
                                      exclude_crop_boxes(given, seed, crops)),
        NO_COPY: (dataset_arrays(out / f"synthetic-{NO_COPY}", resolution)[0], given),
        "htd-unconditional (floor)": (dataset_arrays(out / "synthetic-htd-unconditional", resolution)[0], given),
    }
    scores = {name: label_consistency(segmenter.predict(im), ref, k + 1, seed=seed) for name, (im, ref) in sets.items()}
    report = {"granularity_k": k, "classes": k + 1, "segmenter": {
        "model": "DeepLabV3Plus (segmentation-models-pytorch), encoder tu-tf_efficientnet_lite0 with the effnet-lite0 "
                 "ImageNet weights", "trained_on": f"{len(images)} real training patches at {resolution} px",
        "steps": steps, "first_loss": segmenter.losses[0], "final_loss": float(np.mean(segmenter.losses[-10:])),
        "seconds": round(segmenter.seconds, 1)}, "scores": {name: s.to_dict() for name, s in scores.items()}}
    return report, scores


def score_with_kid_ci(real: Path, fake: Path, bootstrap: int, seed: int, cache: Path) -> Any:
    """`score_distribution` (FD with its interval, KID) under effnet-lite0, with a bootstrap interval added to KID
    (histosynth.benchmark.kid_interval) from the same cached features."""
    from histosynth.benchmark.features import extract_features
    from histosynth.benchmark.kid_interval import kid_bootstrap_ci
    from histosynth.benchmark.tasks.distribution import score_distribution

    run = score_distribution(real, fake, ["effnet-lite0"], ["fd", "kid"], bootstrap=bootstrap, seed=seed,
                             cache_dir=cache, progress=False)
    features = [extract_features(path, ["effnet-lite0"], cache_dir=cache, progress=False).encoders["effnet-lite0"].features
                for path in (real, fake)]
    whole, low, high = kid_bootstrap_ci(features[0], features[1], n_boot=bootstrap, seed=seed)
    for r in run.results:
        if r.metric == "kid":
            r.ci_low, r.ci_high, r.ci_level = low, high, 0.95
            r.extra.update(interval="percentile bootstrap of the whole-set unbiased MMD² (pairs of copies left out)",
                           whole_set_mmd2=whole, bootstrap=bootstrap)
    return run


def summary_table(runs: dict[str, Any], consistency: dict[str, Any], k: int) -> str:
    """The demo's headline table: held-out FD and KID with their intervals, and label consistency."""
    def metric(run, name: str) -> str:
        r = next((r for r in run.results if r.metric == name), None)
        if r is None:
            return "n/a"
        scale = 1e3 if name == "kid" else 1.0
        text = f"{r.value * scale:.2f}"
        if r.ci_low is not None and r.ci_high is not None:
            return text + f" [{r.ci_low * scale:.2f}, {r.ci_high * scale:.2f}]"
        if r.extra.get("std"):  # no interval from the runner: the spread over KID subsets, when there are several
            return text + f" ± {r.extra['std'] * scale:.2f} (subset sd)"
        return text + " (no interval)"

    def iou(name: str | None) -> str:
        s = consistency.get(name) if name else None
        return "" if s is None else f"{s.miou:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]"

    lookup = {"htd": "htd (crop boxes excluded)", NO_COPY: NO_COPY, "htd-unconditional": "htd-unconditional (floor)",
              "real-train": None}
    lines = [f"| set vs held-out real | N fake | FD [95% CI] | KID x 1e3 [95% CI] | mIoU k={k} [95% CI] |",
             "|---|---:|---|---|---|"]
    for name, run in runs.items():
        n_fake = next((r.n_fake for r in run.results), "")
        lines.append(f"| {name} | {n_fake} | {metric(run, 'fd')} | {metric(run, 'kid')} | {iou(lookup.get(name))} |")
    lines.append(f"| real held-out (segmenter ceiling) | | | | {iou('real held-out (ceiling)')} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import torch

    from histosynth.benchmark.results import markdown_table, plot_metric_bars, results_table
    from histosynth.commands.data import show_dataset
    from histosynth.generators import build_generator
    from histosynth.generators.jobs import generate_dataset
    from histosynth.labels.heterogeneity import save_composition_plot
    from histosynth.labels.sampling import sample_dataset

    quick = QUICK if args.quick else {}
    setting = {key: getattr(args, key) if getattr(args, key) is not None else quick.get(key, default)
               for key, default in DEFAULTS.items()}
    out: Path = args.out.resolve()
    timings: list[tuple[str, float]] = []
    if setting["threads"]:
        torch.set_num_threads(setting["threads"])

    def stage(name: str, fn, *a, **k):
        start = time.perf_counter()
        print(f"[demo] {name} ...", flush=True)
        result = fn(*a, **k)
        timings.append((name, time.perf_counter() - start))
        return result

    size = args.size
    strides = {"train": setting["train_stride"] or size // 4, "held-out": setting["held_out_stride"] or size // 4}
    labeller, parts, stats = stage(
        f"split the embedded CC0 region {args.train_fraction:.0%}/{1 - args.train_fraction:.0%} by rows; pseudo-label "
        f"(tissue phenotypes k=5,10,20) fitted on the training rows only", split_and_label, out, size, strides,
        args.train_fraction, setting["label_input_size"], out / "cache")
    for part, folder in parts.items():
        fine = stats[part][labeller.hierarchy.fine_k]
        print(f"  {part}: {fine.n} tiles of {size} px (stride {strides[part]} px) in {folder.name}/")
    stage("draw the training tiles with their pseudo labels", show_dataset, parts["train"], out / "embedded_grid.png", 8)
    save_composition_plot({f"{part} k={k}": s for part, by_k in stats.items() for k, s in by_k.items()
                           if k == labeller.hierarchy.fine_k}, out / "embedded_composition.png",
                          title="embedded sample: pseudo tissue composition per patch")

    selected = {}
    for part, name in (("train", "heterogeneous"), ("held-out", "real-held-out-maps")):
        selected[part] = stage(f"keep the heterogeneous {part} patches (20-80% rule)", sample_dataset, parts[part],
                               out / name, progress=False)
        print("\n".join(selected[part].selected_stats.lines(f"heterogeneous {part} patches")))
    if selected["train"].summary.split_sizes.get("train", 0) < 4:
        raise InputError("fewer than 4 heterogeneous training patches: too few to train on")

    reports = {}
    for name in DEMO_MODELS:
        generator = build_generator(name, "demo")
        config = {"steps": setting["steps"]} if setting["steps"] else {}
        steps = config.get("steps", generator.training_steps())
        reports[name] = stage(f"train {name} (demo preset, {steps} steps)", generator.train, out / "heterogeneous",
                              config, out / "models" / name)
        print(f"  {name}: {reports[name].data.patches} patches, final loss {reports[name].final_loss:.4f}, "
              f"{reports[name].images_per_second:.2f} images/s")
        stage(f"generate {setting['n']} patches with {name}", generate_dataset, out / "models" / name,
              out / "heterogeneous", setting["n"], out / f"synthetic-{name}", seed=args.seed, sampler=args.sampler,
              steps=setting["sample_steps"], progress=False)
    stage(f"generate {setting['n']} patches with htd, crop channels zeroed ({NO_COPY})", generate_without_crops,
          out / "models" / "htd", out / "heterogeneous", setting["n"], out / f"synthetic-{NO_COPY}", args.seed,
          args.sampler, setting["sample_steps"])

    resolution = build_generator("htd", "demo").preset.model.resolution
    real = stage(f"held-out real reference at {resolution} px", real_at_resolution, out / "real-held-out-maps",
                 out / "real-held-out", resolution)
    real_train = stage(f"training patches at {resolution} px (real-vs-real row)", real_at_resolution,
                       out / "heterogeneous", out / "real-train", resolution)
    runs = {}
    for name, fake in [("htd", out / "synthetic-htd"), (NO_COPY, out / f"synthetic-{NO_COPY}"),
                       ("htd-unconditional", out / "synthetic-htd-unconditional"), ("real-train", real_train)]:
        runs[name] = stage(f"FD and KID of {name} vs held-out real (effnet-lite0, bootstrap CIs)", score_with_kid_ci,
                           real, fake, setting["bootstrap"], args.seed, out / "cache")
        runs[name].save(out / f"scores-{name}.json")

    k = args.consistency_k
    consistency, scores = stage(f"label consistency: train the segmenter ({setting['segmenter_steps']} steps), "
                                f"segment every set, mIoU at k={k}", consistency_scores, out, labeller, k, resolution,
                                setting["n"], args.seed, setting["segmenter_steps"],
                                build_generator("htd", "demo").preset.model.crops)
    write_text_atomic(out / "label_consistency.json", json.dumps(consistency, indent=1) + "\n")

    headline = summary_table(runs, scores, k)
    table = results_table(list(runs.values()))
    n_real = next(r.n_real for r in runs["htd"].results)
    write_text_atomic(out / "results.md",
        f"Held-out real reference: {n_real} heterogeneous {size} px patches of the held-out rows, at {resolution} px.\n\n"
        + headline + "\nEvery number:\n\n" + markdown_table(table))
    plot_metric_bars(list(runs.values()), "fd", out / "fd.png")
    plot_metric_bars(list(runs.values()), "kid", out / "kid.png")
    draw_comparison({"real held-out": real, "htd": out / "synthetic-htd", "htd: conditioning map": out / "synthetic-htd",
                     NO_COPY: out / f"synthetic-{NO_COPY}", "htd-unconditional": out / "synthetic-htd-unconditional"},
                    out / "real_vs_synthetic.png")

    print(f"\n[demo] results against {n_real} held-out real patches (effnet-lite0; lower FD/KID is closer; "
          f"mIoU of the segmenter's maps against the conditioning maps, higher follows the map better):")
    print(headline)
    print("[demo] stages:")
    for name, seconds in timings:
        print(f"  {seconds:7.1f} s  {name}")
    print(f"  {sum(s for _, s in timings):7.1f} s  total")
    print(f"[demo] report in {out}: {', '.join(REPORT_FILES)}; datasets embedded-*/, heterogeneous/, real-*/, "
          "synthetic-*/; models/")
    return 0


REPORT_FILES = ("results.md", "fd.png", "kid.png", "real_vs_synthetic.png", "embedded_grid.png",
                "embedded_composition.png", "label_consistency.json", "scores-htd.json", f"scores-{NO_COPY}.json",
                "scores-htd-unconditional.json", "scores-real-train.json")
# Settings that --quick changes (None: derived from --size, or the preset's)
DEFAULTS: dict[str, Any] = {"n": 64, "steps": None, "sample_steps": 20, "bootstrap": 200, "segmenter_steps": 150,
                            "train_stride": None, "held_out_stride": None, "label_input_size": None, "threads": None}
# Quick: one thread, since for tensors this small a second thread gains little on an idle machine and, measured on
# a shared 2-core one, makes every step several times slower.
QUICK: dict[str, Any] = {"n": 8, "steps": 2, "sample_steps": 2, "bootstrap": 20, "segmenter_steps": 3,
                         "train_stride": 128, "held_out_stride": 128, "label_input_size": 64, "threads": 1}


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("demo", help="run the main job on the embedded sample",
                              description="The main job on the embedded CC0 H&E sample, scored on held-out rows: "
                              "pseudo-labels fitted on the training rows, heterogeneous patches, train HTD and its "
                              "unconditional ablation (demo preset), generate (HTD also with its crops switched off), "
                              "FD and KID with CIs against held-out real patches, label consistency (mIoU of a "
                              "DeepLabv3+ segmenter), and a report folder. About 10-15 min on 2 cores; --quick: a "
                              "minute or two, for smoke tests (numbers meaningless).")
    parser.add_argument("--out", type=opt.output_folder, default="demo_output", help="report folder (default demo_output/)")
    parser.add_argument("--quick", action="store_true", help="tiny settings end to end (smoke test; numbers meaningless)")
    parser.add_argument("--size", type=opt.integer(64, 2048, "a side in pixels"), default=256, help="patch size of the real tiles in pixels (default 256)")
    parser.add_argument("--train-fraction", type=opt.number(0.1, 0.9), default=0.7,
                        help="share of the region's rows used for training; the rest is held out (default 0.7)")
    parser.add_argument("--train-stride", type=opt.integer(1, 2048, "a stride in pixels"), help="tile stride in the training rows (default size/4)")
    parser.add_argument("--held-out-stride", type=opt.integer(1, 2048, "a stride in pixels"), help="tile stride in the held-out rows (default size/4)")
    parser.add_argument("--label-input-size", type=opt.patch_side,
                        help="encoder input side for the pseudo-labeler's cells (default: the encoder's own)")
    parser.add_argument("--n", type=opt.count, help="synthetic patches per model (default 64)")
    parser.add_argument("--steps", type=opt.steps, help="training steps per model (default: the demo preset's)")
    parser.add_argument("--sampler", default="dpm++", help="sampler for generation (default dpm++)")
    parser.add_argument("--sample-steps", type=opt.steps, help="sampler steps (default 20)")
    parser.add_argument("--bootstrap", type=opt.bootstrap, help="bootstrap replicates for the FD interval (default 200)")
    parser.add_argument("--segmenter-steps", type=opt.steps, help="training steps of the label-consistency segmenter (default 150)")
    parser.add_argument("--consistency-k", type=opt.integer(1, 254, "a granularity"), default=5,
                        help="pseudo-tissue granularity the label consistency is scored at (default 5)")
    parser.add_argument("--threads", type=opt.threads, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=opt.seed, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)
