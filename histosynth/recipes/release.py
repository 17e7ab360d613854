"""The release card of a recipe run, and the publish rule that every score it states was measured in this run.

The card's measured block is generated from the run's results files (benchmark/results.py, schema v2) for exactly
the released data (its pixel content hash); the authors' figures from the dataset spec (data_cards/cards, entries
with `measured: false`) go to their own "reported by the authors" block. `check_release_scores` re-derives the
measured rows from the results files and refuses a card that states any other measured number.
"""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from histosynth.data_cards.model import BenchmarkScore
from histosynth.errors import InputError

_ROW = re.compile(r"^\| (?P<metric>[^|]+) \| (?P<encoder>[^|]+) \| (?P<value>[^|]+) \| (?P<ci>[^|]+) \| (?P<ref>[^|]+) \|$")


class ReleaseError(InputError):
    """A release would state a score that this run did not measure on this data; nothing is published."""


def measured_scores(scores: Path, data: Path, label: str) -> list[BenchmarkScore]:
    """The card rows of every defined metric in the results files under `scores` that scored `data` (its pixel
    content hash); a file that scored other data is an error, since its numbers would describe another set."""
    from histosynth.benchmark.features import scan_rows
    from histosynth.benchmark.results import BenchmarkRun

    files = sorted(scores.glob("*.json"))
    if not files:
        raise ReleaseError(f"{scores}: no results files; run the score step first")
    content = scan_rows(data, "train").content_hash
    rows = []
    for path in files:
        run = BenchmarkRun.load(path)
        fakes = {ref.content_hash for role, ref in run.data.items() if role in ("fake", "synthetic")}
        if fakes and content not in fakes:
            raise ReleaseError(f"{path}: scored other data than {data} (content hash {content[:12]}); rerun the score step")
        for result in run.results:
            if result.value is None:
                continue
            metric = f"{run.task} {result.metric}" + (f" [{result.subject}]" if result.subject else "")
            ci = ""
            if result.ci_low is not None and result.ci_high is not None:
                ci = f"[{result.ci_low:.4g}, {result.ci_high:.4g}] ({round(100 * (result.ci_level or 0.95))}%, bootstrap)"
            rows.append(BenchmarkScore(metric=metric, value=float(f"{result.value:.6g}"), encoder=result.encoder or "",
                                       ci=ci, reference=f"{label}, {path.name}", measured=True))
    return rows


def release_card(recipe: Any, step: Any, run: Path) -> dict[str, Any]:
    """Write step.out: the generated set's data files and its card filled with measured counts, the scores of this
    run, the checkpoint hash and the recipe hash. Returns the counts and hashes for the report."""
    from histosynth.atomic import atomic_directory
    from histosynth.data_cards.card import render_card
    from histosynth.data_cards.sets import get_set
    from histosynth.disk import content_fingerprint, iter_samples, read_metadata
    from histosynth.rows import features_for

    if not recipe.card:
        raise ReleaseError(f"{recipe.path}: a card step needs `card: NAME` (a set of data_cards/cards)")
    spec = get_set(recipe.card)
    version = step.fields.get("version") or str(spec.latest.version)
    info = spec.card_info(version)
    data = run / step.fields["data"]
    meta = read_metadata(data)["histosynth"]
    generator = meta.get("generator") or {}
    label = f"measured by `histosynth recipe run` ({recipe.name}, scale {recipe.scale}, recipe {recipe.text_hash[:12]})"
    info.benchmark = measured_scores(run / step.fields["scores"], data, label) + [b for b in info.benchmark if not b.measured]
    info.checkpoint_hash = generator.get("checkpoint_hash") or ""
    inputs = " ".join(f"--input {name}=PATH" for name in recipe.inputs)
    info.command = (f"histosynth recipe run {recipe.path.name} --scale {recipe.scale} {inputs}\n"
                    f"# recipe sha256 {recipe.text_hash}")
    tissue: Counter[int] = Counter()
    nuclei: Counter[int] = Counter()
    splits: dict[str, int] = {}
    for split in ("train",):  # generated sets have one split
        splits[split] = 0
        for sample in iter_samples(data, split):
            splits[split] += 1
            if sample.tissue is not None:
                values, counts = np.unique(sample.tissue, return_counts=True)
                tissue.update(dict(zip(values.tolist(), counts.tolist(), strict=True)))
            if sample.nuclei is not None:
                nuclei.update(sample.nuclei.class_ids.tolist())
    text = render_card(info, features_for(meta.get("tissue_schema"), meta.get("nuclei_schema")), splits,
                       meta.get("tissue_schema"), meta.get("nuclei_schema"),
                       dict(tissue) if meta.get("tissue_schema") else None,
                       dict(nuclei) if meta.get("nuclei_schema") else None,
                       fingerprint=content_fingerprint(data))  # the copied data files are these, byte for byte
    with atomic_directory(run / step.fields["out"]) as staging:
        shutil.copytree(data / "data", staging / "data")
        (staging / "README.md").write_text(text, encoding="utf-8")
    return {"version": version, "samples": splits, "checkpoint_hash": info.checkpoint_hash,
            "recipe_hash": recipe.text_hash, "scores": len([b for b in info.benchmark if b.measured]),
            "reported": len([b for b in info.benchmark if not b.measured])}


def card_scores(card_text: str) -> list[tuple[str, str, str]]:
    """(metric, encoder, value) of the rows of the card's "Measured on this set" table."""
    section = card_text.split("## Benchmark scores", 1)[-1].split("\n## ", 1)[0]
    measured = section.split("### Measured on this set", 1)
    if len(measured) < 2:
        return []
    block = measured[1].split("\n### ", 1)[0]
    rows = []
    for line in block.splitlines():
        match = _ROW.match(line.strip())
        if match and match["metric"].strip() not in ("metric", "---"):
            rows.append((match["metric"].strip(), match["encoder"].strip(), match["value"].strip()))
    return rows


def check_release_scores(release: Path, scores: Path) -> None:
    """Refuse (ReleaseError) unless every measured score on `release`'s card is one the results files under
    `scores` give for exactly this data, and the card states them all."""
    text = (release / "README.md").read_text(encoding="utf-8")
    stated = Counter(card_scores(text))
    derived = Counter((s.metric, s.encoder or "-", str(s.value)) for s in measured_scores(scores, release, ""))
    extra = stated - derived
    if extra:
        metric, encoder, value = next(iter(extra))
        raise ReleaseError(f"{release / 'README.md'}: states {metric} ({encoder}) = {value}, which no results file of "
                           f"this run ({scores}) gives for this data; refusing to publish")
    missing = derived - stated
    if missing:
        metric, encoder, value = next(iter(missing))
        raise ReleaseError(f"{release / 'README.md'}: does not state {metric} ({encoder}) = {value} from {scores}; "
                           "rerun the card step")
