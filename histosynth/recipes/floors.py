"""Floors of the conditional tasks: an unconditional generator's samples labeled with the maps they were nominally
given (condition i mod M, as `generate_dataset` assigns conditions). A segmenter reads nothing of those maps in the
images, so label consistency and TSTR on this set are what ignoring the condition scores. The completion floor: the
hole painted in the mean color of the known pixels (mean-fill).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def nominal_maps(conditions: Path, n: int, resolution: int) -> np.ndarray:
    """(n, R, R): the map synthetic sample i was (or, for an unconditional model, would have been) given."""
    from histosynth.generators.jobs import ConditionReader
    from histosynth.resize import resize_map

    reader = ConditionReader(conditions)
    return np.stack([resize_map(reader[i % len(reader)].tissue, resolution) for i in range(n)])


def label_with_nominal_maps(synthetic: Path, conditions: Path, out: Path) -> Path:
    """`out`: the samples of `synthetic`, each with the conditions' map it was nominally given as its tissue map
    (reused when `out` is already complete)."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, read_metadata, write_dataset

    if (out / "README.md").is_file():
        return out
    schema = read_metadata(conditions)["histosynth"].get("tissue_schema")
    samples = list(iter_samples(synthetic))
    maps = nominal_maps(conditions, len(samples), samples[0].image.shape[0])
    labeled = [replace(s, tissue=m, tissue_schema=schema) for s, m in zip(samples, maps, strict=True)]
    card = CardInfo(f"{synthetic.name} with nominal maps", f"{len(labeled)} samples of {synthetic.name}, each labeled "
                    f"with the map of {conditions.name} it was nominally given (a floor).", license="cc0-1.0")
    write_dataset(labeled, out, card, schema)
    return out


def mean_fill(test: Path, out: Path) -> Path:
    """`out`: the completion floor, each patch j of `test` with held-out mask j painted in the mean color of its
    known pixels (reused when `out` is already complete)."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, read_metadata, write_dataset
    from histosynth.masks import heldout_mask

    if (out / "README.md").is_file():
        return out
    rows = []
    for j, sample in enumerate(iter_samples(test)):
        mask = heldout_mask(j, sample.image.shape[:2])
        image = sample.image.copy()
        image[mask] = np.round(sample.image[~mask].reshape(-1, 3).mean(0)).astype(np.uint8)
        rows.append(replace(sample, image=image, completion_mask=mask, tissue=None, tissue_schema=None, nuclei=None,
                            provenance=replace(sample.provenance, generator="mean-fill")))
    card = CardInfo(f"{test.name} mean-fill", f"Held-out mask j of each patch j of {test.name} filled with the mean "
                    "color of the patch's known pixels (the completion floor).",
                    license=read_metadata(test).get("license", "other"))
    write_dataset(rows, out, card)
    return out


def mean_fill_scores(run: Path) -> dict[str, np.ndarray] | None:
    """Per-image masked PSNR and SSIM of the mean-fill floor on every patch of the run's test set (data/*-test),
    computed once and kept in the run folder; None without exactly one test set. Row j is test patch j with held-out
    mask j, so the first n rows pair with a completion of the test set's first n patches."""
    from histosynth.benchmark.tasks.completion import score_completion

    cache = Path(run) / "references" / "mean-fill" / "completion.json"
    if not cache.is_file():
        tests = sorted((Path(run) / "data").glob("*-test"))
        if len(tests) != 1:
            return None
        completed = mean_fill(tests[0], Path(run) / "references" / "mean-fill" / "completed")
        score_completion(tests[0], completed, modes=(), bootstrap=0).save(cache)
    found = json.loads(cache.read_text(encoding="utf-8"))
    return {r["metric"]: np.asarray(r["extra"]["per_sample"], np.float64) for r in found["results"]
            if r.get("value") is not None and "per_sample" in r.get("extra", {})}
