"""One function per recipe step kind (histosynth.recipes.kinds names them). Each reads and writes folders under
the run folder and calls the library functions the CLI verbs call (build_dataset, the pseudo-labeler, data sample,
train, generate, the suite, the card renderer, hub.publish), and returns a small JSON-able summary that the runner
stores and the final report shows. The learning-curve kinds are in curve.py; `table` is the leaderboard's
(histosynth.leaderboard.recipe_steps)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.recipes.release import check_release_scores, release_card
from histosynth.recipes.spec import Step, StepContext

SPLIT_FIELDS = ("by", "test_fraction", "seed", "region_size")


def _counts(summary: Any) -> dict[str, int]:
    return {split: int(n) for split, n in summary.split_sizes.items()}


def run_source(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Read a registered source (reader + options) into a dataset folder, as `histosynth data build` does; with
    `split` ({by, test_fraction, seed, region_size}) the folder holds train and test splits, as `--split-by` gives."""
    from histosynth.dataset import SOURCE_OPTIONS, build_dataset

    options = dict(step.fields.get("options") or {})
    unknown = sorted(set(options) - set(SOURCE_OPTIONS))
    if unknown:
        raise InputError(f"step {step.name!r} (source) field 'options': unknown option {unknown[0]!r} "
                         f"(options: {', '.join(SOURCE_OPTIONS)})")
    split = None
    if step.fields.get("split") is not None:
        from histosynth.splits import SplitSpec

        given, where = step.fields["split"], f"step {step.name!r} (source) field 'split'"
        unknown = sorted(set(given) - set(SPLIT_FIELDS)) if isinstance(given, dict) else None
        if unknown is None or unknown:
            raise InputError(f"{where}: expected a mapping of by, test_fraction, seed, region_size, got {given!r}")
        split = SplitSpec.from_fields(given, where)
    built = build_dataset(step.fields["reader"], ctx.run / step.fields["out"], options, pseudolabel=False, split=split)
    return {"samples": _counts(built.summary)}


def run_pseudolabel(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Pseudo-label a dataset folder, as `histosynth data pseudolabel` does; options are PseudolabelConfig fields."""
    from histosynth.labels.pipeline import PseudolabelConfig, pseudolabel_dataset
    from histosynth.recipes.encoders import pseudolabel_encoder

    options = dict(step.fields.get("options") or {})
    if "ks" in options:
        options["ks"] = tuple(options["ks"])
    try:
        config = PseudolabelConfig(**options)
    except TypeError as err:
        raise InputError(f"step {step.name!r} (pseudolabel) field 'options': {err}") from None
    _, summary, _ = pseudolabel_dataset(ctx.run / step.fields["data"], ctx.run / step.fields["out"], config,
                                        ctx.run / ".recipe" / "embeddings", encoder=pseudolabel_encoder(config.encoder),
                                        progress=False)
    return {"samples": _counts(summary)}


def run_sample(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Keep the heterogeneous patches (`histosynth data sample`)."""
    from histosynth.labels.sampling import sample_dataset

    keys = ("min_frac", "max_frac", "min_tissue", "by_entropy", "seed")
    result = sample_dataset(ctx.run / step.fields["data"], ctx.run / step.fields["out"], progress=False,
                            **{k: step.fields[k] for k in keys if k in step.fields})
    if not sum(result.summary.split_sizes.values()):
        raise InputError(f"step {step.name!r} (sample): no patch of {step.fields['data']} passes the rule")
    return {"samples": _counts(result.summary)}


def run_split(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Split by slide (or region) into two dataset folders, `train` and `test`, each with one `train` split (what
    training, generation and the suite read); no slide is in both. `by: existing` takes a folder's own `train` and
    `test` splits apart (a source step's split, after a pseudolabel step fitted on its train split only)."""
    from histosynth.disk import iter_samples, read_metadata, write_dataset
    from histosynth.labels.pipeline import dataset_splits, derived_card
    from histosynth.splits import SplitSpec, choose_test_groups, group_keys

    data = ctx.run / step.fields["data"]
    meta = read_metadata(data)["histosynth"]
    if step.fields.get("by") == "existing":
        found = dataset_splits(data)
        if set(found) != {"train", "test"}:
            raise InputError(f"step {step.name!r} (split) field 'by': 'existing' needs a folder with exactly the splits "
                             f"train and test; {data} has {', '.join(sorted(found)) or 'none'}")
        parts = {"train": iter_samples(data, "train"), "test": iter_samples(data, "test")}
        how, groups = "its own train and test splits", None
    else:
        spec = SplitSpec.from_fields(step.fields, f"step {step.name!r} (split)")
        keys = group_keys(data, spec)
        test = choose_test_groups(keys, spec)
        if not test or len(test) == len(set(keys)):
            raise InputError(f"step {step.name!r} (split): {data} has {len(set(keys))} {spec.by}(s); a split needs at "
                             "least one in train and one in test")

        def rows(held_out: bool):
            return (s for s, k in zip(iter_samples(data), keys, strict=True) if (k in test) == held_out)

        parts = {"train": rows(False), "test": rows(True)}
        how, groups = spec.describe(), {"train": len(set(keys)) - len(test), "test": len(test)}
    counts = {}
    for part, rows in parts.items():
        card = derived_card(data, f"The {part} part of `{data.name}` ({how}).", f"recipe step {step.name}", [])
        summary = write_dataset({"train": rows}, ctx.run / step.fields[part], card, meta.get("tissue_schema"),
                                meta.get("nuclei_schema"))
        counts[part] = int(sum(summary.split_sizes.values()))
    return {"samples": counts, **({"groups": groups} if groups else {})}


def run_train(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Train a generator from a preset (`histosynth train`); `resume` continues the newest checkpoint in out."""
    from histosynth.generators import generator_class, load_generator

    out = ctx.run / step.fields["out"]
    cls = generator_class(step.fields["generator"])
    if ctx.resume and (out / "config.json").is_file():
        generator = load_generator(out)
    else:
        if step.fields["preset"] not in cls.presets():
            raise InputError(f"step {step.name!r} (train) field 'preset': {step.fields['generator']} has no preset "
                             f"{step.fields['preset']!r} (presets: {', '.join(cls.presets())})")
        weights = {k: v for k, v in (step.fields.get("weights") or {}).items() if v is not None}
        generator = cls.build(step.fields["preset"], **weights)
    report = generator.train(ctx.run / step.fields["data"], dict(step.fields.get("overrides") or {}), out=out, resume=ctx.resume)
    return {"steps": report.steps, "resumed_from_step": report.resumed_from_step, "patches": report.data.patches,
            "final_loss": report.final_loss, "checkpoint_hash": generator.checkpoint_hash}


def run_generate(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Generate n samples (`histosynth generate`; `task: completion` fills the conditions' held-out masks); a rerun
    after a crash reuses the finished chunks."""
    from histosynth.disk import count_samples
    from histosynth.generators.jobs import generate_dataset

    keys = ("seed", "sampler", "steps", "chunk_size", "batch_size", "task")
    if step.fields.get("task", "synthesis") not in ("synthesis", "completion"):
        raise InputError(f"step {step.name!r} (generate) field 'task': synthesis or completion, not {step.fields['task']!r}")
    out = generate_dataset(ctx.run / step.fields["checkpoint"], ctx.run / step.fields["conditions"], int(step.fields["n"]),
                           ctx.run / step.fields["out"], progress=False, **{k: step.fields[k] for k in keys if k in step.fields})
    return {"samples": {"train": count_samples(out)}, "dataset_hash": dataset_hash(out)}


def run_score(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Run the benchmark suite (histosynth.benchmark.suite) on the generated set (and on `completed`, a completion of the
    test patches' held-out masks, when given); one results file per task in out."""
    from histosynth.benchmark.suite import References, outputs_of, run_suite, selection, suite_task_names, variant

    data = ctx.run / step.fields["data"] if step.fields.get("data") else None
    completed = ctx.run / step.fields["completed"] if step.fields.get("completed") else None
    if data is None and completed is None:
        raise InputError(f"step {step.name!r} (score): give 'data' (a synthesized set), 'completed' (a completion of "
                         "the test patches' held-out masks) or both")
    conditions = ctx.run / step.fields.get("conditions", step.fields["train"])
    tasks = list(step.fields.get("tasks") or suite_task_names())
    try:
        chosen_tasks = selection(tasks)
    except InputError as err:
        raise InputError(f"step {step.name!r} (score) field 'tasks': {err}") from None
    if data is not None and "distribution" not in chosen_tasks:
        raise InputError(f"step {step.name!r} (score) field 'tasks': {tasks} (distribution always runs on a "
                         "synthesized set)")
    outputs = outputs_of(data, completed)
    chosen = variant(step.fields.get("variant", "tiny"))
    if step.fields.get("encoders"):
        chosen = replace(chosen, encoders=tuple(step.fields["encoders"]))
    refs = References(ctx.run / step.fields["train"], ctx.run / step.fields["test"], conditions)
    out = ctx.run / step.fields["out"]
    staging = out.parent / f".{out.name}-partial"
    shutil.rmtree(staging, ignore_errors=True)
    files = run_suite(outputs, refs, chosen, staging, log=ctx.log, tasks=sorted(tasks))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return {"results": sorted(p.name for p in files)}


def run_card(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Copy the generated set to out with its release card: measured counts, the benchmark block generated from
    this run's results files, the authors' figures in their own block, checkpoint and recipe hashes."""
    return release_card(ctx.recipe, step, ctx.run)


def run_publish(step: Step, ctx: StepContext) -> dict[str, Any]:
    """Publish the release folder as a version on the Hub, after checking every measured score on its card comes
    from this run's results files for exactly this data."""
    from histosynth.hub import publish

    data = ctx.run / step.fields["data"]
    check_release_scores(data, ctx.run / step.fields["scores"])
    result = publish(data, step.fields["repo"], step.fields["version"], log=ctx.log)
    return {"repo": step.fields["repo"], "version": step.fields["version"], "commit": getattr(result, "commit", None)}


def dataset_hash(folder: Path) -> str:
    """sha256 over the data files of a dataset folder (relative path + content hash of each, sorted)."""
    import hashlib

    from histosynth.hub import file_hashes

    digest = hashlib.sha256()
    for path in sorted((folder / "data").rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(folder)}\0{file_hashes(path)[0]}\n".encode())
    return digest.hexdigest()
