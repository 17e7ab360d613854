"""The committed learning-curve recipes (recipes/learning-curves-{simulator,embedded}.yaml, what `make leaderboard`
runs at demo scale) run end to end at tiny scale: every built-in generator's curve is trained and scored, the figure
names each curve with its budget, the claims table has every claim, and the collected rows build a leaderboard with
every built-in generator (slow: 2 to 5 minutes per recipe on 2 cores, more under load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from histosynth.cli import main
from histosynth.generators.registry import builtin_generators
from histosynth.leaderboard.aggregate import load_leaderboard
from histosynth.recipes.claims import CLAIMS

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("dataset", ["simulator", "embedded"])
def test_a_committed_learning_curve_recipe_runs_end_to_end(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["recipe", "run", str(REPO / "recipes" / f"learning-curves-{dataset}.yaml"), "--scale", "tiny",
                 "--run-dir", str(run)]) == 0
    generators = [g for g in builtin_generators() if g not in ("copy-nearest", "real-heldout")]
    assert sorted(p.name for p in (run / "curves").iterdir()) == generators
    report = json.loads((run / "report.json").read_text())
    figure = report["steps"]["figure"]["summary"]
    assert (run / "figures" / dataset / "learning_curves.png").is_file()
    for generator in generators:  # every curve in the one legend, with its steps and minutes
        assert any(label.startswith(f"{generator} ") and " steps, " in label for label in figure["legend"]), generator
    claims = json.loads((run / "claims" / dataset / "claims.json").read_text())
    assert [c["paper"] for c in claims] == [c.paper for c in CLAIMS]
    assert sorted(p.name for p in (run / "results").iterdir() if p.is_dir()) == builtin_generators()
    board = load_leaderboard(run / "results")
    assert set(generators) <= {r.name for r in board.rows if r.kind == "generator"}
