"""`histosynth demo --quick` end to end: the main job's report folder is complete, its numbers are finite, and
the held-out rows share no pixel with the training rows. The numbers themselves mean nothing at these settings."""

import json
import math

import torch

import histosynth.cli as cli
from histosynth.benchmark.results import BenchmarkRun
from histosynth.disk import count_samples, iter_samples
from histosynth.recipes.demo import DEMO_MODELS, NO_COPY, REPORT_FILES
from histosynth.sources.embedded import read_region, split_row


def test_quick_demo_writes_every_report_file_with_finite_numbers(tmp_path, capsys):
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    try:
        assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # --quick sets one thread for the process; later tests keep their own
    printed = capsys.readouterr().out
    assert "[demo] results against" in printed and "total" in printed

    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in (*DEMO_MODELS, NO_COPY):
        assert count_samples(out / f"synthetic-{name}", "train") == 8

    for name in ("htd", NO_COPY, "htd-unconditional", "real-train"):
        run = BenchmarkRun.load(out / f"scores-{name}.json")  # refuses non-finite values
        metrics = {r.metric: r for r in run.results}
        assert set(metrics) == {"fd", "kid"}
        assert metrics["fd"].ci_low is not None and math.isfinite(metrics["fd"].ci_low)
        assert metrics["fd"].ci_low <= metrics["fd"].ci_high
        assert metrics["kid"].ci_low is not None and metrics["kid"].ci_low <= metrics["kid"].ci_high
        assert run.data["real"].name == "real-held-out"

    consistency = json.loads((out / "label_consistency.json").read_text())
    assert consistency["granularity_k"] == 5
    scores = consistency["scores"]
    assert len(scores) == 4
    for score in scores.values():
        assert all(math.isfinite(score[key]) for key in ("miou", "ci_low", "ci_high"))
        assert 0.0 <= score["ci_low"] <= score["miou"] <= score["ci_high"] <= 1.0

    table = (out / "results.md").read_text()
    for row in ("| htd |", f"| {NO_COPY} |", "| htd-unconditional |", "| real-train |", "segmenter ceiling"):
        assert row in table

    cut = split_row(read_region()[0].shape[0], 0.7)
    assert all(s.provenance.y + s.height <= cut for s in iter_samples(out / "embedded-train"))
    held_out = list(iter_samples(out / "embedded-held-out"))
    assert held_out and all(s.provenance.y >= cut for s in held_out)
