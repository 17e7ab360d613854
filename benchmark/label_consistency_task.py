"""The label-consistency task as a results file: do generated images follow the maps they were made from?

A DeepLabv3+ (benchmark/segmenter.py) is trained on the real training patches and their tissue maps; it then
segments each generated image, and its map is scored against the map the image was conditioned on (which a
"copied" label policy stores in the row) as mIoU with a bootstrap CI over images (benchmark/label_consistency.py).
The same segmenter's mIoU on real held-out patches (`ceiling`) is recorded next to it, so a reader sees how much of
the gap is the segmenter's own.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from histosynth.benchmark.features import scan_rows
from histosynth.benchmark.label_consistency import dataset_arrays, label_consistency
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.subjects import subject_of
from histosynth.classes import get_schema
from histosynth.disk import read_metadata
from histosynth.errors import InputError

METRIC = "label_consistency_miou"


def _schema(folder: Path) -> str:
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
    from histosynth.benchmark.segmenter import train_segmenter

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
    return DataRef(folder.name, str(folder), scan_rows(folder, split).content_hash, n)
