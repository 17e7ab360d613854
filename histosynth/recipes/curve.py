"""Learning curves as recipe steps: `curve` trains one generator once with snapshots at the given steps and scores
every snapshot with the suite; `figure` draws the curves of several `curve` steps against their reference lines.

One run, not one run per budget: the snapshots are checkpoints of the same schedule (the recipe holds the LR
constant after warm-up, so a longer budget appends to a curve instead of redrawing it). Everything resumes: the
training from its newest checkpoint, each snapshot's evaluation from its own finished files (`point.json` is
written last, atomically), so a rerun after any interruption loses at most the snapshot in flight.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.recipes.spec import Step, StepContext

POINT = "point.json"
CURVE = "curve.json"


def run_curve(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Train with snapshots, then generate from and score each snapshot; writes out/curve.json (see module doc)."""
    fields = step.fields
    out = ctx.run / fields["out"]
    snapshots = sorted({int(s) for s in fields["snapshots"]})
    overrides = dict(fields.get("overrides") or {})
    total = int(fields["steps"])
    if "steps" in overrides or not snapshots or snapshots[0] < 1 or total < snapshots[-1]:
        raise InputError(f"step {step.name!r} (curve): snapshots must be steps in [1, steps = {total}] (and the step "
                         f"count is the field `steps`, not an override), got {fields['snapshots']}")
    overrides.update(steps=total, snapshot_steps=tuple(snapshots), progress=False)
    trained = _train(step, ctx, out / "model", overrides, total)
    points = []
    for snapshot in snapshots:
        points.append(_evaluate(step, ctx, out, snapshot))
        ctx.log(f"  {step.name}: step {snapshot} scored")
    curve = {"generator": fields["generator"], "preset": fields["preset"], "overrides": {k: v for k, v in overrides.items()
                                                                                      if k != "snapshot_steps"},
             "train": trained, "points": points}
    from histosynth.atomic import write_text_atomic

    write_text_atomic(out / CURVE, json.dumps(curve, indent=1, default=str) + "\n")
    return {"snapshots": len(points), "steps": total, "train_minutes": round(trained["seconds"] / 60, 1)}


def _train(step: Step, ctx: StepContext, model: Path, overrides: dict[str, Any], total: int) -> dict[str, Any]:
    """Train (or continue) to `total` steps; a finished model folder with every snapshot is left as it is."""
    from histosynth.generators import generator_class, load_generator
    from histosynth.generators.base import read_json_file
    from histosynth.generators.training import CHECKPOINT_PREFIX, SNAPSHOT_DIR

    fields = step.fields
    wanted = [model / SNAPSHOT_DIR / f"{CHECKPOINT_PREFIX}{s:08d}" for s in overrides["snapshot_steps"]]
    config = model / "config.json"
    if config.is_file() and all((w / "config.json").is_file() for w in wanted):
        report = read_json_file(config).get("training") or {}
        if int(report.get("steps") or 0) >= total:
            return {"steps": report.get("steps"), "seconds": report.get("seconds") or 0.0, "speed": (report.get("extra") or {}).get("speed")}
    cls = generator_class(fields["generator"])
    if fields["preset"] not in cls.presets():
        raise InputError(f"step {step.name!r} (curve) field 'preset': {fields['generator']} has no preset "
                         f"{fields['preset']!r} (presets: {', '.join(cls.presets())})")
    generator = load_generator(model) if config.is_file() else cls.build(fields["preset"])
    report = generator.train(ctx.run / fields["data"], overrides, out=model, resume=True)
    return {"steps": report.steps, "seconds": report.seconds, "speed": report.extra.get("speed")}


def _evaluate(step: Step, ctx: StepContext, out: Path, snapshot: int) -> dict[str, Any]:
    """Generate from snapshot `snapshot` and score it (reused when its point.json exists)."""
    from histosynth.atomic import write_text_atomic
    from histosynth.benchmark.suite import References, outputs_of, run_suite, variant
    from histosynth.generators import load_generator
    from histosynth.generators.jobs import generate_dataset
    from histosynth.generators.training import CHECKPOINT_PREFIX, SNAPSHOT_DIR

    fields = step.fields
    folder = out / "points" / f"{CHECKPOINT_PREFIX}{snapshot:08d}"
    if (folder / POINT).is_file():
        return json.loads((folder / POINT).read_text(encoding="utf-8"))
    model = out / "model" / SNAPSHOT_DIR / f"{CHECKPOINT_PREFIX}{snapshot:08d}"
    generator = load_generator(model)
    tasks = generator.meta.tasks
    options = {k: fields[k] for k in ("seed", "chunk_size") if k in fields}
    if "sampler_steps" in fields:
        options["steps"] = int(fields["sampler_steps"])
    n = int(fields["n"])
    synthesized = completed = None
    if "synthesis" in tasks:
        synthesized = generate_dataset(model, ctx.run / fields["conditions"], n, folder / "synthesized",
                                       progress=False, **options)
    if "completion" in tasks:
        completed = generate_dataset(model, ctx.run / fields["test"], n, folder / "completed", progress=False,
                                     task="completion", **options)
    floor = synthesized is not None and not generator.meta.conditioning
    if floor:  # an unconditional model: its samples with the maps they were nominally given score the floor
        from histosynth.recipes.floors import label_with_nominal_maps

        synthesized = label_with_nominal_maps(synthesized, ctx.run / fields["conditions"], folder / "nominal")
    chosen = variant(fields.get("variant", "demo"))
    refs = References(ctx.run / fields["train"], ctx.run / fields["test"], ctx.run / fields["conditions"])
    staging = folder / ".results-partial"
    shutil.rmtree(staging, ignore_errors=True)
    files = run_suite(outputs_of(synthesized, completed), refs, chosen, staging, log=lambda _: None,
                      tasks=fields.get("tasks"))
    shutil.rmtree(folder / "results", ignore_errors=True)
    staging.rename(folder / "results")
    report = generator.train_report
    extra = _extra_measures(generator, synthesized, ctx.run / fields["conditions"])
    metrics = summarize([folder / "results" / p.name for p in files])
    for name in ("centroid_share", "class_share"):
        if name in extra:
            metrics[f"extra:{name}"] = {"value": extra[name]["value"], "ci_low": extra[name]["ci"][0],
                                        "ci_high": extra[name]["ci"][1], "n_fake": n, "seeds": None}
    point = {"step": snapshot, "train_seconds": report.seconds if report else None, "floor": floor,
             "metrics": metrics, "extra": extra}
    write_text_atomic(folder / POINT, json.dumps(point, indent=1) + "\n")
    return point


def summarize(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """`task:metric[:encoder]@role` -> value and CI of every aggregate number in the results files (per-class
    details and not-run entries left out); the real rows (ceilings) are kept under their own role."""
    from histosynth.benchmark.results import BenchmarkRun

    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        run = BenchmarkRun.load(path)
        for result in run.results:
            if "/" in result.metric or result.value is None:
                continue
            role = result.subject or "fake"
            key = f"{run.task}:{result.metric}" + (f":{result.encoder}" if result.encoder else "") + f"@{role}"
            if run.task == "tstr":
                key = f"{run.task}-{run.settings.get('model')}:{result.metric}@{role}"
            found[key] = {"value": result.value, "ci_low": result.ci_low, "ci_high": result.ci_high,
                          "n_fake": result.n_fake, "seeds": (result.extra or {}).get("per_seed")}
    return found


def _extra_measures(generator: Any, synthesized: Path | None, conditions: Path) -> dict[str, Any]:
    """Measures outside the suite: for a generator that draws nuclei at given centroids (CoSyn), the share of
    conditioning centroids its outputs honor and the share whose class matches, with bootstrap CIs, and the
    class share a random class (drawn with the conditions' class frequencies) would reach."""
    if synthesized is None or generator.meta.label_policy != "generated" or "nuclei" not in generator.meta.outputs:
        return {}
    import numpy as np

    from histosynth.disk import iter_samples
    from histosynth.generators.cosyn.decode import consistency_of

    conds, outs = list(iter_samples(conditions)), list(iter_samples(synthesized))
    tolerance = float(generator.preset.model.consistency_tolerance_px)
    per = [consistency_of([conds[i % len(conds)]], [o], tolerance) for i, o in enumerate(outs)]
    honored = np.array([c.honored for c in per], float)
    same = np.array([c.same_class for c in per], float)
    totals = np.array([c.centroids for c in per], float)
    classes = np.concatenate([c.nuclei.class_ids for c in conds if c.nuclei is not None and len(c.nuclei.class_ids)])
    shares = np.bincount(classes) / max(len(classes), 1)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(totals), size=(1000, len(totals)))

    def interval(counts: np.ndarray) -> list[float]:
        values = counts[picks].sum(1) / np.maximum(totals[picks].sum(1), 1)
        return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]

    return {"centroid_share": {"value": float(honored.sum() / max(totals.sum(), 1)), "ci": interval(honored)},
            "class_share": {"value": float(same.sum() / max(totals.sum(), 1)), "ci": interval(same)},
            "class_chance": float((shares ** 2).sum() * honored.sum() / max(totals.sum(), 1)),
            "tolerance_px": tolerance}


def load_curve(folder: Path) -> dict[str, Any]:
    """A finished curve step's curve.json."""
    path = Path(folder) / CURVE
    if not path.is_file():
        raise InputError(f"{path}: no curve here (run its curve step first)")
    return json.loads(path.read_text(encoding="utf-8"))



# (panel title, point metric key, y label, higher is better, reference role keys for the ceiling line)
PANELS = (
    ("Realism: KID (effnet-lite0)", "distribution:kid:effnet-lite0@fake", "KID x 10^3", False, None),
    ("Follows its map: label consistency", "label-consistency:label_consistency_miou@fake", "mIoU",
     True, "label-consistency:label_consistency_miou@real-test"),
    ("Replaces real data: TSTR DeepLabv3+", "tstr-deeplabv3plus:miou@train:synthetic", "mIoU on real test", True,
     "tstr-deeplabv3plus:miou@train:real"),
    ("Completion: masked PSNR", "completion:psnr-masked@fake", "PSNR in the hole (dB)", True, None),
    ("Completion: masked SSIM", "completion:ssim-masked@fake", "SSIM in the hole", True, None),
    ("Joint labels: TSTR HoVer-Net PQ", "tstr-hovernet:pq@train:synthetic", "PQ on real test", True,
     "tstr-hovernet:pq@train:real"),
    ("Joint labels: nucleus class agreement", "extra:class_share", "share of conditioning centroids", True, None),
)
SCALE = {"distribution:kid:effnet-lite0@fake": 1e3}


def run_figure(step: Step, ctx: StepContext) -> dict[str, Any]:
    """out/learning_curves.png and out/curves.md: each panel a metric against training step (log scale) for every
    curve that has it, 95 % CI bands, the real-data ceiling where the results carry one and each `references`
    results folder (real-heldout, copy-nearest: named by their folders) as a labeled horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from histosynth.atomic import atomic_directory
    from histosynth.recipes.floors import mean_fill_scores

    curves = {Path(p).name: load_curve(ctx.run / p) for p in step.fields["curves"]}
    references = {Path(folder).name: summarize(sorted((ctx.run / folder).glob("*.json")))
                  for folder in step.fields.get("references") or []}
    panels = [p for p in PANELS if any(p[1] in pt["metrics"] for c in curves.values() for pt in c["points"])]
    if not panels:
        raise InputError(f"step {step.name!r} (figure): the curves hold none of the plotted metrics")
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    floor_lines: dict[str, float] = {}
    curve_order: dict[str, int] = {}  # legend label of a curve -> its place in the step's list
    completion_floor = mean_fill_scores(ctx.run) if any(p[1].startswith("completion:") for p in panels) else None
    lines = ["| curve | steps | minutes | " + " | ".join(p[0] for p in panels) + " |",
             "|---|---:|---:|" + "---|" * len(panels)]
    for index, (title, key, ylabel, _higher, ceiling) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        scale = SCALE.get(key, 1.0)
        ceiling_drawn = False
        for number, curve in enumerate(curves.values()):
            points = [p for p in curve["points"] if key in p["metrics"]]
            if not points:
                continue
            steps = [p["step"] for p in points]
            values = [p["metrics"][key]["value"] * scale for p in points]
            lows = [(p["metrics"][key]["ci_low"] if p["metrics"][key]["ci_low"] is not None else p["metrics"][key]["value"]) * scale
                    for p in points]
            highs = [(p["metrics"][key]["ci_high"] if p["metrics"][key]["ci_high"] is not None else p["metrics"][key]["value"]) * scale
                     for p in points]
            minutes = (curve["train"].get("seconds") or 0) / 60
            floor = any(p.get("floor") for p in points)
            label = f"{curve['generator']}{' (floor)' if floor else ''} ({steps[-1]} steps, {minutes:.0f} min)"
            ax.plot(steps, values, marker="o", ms=3, color=colors(number), label=label, ls="--" if floor else "-")
            curve_order.setdefault(label, number)
            ax.fill_between(steps, lows, highs, color=colors(number), alpha=0.15)
            if ceiling and ceiling in points[-1]["metrics"] and not ceiling_drawn:
                ax.axhline(points[-1]["metrics"][ceiling]["value"] * scale, color="black", ls="--", lw=1,
                           label="real data (ceiling)")
                ceiling_drawn = True
        chance = [p["extra"]["class_chance"] for c in curves.values() for p in c["points"][-1:]
                  if "class_chance" in p.get("extra", {})]
        if key == "extra:class_share" and chance:
            ax.axhline(chance[0], color="firebrick", ls="-.", lw=1, label="chance (random class)")  # mean-fill's line is gray
        if completion_floor and key.startswith("completion:") \
                and (value := _draw_mean_fill(ax, completion_floor, key, curves)) is not None:
            floor_lines[key] = value
        for ref_number, (name, metrics) in enumerate(references.items()):
            if key in metrics:
                ax.axhline(metrics[key]["value"] * scale, color=colors(9 - ref_number), ls=":", lw=1.5, label=name)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
    figure.suptitle(step.fields.get("title", "learning curves"), fontsize=11)
    legend = _shared_legend(figure, axes, len(panels), curve_order)
    for name, curve in curves.items():
        last = curve["points"][-1]
        cells = []
        for _title, key, _label, _higher, _ceiling in panels:
            metric = last["metrics"].get(key)
            cells.append("-" if metric is None else metric_cell(metric, SCALE.get(key, 1.0)))
        lines.append(f"| {name} | {last['step']} | {(curve['train'].get('seconds') or 0) / 60:.0f} | " + " | ".join(cells) + " |")
    with atomic_directory(ctx.run / step.fields["out"]) as staging:
        figure.savefig(staging / "learning_curves.png", dpi=110)
        (staging / "curves.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plt.close(figure)
    return {"panels": len(panels), "curves": len(curves), "floor_lines": [[k, v] for k, v in floor_lines.items()],
            "legend": legend}


def _shared_legend(figure: Any, axes: Any, panels: int, curve_order: dict[str, int]) -> list[str]:
    """One legend for the figure (a curve has one colour in every panel; a reference line one style), so no legend
    covers a curve or a ceiling: in the first empty panel slot, or under the panels when the grid is full. The curves
    come first, in `curve_order`, then the reference lines; returns the labels."""
    handles: dict[str, Any] = {}
    for ax in axes.flat[:panels]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    order = sorted(handles, key=lambda label: (label not in curve_order, curve_order.get(label, 0)))
    entries = {label: handles[label] for label in order}  # sorted is stable: reference lines keep their order
    spare = list(axes.flat[panels:])
    for ax in spare:
        ax.axis("off")
    if spare:
        figure.tight_layout()
        spare[0].legend(list(entries.values()), list(entries), loc="center", fontsize=8, frameon=False)
        return list(entries)
    columns = 3
    legend_rows = -(-len(entries) // columns)
    bottom = (0.25 * legend_rows + 0.2) / figure.get_figheight()
    figure.tight_layout(rect=(0, bottom, 1, 1))
    figure.legend(list(entries.values()), list(entries), loc="lower center", ncol=columns, fontsize=8, frameon=False)
    return list(entries)


def _draw_mean_fill(ax: Any, floor: dict[str, Any], key: str, curves: dict[str, dict[str, Any]]) -> float | None:
    """The completion floor (`mean_fill_scores`) as a line: mean-fill's mean over the test patches the curves
    completed (their first n); returns the value drawn (None where the curves differ in n)."""
    sizes = {p["metrics"][key].get("n_fake") for c in curves.values() for p in c["points"] if key in p["metrics"]}
    metric = key.split(":", 1)[1].split("@", 1)[0]
    if metric not in floor or len(sizes) != 1 or not isinstance(n := sizes.pop(), int) or len(floor[metric]) < n:
        return None
    value = float(floor[metric][:n].mean())
    ax.axhline(value, color="gray", ls="-.", lw=1, label="mean-fill (floor)")
    return value


def metric_cell(metric: dict[str, Any], scale: float) -> str:
    """A table cell: the scaled value and its 95 % interval in brackets, when the metric has one."""
    value = metric["value"] * scale
    if metric.get("ci_low") is None or metric.get("ci_high") is None:
        return f"{value:.3g}"
    return f"{value:.3g} [{metric['ci_low'] * scale:.3g}, {metric['ci_high'] * scale:.3g}]"
