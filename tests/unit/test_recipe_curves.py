"""Learning curves as recipe steps (histosynth.recipes.curve): one training run with snapshots, each
scored; a larger budget extends a finished curve (the runner resumes it, its scored snapshots are reused and the
snapshots it had are the same weights) and the figure, the claims table and the collected results (each curve's
last snapshot) are made again; a rerun changes nothing."""

import json

import pytest

from histosynth.cli import main
from histosynth.generators import weights_hash

RECIPE = """
recipe: curve-test
format: 1
scales:
  tiny: {steps: STEPS, snaps: SNAPS}
  demo: {steps: STEPS, snaps: SNAPS}
  full: {steps: STEPS, snaps: SNAPS}
steps:
  - {step: source, name: train, reader: simulator, options: {n: 12, size: 32, mpp: 2.0, seed: 0}, out: data/train}
  - {step: source, name: test, reader: simulator, options: {n: 8, size: 32, mpp: 2.0, seed: 100}, out: data/test}
  - {step: source, name: conditions, reader: simulator, options: {n: 8, size: 32, mpp: 2.0, seed: 200}, out: data/conditions}
  - {step: curve, name: curve-htd, generator: htd, preset: tiny, overrides: {lr_schedule: constant_with_warmup},
     steps: "${steps}", snapshots: "${snaps}", data: data/train, conditions: data/conditions, train: data/train,
     test: data/test, n: 8, seed: 0, sampler_steps: 2, variant: tiny, tasks: [distribution], out: curves/htd}
  - {step: figure, name: figure, curves: [curves/htd], title: test, out: figures/test}
  - {step: claims, name: claims, curves: [curves/htd], out: claims/test}
  - {step: collect, name: collect, curves: [curves/htd], out: results}
"""


def write(tmp_path, steps, snaps):
    path = tmp_path / "curve-test.yaml"
    path.write_text(RECIPE.replace("STEPS", str(steps)).replace("SNAPS", json.dumps(snaps)))
    return path


def run(tmp_path, recipe, capsys):
    assert main(["recipe", "run", str(recipe), "--scale", "tiny", "--run-dir", str(tmp_path / "run")]) == 0
    return capsys.readouterr().out


def test_a_curve_is_scored_per_snapshot_and_a_larger_budget_extends_it(tmp_path, capsys):
    run(tmp_path, write(tmp_path, 2, [1, 2]), capsys)
    curve_dir = tmp_path / "run" / "curves" / "htd"
    curve = json.loads((curve_dir / "curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [1, 2] and curve["train"]["steps"] == 2
    assert all("distribution:kid:effnet-lite0@fake" in p["metrics"] for p in curve["points"])
    points = {s: curve_dir / "points" / f"step-{s:08d}" / "point.json" for s in (1, 2, 3)}
    stamps = {s: points[s].stat().st_mtime_ns for s in (1, 2)}
    snapshot = curve_dir / "model" / "snapshots" / "step-00000002"
    weights = weights_hash(snapshot, ["controlnet", "unet"])
    figure = tmp_path / "run" / "figures" / "test" / "learning_curves.png"
    drawn = figure.stat().st_mtime_ns
    claims = json.loads((tmp_path / "run" / "claims" / "test" / "claims.json").read_text())
    assert len(claims) == 7 and all(c["met"] is None for c in claims)  # KID alone decides no claim
    assert "| HTD | follows its map |" in (tmp_path / "run" / "claims" / "test" / "claims.md").read_text()

    out = run(tmp_path, write(tmp_path, 3, [1, 2, 3]), capsys)
    assert "curve-htd (curve): resuming" in out and "figure (figure): running" in out
    assert "claims (claims): running" in out
    # the leaderboard's rows are the curves' last snapshots: now step 3's results, byte for byte
    collected = tmp_path / "run" / "results" / "htd" / "distribution-effnet-lite0.json"
    last = curve_dir / "points" / "step-00000003" / "results" / "distribution-effnet-lite0.json"
    assert collected.read_bytes() == last.read_bytes()
    assert "the last snapshot of curves/htd: step 3" in (tmp_path / "run" / "results" / "collected.md").read_text()
    assert {s: points[s].stat().st_mtime_ns for s in (1, 2)} == stamps  # scored snapshots reused
    assert weights_hash(snapshot, ["controlnet", "unet"]) == weights  # the steps run so far stay what they were
    curve = json.loads((curve_dir / "curve.json").read_text())
    assert [p["step"] for p in curve["points"]] == [1, 2, 3] and curve["train"]["steps"] == 3
    assert figure.stat().st_mtime_ns != drawn

    out = run(tmp_path, write(tmp_path, 3, [1, 2, 3]), capsys)
    assert "curve-htd (curve): cached" in out and "figure (figure): cached" in out
    assert main(["recipe", "claims", str(write(tmp_path, 3, [1, 2, 3])), "--run-dir", str(tmp_path / "run")]) == 0
    assert "| HTD | follows its map |" in capsys.readouterr().out


def test_collect_refuses_two_curves_of_one_generator_and_empty_references(tmp_path):
    from histosynth.errors import InputError
    from histosynth.recipes.collect import run_collect
    from histosynth.recipes.spec import Step, StepContext

    for name in ("a", "b"):
        points = tmp_path / "curves" / name / "points" / "step-00000002" / "results"
        points.mkdir(parents=True)
        (points / "distribution-effnet-lite0.json").write_text("{}")
        (tmp_path / "curves" / name / "curve.json").write_text(json.dumps({"generator": "htd", "points": [
            {"step": 1}, {"step": 2, "train_seconds": 120.0}]}))
    (tmp_path / "references" / "real-heldout").mkdir(parents=True)
    context = StepContext(run=tmp_path, recipe=None)
    step = Step("collect", "collect", {"curves": ["curves/a", "curves/b"], "out": "results"})
    with pytest.raises(InputError, match="two curves of 'htd'"):
        run_collect(step, context)
    step = Step("collect", "collect", {"curves": ["curves/a"], "references": ["references/real-heldout"], "out": "results"})
    with pytest.raises(InputError, match="no results files to collect"):
        run_collect(step, context)
    assert not (tmp_path / "results").exists()  # nothing half-written
    step = Step("collect", "collect", {"curves": ["curves/a"], "out": "results"})
    assert run_collect(step, context) == {"subjects": 1, "files": 1}
    assert "step 2, 2 min of training" in (tmp_path / "results" / "collected.md").read_text()


def test_the_figure_draws_the_mean_fill_floor_over_the_test_patches_the_curves_completed(tmp_path):
    from histosynth.benchmark.tasks.completion import score_completion
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.recipes.curve import run_figure
    from histosynth.recipes.floors import mean_fill
    from histosynth.recipes.spec import Step, StepContext
    from histosynth.sources import build_source

    run_dir = tmp_path / "run"
    test = run_dir / "data" / "sim-test"
    write_dataset(build_source("simulator", n=12, size=32, seed=5, mpp=2.0), test, CardInfo("t", "t"))
    key = "completion:psnr-masked@fake"
    for name in ("dual-lora", "harp-inpaint"):
        folder = run_dir / "curves" / name
        folder.mkdir(parents=True)
        point = {"step": 10, "metrics": {key: {"value": 20.0, "ci_low": 19.0, "ci_high": 21.0, "n_fake": 8}}}
        (folder / "curve.json").write_text(json.dumps({"generator": name, "train": {"seconds": 60}, "points": [point]}))
    step = Step("figure", "figure", {"curves": ["curves/dual-lora", "curves/harp-inpaint"], "out": "figures/t"})
    summary = run_figure(step, StepContext(run_dir, recipe=None, log=lambda _: None))
    (drawn,) = summary["floor_lines"]
    first_eight = score_completion(test, mean_fill(test, tmp_path / "filled"), modes=(), bootstrap=0, limit=8)
    expected = next(r.value for r in first_eight.results if r.metric == "psnr-masked")
    assert drawn[0] == key and drawn[1] == pytest.approx(expected)  # the floor over the same 8 patches, not all 12
    assert (run_dir / "figures" / "t" / "learning_curves.png").is_file()


def test_one_legend_names_every_curve_with_its_budget_and_the_ceiling_of_a_panel_the_first_curve_lacks(tmp_path):
    from histosynth.recipes.curve import run_figure
    from histosynth.recipes.spec import Step, StepContext

    psnr, consistency = "completion:psnr-masked@fake", "label-consistency:label_consistency_miou@fake"
    ceiling = "label-consistency:label_consistency_miou@real-test"
    metrics = {"dual-lora": {psnr: {"value": 20.0, "ci_low": 19.0, "ci_high": 21.0}},
               "htd": {consistency: {"value": 0.5, "ci_low": 0.4, "ci_high": 0.6},
                       ceiling: {"value": 0.9, "ci_low": 0.85, "ci_high": 0.95}}}
    for name, seconds in (("dual-lora", 60), ("htd", 180)):
        folder = tmp_path / "curves" / name
        folder.mkdir(parents=True)
        points = [{"step": s, "metrics": metrics[name]} for s in (10, 40)]
        (folder / "curve.json").write_text(json.dumps({"generator": name, "train": {"seconds": seconds},
                                                       "points": points}))
    step = Step("figure", "figure", {"curves": ["curves/dual-lora", "curves/htd"], "out": "figures/t"})
    summary = run_figure(step, StepContext(tmp_path, recipe=None, log=lambda _: None))
    # the curves first, each with its steps and minutes; the ceiling drawn although dual-lora (curve 0) has no panel
    assert summary["legend"] == ["dual-lora (40 steps, 1 min)", "htd (40 steps, 3 min)", "real data (ceiling)"]
