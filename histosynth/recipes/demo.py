"""`histosynth demo`'s pipeline: the main job on the embedded CC0 sample, end to end, scored on data it never saw.

The region is cut by rows, 70/30: the pseudo-labeler is fitted and the generators are trained and conditioned on
the training rows only; every score compares with held-out rows (no pixel shared). Stages: pseudo-labels ->
heterogeneous patches -> train HTD and its unconditional ablation (demo preset) -> generate (HTD also with its
crop channels zeroed, so copying real pixels cannot help it) -> FD and KID (effnet-lite0, bootstrap CIs) against
the held-out patches -> label consistency (a DeepLabv3+ segmenter trained on the real training patches; mIoU of
its maps of each synthetic set against the maps given) -> a report folder. Every stage's time is logged.
`run_demo(demo_settings(...))` runs it; the parts are used by perf/ scripts too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from histosynth.atomic import atomic_file, write_text_atomic
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.generators.diffusion.presets import CropConfig
    from histosynth.labels.heterogeneity import CompositionStats
    from histosynth.labels.pipeline import PseudoLabeler
    from histosynth.schema import Sample
    from histosynth.sources.embedded import EmbeddedSource

DEMO_MODELS = ("htd", "htd-unconditional")
NO_COPY = "htd-no-copy"
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
Log = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo varies (the `histosynth demo` options, the --quick ones resolved)."""

    out: Path = Path("demo_output")
    size: int = 256
    train_fraction: float = 0.7
    n: int = 64
    steps: int | None = None
    sample_steps: int = 20
    bootstrap: int = 200
    segmenter_steps: int = 150
    train_stride: int | None = None
    held_out_stride: int | None = None
    label_input_size: int | None = None
    threads: int | None = None
    sampler: str = "dpm++"
    consistency_k: int = 5
    seed: int = 0

    @property
    def strides(self) -> dict[str, int]:
        """Tile stride per part (default: a quarter of the patch size)."""
        return {"train": self.train_stride or self.size // 4, "held-out": self.held_out_stride or self.size // 4}


def demo_settings(quick: bool = False, **given: Any) -> DemoSettings:
    """DemoSettings from the given values; a value left out or None takes the --quick value (with `quick`), else
    the default."""
    chosen = {k: v for k, v in given.items() if v is not None}
    for key, default in DEFAULTS.items():
        chosen.setdefault(key, QUICK.get(key, default) if quick else default)
    return DemoSettings(**chosen)


class Stages:
    """Runs the demo's named stages: logs each as it starts and keeps its time."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.timings: list[tuple[str, float]] = []

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        self.log(f"[demo] {name} ...")
        result = fn(*args, **kwargs)
        self.timings.append((name, time.perf_counter() - start))
        return result


def run_demo(settings: DemoSettings, log: Log = print) -> Path:
    """Run the demo into `settings.out` (see the module docstring); returns the report folder."""
    import torch

    out = settings.out.resolve()
    if settings.threads:
        torch.set_num_threads(settings.threads)
    stage = Stages(log)
    labeler = _prepare_data(settings, out, stage)
    _train_and_generate(settings, out, stage)
    runs, scores, resolution = _score(settings, out, labeler, stage)
    _write_report(settings, out, runs, scores, resolution, stage)
    return out


def _prepare_data(s: DemoSettings, out: Path, stage: Stages) -> PseudoLabeler:
    """Split and pseudo-label the region, draw it, keep the heterogeneous patches of both parts."""
    from histosynth.dataset import show_dataset
    from histosynth.labels.heterogeneity import save_composition_plot
    from histosynth.labels.sampling import sample_dataset

    strides = s.strides
    labeler, parts, stats = stage(
        f"split the embedded CC0 region {s.train_fraction:.0%}/{1 - s.train_fraction:.0%} by rows; pseudo-label "
        f"(tissue phenotypes k=5,10,20) fitted on the training rows only", split_and_label, out, s.size, strides,
        s.train_fraction, s.label_input_size, out / "cache")
    for part, folder in parts.items():
        fine = stats[part][labeler.hierarchy.fine_k]
        stage.log(f"  {part}: {fine.n} tiles of {s.size} px (stride {strides[part]} px) in {folder.name}/")
    stage("draw the training tiles with their pseudo labels", show_dataset, parts["train"], out / "embedded_grid.png", 8)
    save_composition_plot({f"{part} k={k}": st for part, by_k in stats.items() for k, st in by_k.items()
                           if k == labeler.hierarchy.fine_k}, out / "embedded_composition.png",
                          title="embedded sample: pseudo tissue composition per patch")
    selected = {}
    for part, name in (("train", "heterogeneous"), ("held-out", "real-held-out-maps")):
        selected[part] = stage(f"keep the heterogeneous {part} patches (20-80% rule)", sample_dataset, parts[part],
                               out / name, progress=False)
        stage.log("\n".join(selected[part].selected_stats.lines(f"heterogeneous {part} patches")))
    if selected["train"].summary.split_sizes.get("train", 0) < 4:
        raise InputError("fewer than 4 heterogeneous training patches: too few to train on")
    return labeler


def _train_and_generate(s: DemoSettings, out: Path, stage: Stages) -> None:
    """Train each demo model on the heterogeneous training patches and generate from it; HTD also without crops."""
    from histosynth.generators import build_generator
    from histosynth.generators.jobs import generate_dataset

    for name in DEMO_MODELS:
        generator = build_generator(name, "demo")
        config = {"steps": s.steps} if s.steps else {}
        steps = config.get("steps", generator.training_steps())
        report = stage(f"train {name} (demo preset, {steps} steps)", generator.train, out / "heterogeneous", config,
                       out / "models" / name)
        stage.log(f"  {name}: {report.data.patches} patches, final loss {report.final_loss:.4f}, "
                  f"{report.images_per_second:.2f} images/s")
        stage(f"generate {s.n} patches with {name}", generate_dataset, out / "models" / name,
              out / "heterogeneous", s.n, out / f"synthetic-{name}", seed=s.seed, sampler=s.sampler,
              steps=s.sample_steps, progress=False)
    stage(f"generate {s.n} patches with htd, crop channels zeroed ({NO_COPY})", generate_without_crops,
          out / "models" / "htd", out / "heterogeneous", s.n, out / f"synthetic-{NO_COPY}", s.seed, s.sampler,
          s.sample_steps)


def _score(s: DemoSettings, out: Path, labeler: PseudoLabeler,
           stage: Stages) -> tuple[dict[str, BenchmarkRun], dict[str, Any], int]:
    """FD and KID of every set against the held-out patches, then label consistency; writes the scores files."""
    from histosynth.generators import build_generator

    resolution = build_generator("htd", "demo").preset.model.resolution
    real = stage(f"held-out real reference at {resolution} px", real_at_resolution, out / "real-held-out-maps",
                 out / "real-held-out", resolution)
    real_train = stage(f"training patches at {resolution} px (real-vs-real row)", real_at_resolution,
                       out / "heterogeneous", out / "real-train", resolution)
    runs = {}
    for name, fake in [("htd", out / "synthetic-htd"), (NO_COPY, out / f"synthetic-{NO_COPY}"),
                       ("htd-unconditional", out / "synthetic-htd-unconditional"), ("real-train", real_train)]:
        runs[name] = stage(f"FD and KID of {name} vs held-out real (effnet-lite0, bootstrap CIs)", score_with_kid_ci,
                           real, fake, s.bootstrap, s.seed, out / "cache")
        runs[name].save(out / f"scores-{name}.json")
    k = s.consistency_k
    consistency, scores = stage(f"label consistency: train the segmenter ({s.segmenter_steps} steps), "
                                f"segment every set, mIoU at k={k}", consistency_scores, out, labeler, k, resolution,
                                s.n, s.seed, s.segmenter_steps, build_generator("htd", "demo").preset.model.crops)
    write_text_atomic(out / "label_consistency.json", json.dumps(consistency, indent=1) + "\n")
    return runs, scores, resolution


def _write_report(s: DemoSettings, out: Path, runs: dict[str, BenchmarkRun], scores: dict[str, Any], resolution: int,
                  stage: Stages) -> None:
    """results.md, the FD and KID charts, the real-vs-synthetic grid; logs the headline table and the timings."""
    from histosynth.benchmark.results import markdown_table, plot_metric_bars, results_table

    headline = summary_table(runs, scores, s.consistency_k)
    table = results_table(list(runs.values()))
    n_real = next(r.n_real for r in runs["htd"].results)
    write_text_atomic(out / "results.md",
        f"Held-out real reference: {n_real} heterogeneous {s.size} px patches of the held-out rows, at {resolution} px.\n\n"
        + headline + "\nEvery number:\n\n" + markdown_table(table))
    plot_metric_bars(list(runs.values()), "fd", out / "fd.png")
    plot_metric_bars(list(runs.values()), "kid", out / "kid.png")
    draw_comparison({"real held-out": out / "real-held-out", "htd": out / "synthetic-htd",
                     "htd: conditioning map": out / "synthetic-htd", NO_COPY: out / f"synthetic-{NO_COPY}",
                     "htd-unconditional": out / "synthetic-htd-unconditional"}, out / "real_vs_synthetic.png")
    log = stage.log
    log(f"\n[demo] results against {n_real} held-out real patches (effnet-lite0; lower FD/KID is closer; "
        f"mIoU of the segmenter's maps against the conditioning maps, higher follows the map better):")
    log(headline)
    log("[demo] stages:")
    for name, seconds in stage.timings:
        log(f"  {seconds:7.1f} s  {name}")
    log(f"  {sum(sec for _, sec in stage.timings):7.1f} s  total")
    log(f"[demo] report in {out}: {', '.join(REPORT_FILES)}; datasets embedded-*/, heterogeneous/, real-*/, "
        "synthetic-*/; models/")


def real_at_resolution(source: Path, out: Path, resolution: int) -> Path:
    """The real patches resized to the generators' resolution (as the generators' training data is), so FD
    compares like with like."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset
    from histosynth.resize import resize_image
    from histosynth.schema import Sample

    def resized() -> Iterator[Sample]:
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


def part_sample(source: EmbeddedSource) -> Sample:
    """The rows of an embedded source's part as one Sample (provenance y: the part's first row)."""
    from histosynth.schema import Provenance, Sample
    from histosynth.sources.embedded import SLIDE_ID

    first, _ = source.rows()
    return Sample(np.ascontiguousarray(source.region()), Provenance(source="embedded", slide_id=SLIDE_ID, x=0, y=first))


def label_part(labeler: PseudoLabeler, source: EmbeddedSource) -> list[Sample]:
    """The tiles of one part of the embedded region with pseudo tissue maps cut from the part's own map.

    The part is labeled once as a whole (each of its cells embedded once, however much the tiles overlap) and
    every tile takes its window of that map: with tile offsets on the cell grid this is the map the labeler
    would give the tile alone, at a fraction of the cost.
    """
    from histosynth.schema import Sample

    first, _ = source.rows()
    whole = labeler.label(part_sample(source))
    size = source.size
    return [Sample(image=s.image, provenance=s.provenance, tissue=np.ascontiguousarray(
                whole.tissue[top - first : top - first + size, left : left + size]), tissue_schema=whole.tissue_schema)
            for (top, left), s in zip(source.tile_boxes(), source, strict=False)]


def split_and_label(out: Path, size: int, strides: dict[str, int], train_fraction: float, input_size: int | None,
                    cache: Path) -> tuple[PseudoLabeler, dict[str, Path], dict[str, dict[int, CompositionStats]]]:
    """Cut the region 70/30 by rows, fit the pseudo-labeler on the training rows only, label both parts.

    Returns the labeler, {part: dataset folder} and {part: {k: composition statistics}}.
    """
    import torch

    from histosynth.data_cards.card import CardInfo
    from histosynth.dataset import PSEUDOLABEL_KS
    from histosynth.disk import write_dataset
    from histosynth.labels.heterogeneity import CompositionStats, composition
    from histosynth.labels.pipeline import PseudolabelConfig, fit_pseudolabeler
    from histosynth.recipes.encoders import pseudolabel_encoder
    from histosynth.sources.embedded import PARTS, EmbeddedSource

    sources = {part: EmbeddedSource(size=size, stride=strides[part], part=part, train_fraction=train_fraction)
               for part in PARTS}
    config = PseudolabelConfig(ks=PSEUDOLABEL_KS, cell=max(16, size // 4), nuclei=False, input_size=input_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in `data build`: one thread is faster than two contended ones for these small cells
    try:
        labeler = fit_pseudolabeler([part_sample(sources["train"])], config, cache,
                                      encoder=pseudolabel_encoder(config.encoder), progress=False)
        folders, stats = {}, {}
        for part, source in sources.items():
            samples = label_part(labeler, source)
            stats[part] = {k: CompositionStats() for k in labeler.hierarchy.levels}
            for s in samples:
                for k, st in stats[part].items():
                    st.add(composition(labeler.hierarchy.coarsen(s.tissue, k)))
            folders[part] = out / f"embedded-{part}"
            card = CardInfo(f"embedded CC0 sample, {part} part", f"{len(samples)} {size} px tiles (stride {strides[part]} px) "
                            f"of the {part} rows of CMU-1-Small-Region (split at {train_fraction:.0%} of its height), with pseudo "
                            f"tissue maps from the labeler fitted on the training rows only.", license="cc0-1.0")
            write_dataset(samples, folders[part], card, labeler.tissue_schema)
    finally:
        torch.set_num_threads(threads)
    return labeler, folders, stats


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


def exclude_crop_boxes(maps: np.ndarray, seed: int, crops: CropConfig) -> np.ndarray:
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


def consistency_scores(out: Path, labeler: PseudoLabeler, k: int, resolution: int, n: int, seed: int, steps: int,
                       crops: CropConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the segmenter on the real training patches (pseudo maps at granularity k) and score every set."""
    from histosynth.benchmark.label_consistency import dataset_arrays, label_consistency
    from histosynth.benchmark.segmenter import train_segmenter

    lut = labeler.hierarchy.lut(k)
    images, maps = dataset_arrays(out / "heterogeneous", resolution, lut)
    segmenter = train_segmenter(images, maps, k + 1, steps=steps, seed=seed)
    held_images, held_maps = dataset_arrays(out / "real-held-out-maps", resolution, lut)
    from histosynth.recipes.floors import nominal_maps

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


def score_with_kid_ci(real: Path, fake: Path, bootstrap: int, seed: int, cache: Path) -> BenchmarkRun:
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


def summary_table(runs: dict[str, BenchmarkRun], consistency: dict[str, Any], k: int) -> str:
    """The demo's headline table: held-out FD and KID with their intervals, and label consistency."""
    def metric(run: BenchmarkRun, name: str) -> str:
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


