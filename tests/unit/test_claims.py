"""The claims table (histosynth.recipes.claims): verdicts read from learning-curve points, paired completion
differences against the mean-fill floor computed from the test set, and the trend at the last snapshot."""

import json

import numpy as np
import pytest

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.tasks.completion import score_completion
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.recipes.claims import (
    KID,
    LABEL_CEILING,
    LABEL_CONSISTENCY,
    TSTR_RATIO,
    evaluate,
    load_points,
    markdown,
    trend,
)
from histosynth.recipes.floors import mean_fill
from histosynth.sources import build_source


def metric(value, half=None, seeds=None):
    low, high = (value - half, value + half) if half is not None else (None, None)
    return {"value": value, "ci_low": low, "ci_high": high, "n_fake": 64, "seeds": seeds}


def write_point(run, generator, step, metrics, extra=None, seconds=None):
    folder = run / "curves" / generator / "points" / f"step-{step:08d}"
    folder.mkdir(parents=True)
    (folder / "point.json").write_text(json.dumps({"step": step, "train_seconds": seconds or step * 1.0,
                                                   "floor": False, "metrics": metrics, "extra": extra or {}}))
    return folder


def by_paper(verdicts):
    return {(claim.paper, claim.claim.split()[0]): verdict for claim, verdict in verdicts}


def test_htd_claims_are_met_or_not_by_their_goals_with_the_trend(tmp_path):
    for step, kid in ((100, 0.30), (200, 0.20), (400, 0.10)):
        write_point(tmp_path, "htd", step, {KID: metric(kid, 0.01), TSTR_RATIO: metric(0.95, 0.05, [0.9] * 5),
                                            LABEL_CONSISTENCY: metric(0.70, 0.05), LABEL_CEILING: metric(0.93, 0.02)})
        write_point(tmp_path, "htd-unconditional", step, {KID: metric(0.105, 0.01)})
    verdicts = by_paper(evaluate(tmp_path))
    realism = verdicts[("HTD", "conditioning")]
    assert realism.met is False  # 0.10 +- 0.01 and 0.105 +- 0.01 overlap
    assert realism.trend == "still improving" and realism.at == "step 400, 7 min"
    assert verdicts[("HTD", "synthetic")].met is True and "over 5 seeds" in verdicts[("HTD", "synthetic")].measured
    follows = verdicts[("HTD", "follows")]
    assert follows.met is False and "0.75x" in follows.measured  # 0.70 / 0.93
    assert verdicts[("CoSyn", "joint")].met is None and verdicts[("CoSyn", "joint")].measured == "not measured yet"
    table = markdown(list(evaluate(tmp_path)))
    assert table.count("\n") == 2 + 7 and "| HTD | follows its map |" in table


def test_trend_reads_direction_and_the_last_interval(tmp_path):
    for step, kid in ((1, 0.30), (2, 0.29), (3, 0.295)):
        write_point(tmp_path, "spade", step, {KID: metric(kid, 0.02)})
    points = load_points(tmp_path, "spade")
    assert [p.step for p in points] == [1, 2, 3]
    assert trend(points, KID, higher_is_better=False) == "flat"  # 0.005 better, within the 0.02 half-width
    assert trend(points, KID, higher_is_better=True) == "flat"
    assert trend(points[:2], KID, False) == "too few points"


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory):
    """A run folder with a test set of 12 patches and dual-lora / harp-inpaint points whose completion files were
    scored on completions of known quality of its first 8 (as the curves complete n of the test patches): the real
    pixels with light and heavy noise in the holes."""
    run = tmp_path_factory.mktemp("run")
    test = run / "data" / "sim-test"
    write_dataset(build_source("simulator", n=12, size=32, seed=5, mpp=2.0), test, CardInfo("t", "t"))
    from dataclasses import replace

    from histosynth.disk import iter_samples
    from histosynth.masks import heldout_mask

    rng = np.random.default_rng(0)
    for generator, noise in (("dual-lora", 4.0), ("harp-inpaint", 40.0)):
        rows = []
        for j, s in enumerate(list(iter_samples(test))[:8]):
            mask = heldout_mask(j, s.image.shape[:2])
            noisy = np.clip(s.image + rng.normal(0, noise, s.image.shape), 0, 255).astype(np.uint8)
            rows.append(replace(s, image=np.where(mask[..., None], noisy, s.image), completion_mask=mask))
        completed = run / "completed" / generator
        write_dataset(rows, completed, CardInfo(generator, generator))
        folder = write_point(run, generator, 100, {})
        score_completion(test, completed, modes=(), bootstrap=0, limit=8).save(folder / "results" / "completion.json")
    return run


def test_completion_claim_pairs_images_against_each_other_and_the_mean_fill_floor(completion_run):
    verdict = by_paper(evaluate(completion_run))[("Dual-LoRA", "completion")]
    assert verdict.met is True and verdict.at == "step 100, 2 min"
    psnr = verdict.numbers["psnr-masked"]
    assert psnr["vs_harp_inpaint"]["ci_low"] > 0 and psnr["vs_mean_fill"]["ci_low"] > 0
    assert psnr["vs_harp_inpaint"]["n"] == psnr["vs_mean_fill"]["n"] == 8
    floor = json.loads((completion_run / "references" / "mean-fill" / "completion.json").read_text())
    assert {r["metric"] for r in floor["results"]} >= {"psnr-masked", "ssim-masked"}
    filled = {r["metric"]: np.array(r["extra"]["per_sample"]) for r in floor["results"]}
    assert len(filled["psnr-masked"]) == 12  # the floor fills every test patch; the first 8 pair with the curves'
    lora = load_points(completion_run, "dual-lora")[-1].per_sample("psnr-masked")
    assert psnr["vs_mean_fill"]["value"] == pytest.approx(np.mean(lora - filled["psnr-masked"][:8]))


def test_mean_fill_paints_only_the_hole_with_the_known_mean(tmp_path):
    from histosynth.disk import iter_samples
    from histosynth.masks import heldout_mask

    test = tmp_path / "test"
    write_dataset(build_source("simulator", n=3, size=32, seed=1, mpp=2.0), test, CardInfo("t", "t"))
    filled = list(iter_samples(mean_fill(test, tmp_path / "filled")))
    for j, (real, done) in enumerate(zip(iter_samples(test), filled, strict=True)):
        mask = heldout_mask(j, real.image.shape[:2])
        assert (done.completion_mask == mask).all() and (done.image[~mask] == real.image[~mask]).all()
        expected = np.round(real.image[~mask].reshape(-1, 3).mean(0))
        assert (done.image[mask] == expected).all()


def test_a_ratio_goal_met_by_its_point_estimate_says_when_its_interval_crosses_the_goal(tmp_path):
    for step in (100, 200, 400):
        write_point(tmp_path, "htd", step, {TSTR_RATIO: metric(0.92, 0.05, [0.9] * 5)})
    verdict = by_paper(evaluate(tmp_path))[("HTD", "synthetic")]
    assert verdict.met is True and "(the CI reaches across 0.9)" in verdict.measured


def test_a_ratio_claim_shows_the_real_ceiling_at_the_synthetic_sets_size(tmp_path):
    for step in (100, 200, 400):
        write_point(tmp_path, "htd", step, {TSTR_RATIO: metric(0.78, 0.1, [0.8] * 5)})
    assert "ceiling" not in by_paper(evaluate(tmp_path))[("HTD", "synthetic")].measured  # no reference row yet
    reference = tmp_path / "references" / "real-heldout"
    reference.mkdir(parents=True)
    data = {"train:synthetic": DataRef("real-heldout", "/h", "sha256:aa", 64), "test": DataRef("test", "/t", "sha256:bb", 96)}
    BenchmarkRun("tstr", [MetricResult("miou_ratio_to_real", 0.93, None, 0.89, 0.97, 0.95, subject="train:synthetic")],
                 data, settings={"model": "deeplabv3plus"}).save(reference / "tstr-seg.json")
    verdict = by_paper(evaluate(tmp_path))[("HTD", "synthetic")]
    assert "real patches of the same maps (the ceiling at this N): 0.93 [0.89, 0.97]" in verdict.measured
    assert verdict.met is False and verdict.numbers["ceiling"]["value"] == 0.93


def test_htd_and_its_ablation_are_compared_at_the_last_step_both_reached(tmp_path):
    for step, kid in ((100, 0.30), (200, 0.20), (400, 0.05)):
        write_point(tmp_path, "htd", step, {KID: metric(kid, 0.01)})
    for step in (100, 200):  # the ablation's curve stops at 200: HTD's 400 must not be compared with it
        write_point(tmp_path, "htd-unconditional", step, {KID: metric(0.19, 0.01)})
    realism = by_paper(evaluate(tmp_path))[("HTD", "conditioning")]
    assert realism.at.startswith("step 200") and realism.met is False  # 0.20 against 0.19 at step 200
    assert realism.numbers["htd"]["value"] == 0.20
