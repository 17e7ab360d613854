"""The label-consistency task: do generated images follow the maps they were made from?

A DeepLabv3+ (benchmark/segmenter.py) is trained on the real training patches and their tissue maps; it then
segments each generated image, and its map is scored against the map the image was conditioned on (which a
"copied" label policy stores in the row) as mIoU with a bootstrap CI over images (benchmark/label_consistency.py).
The same segmenter's mIoU on real held-out patches (`ceiling`) is recorded next to it, so a reader sees how much of
the gap is the segmenter's own. `histosynth bench label-consistency`; in the suite, for generators whose rows carry
the map they were conditioned on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from histosynth import options as opt
from histosynth.benchmark.label_consistency import dataset_arrays, label_consistency
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.tasks.arguments import chart_path, check_enough
from histosynth.benchmark.tasks.base import SPLIT, BenchmarkTask, SuiteContext
from histosynth.classes import get_schema
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.suite import Outputs

METRIC = "label_consistency_miou"


def _schema(folder: Path) -> str:
    from histosynth.disk import read_metadata

    schema = read_metadata(folder)["histosynth"].get("tissue_schema")
    if not schema:
        raise InputError(f"{folder}: no tissue schema; label consistency needs tissue maps")
    return schema


def score_label_consistency(real_train: Path | str, fake: Path | str, real_test: Path | str | None = None,
                            resolution: int = 64, steps: int = 300, seed: int = 0, bootstrap: int = 200,
                            split: str = "train", weights: str | Path | None = None,
                            pretrained: bool = True, cache: Path | None = None) -> BenchmarkRun:
    """Label-consistency mIoU of `fake` (images + the maps they were conditioned on), with the segmenter trained
    on `real_train`; with `real_test`, the segmenter's own mIoU on real held-out patches as the ceiling row. With
    `cache`, the segmenter trained on these patches with these settings is trained once (train_segmenter)."""
    import torch

    from histosynth.benchmark.segmenter import train_segmenter
    from histosynth.benchmark.subjects import subject_of

    start = time.perf_counter()
    real_train, fake = Path(real_train), Path(fake)
    schema = _schema(real_train)
    if _schema(fake) != schema:
        raise InputError(f"{fake}: tissue schema {_schema(fake)!r} differs from the training set's {schema!r}")
    num_classes = get_schema(schema).num_classes
    images, maps = dataset_arrays(real_train, resolution, split=split)
    segmenter = train_segmenter(images, maps, num_classes, steps=steps, seed=seed, weights=weights,
                                pretrained=pretrained, cache=cache)
    scored = {"fake": fake} | ({"real-test": Path(real_test)} if real_test is not None else {})
    results, refs = [], {"real": _ref(real_train, split, len(images))}
    for role, folder in scored.items():
        test_images, test_maps = dataset_arrays(folder, resolution, split=split)
        if test_maps is None:
            raise InputError(f"{folder}: no tissue maps to compare the generated images with")
        score = label_consistency(segmenter.predict(test_images), test_maps, num_classes, bootstrap, seed=seed)
        refs[role] = _ref(folder, split, len(test_images))
        has_ci = bool(np.isfinite(score.ci_low))
        extra = {"per_class_iou": {str(k): v for k, v in score.per_class.items()},
                 "role": "ceiling (real held-out)" if role == "real-test" else "generated"}
        if not np.isfinite(score.miou):
            extra["undefined"] = "no foreground class present in the reference maps"
        results.append(MetricResult(METRIC, float(score.miou) if np.isfinite(score.miou) else None,
                                    ci_low=float(score.ci_low) if has_ci else None,
                                    ci_high=float(score.ci_high) if has_ci else None,
                                    ci_level=score.confidence if has_ci else None, n_real=len(images),
                                    n_fake=len(test_images), subject=role, extra=extra))
    subjects = {role: subject_of(folder, split, refs[role]) for role, folder in scored.items()}
    return BenchmarkRun(task="label-consistency", results=results, data=refs, subjects=subjects,
                        settings={"resolution": resolution, "steps": steps, "seed": seed, "bootstrap": bootstrap,
                                  "schema": schema, "split": split, "threads": torch.get_num_threads(),
                                  "segmenter": "DeepLabv3+ (smp), tu-tf_efficientnet_lite0 encoder"
                                               + (" with the effnet-lite0 ImageNet weights" if pretrained else
                                                  ", random init")},
                        wall_time_s=time.perf_counter() - start)


def _ref(folder: Path, split: str, n: int) -> DataRef:
    from histosynth.benchmark.features import scan_rows

    return DataRef(folder.name, str(folder), scan_rows(folder, split).content_hash, n)


class LabelConsistencyTask(BenchmarkTask):
    """`histosynth bench label-consistency`; in the suite, with the segmenter kept in the reference cache."""

    name = "label-consistency"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train", type=opt.existing_folder, required=True,
                            help="real training patches with tissue maps: the segmenter learns from them")
        parser.add_argument("--fake", type=opt.existing_folder, required=True,
                            help="generated patches with the maps they were conditioned on")
        parser.add_argument("--test", type=opt.existing_folder,
                            help="real held-out patches: the segmenter's own mIoU on them is the ceiling row")
        parser.add_argument("--resolution", type=opt.patch_side, default=64, help="segmenter input side (default 64)")
        parser.add_argument("--steps", type=opt.steps, default=300, help="segmenter training steps (default 300)")
        parser.add_argument("--seed", type=opt.seed, default=0)
        parser.add_argument("--bootstrap", type=opt.bootstrap, default=200, help="bootstrap resamples of images")
        parser.add_argument("--split", default="train")
        parser.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")

    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        chart_path(args.out)
        for option, folder in (("--train", args.train), ("--fake", args.fake), ("--test", args.test)):
            if folder is not None:
                check_enough(folder, args.split, option, 1, "at least one is needed")
        return score_label_consistency(args.train, args.fake, real_test=args.test, resolution=args.resolution,
                                       steps=args.steps, seed=args.seed, bootstrap=args.bootstrap, split=args.split)

    def applies_to(self, outputs: "Outputs") -> str | None:
        from histosynth.benchmark.tasks.base import COMPLETION_ONLY

        if outputs.synthesized is None:
            return COMPLETION_ONLY
        return None if outputs.tissue else "outputs carry no conditioning tissue map"

    def suite_runs(self, ctx: SuiteContext) -> list[tuple[str, BenchmarkRun]]:
        chosen = ctx.variant
        run = score_label_consistency(ctx.refs.train, ctx.outputs.synthesized, real_test=ctx.refs.test,
                                      resolution=chosen.resolution, steps=chosen.segmenter_steps, seed=chosen.seed,
                                      bootstrap=chosen.bootstrap, split=SPLIT, cache=ctx.cache / "label-consistency")
        return [("label-consistency", run)]
