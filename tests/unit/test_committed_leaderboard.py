"""The committed leaderboard (results/, docs/leaderboard/index.html): every results file validates, every built-in
registered generator has its scores on both datasets from the `demo` suite variant, the reference rows behave as
they must, and the committed page is exactly what `leaderboard build` makes of the committed results."""

from __future__ import annotations

from pathlib import Path

import pytest

from histosynth.benchmark.suite import SUITE_VERSION
from histosynth.cli import main
from histosynth.generators.registry import builtin_generators
from histosynth.leaderboard.aggregate import load_leaderboard, load_results

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results"
PAGE = REPO / "docs" / "leaderboard" / "index.html"
TITLE = "histosynth-bench v1 (demo variant, 2-core CPU)"
DATASETS = {"simulator": "sim-test", "embedded": "embedded-test"}


@pytest.fixture(scope="module")
def board():
    return load_leaderboard(RESULTS)


def test_every_file_validates_and_comes_from_the_demo_suite():
    runs = load_results(RESULTS)
    assert {where.split("/")[0] for where, _ in runs} == set(DATASETS)
    for where, run in runs:
        suite = run.settings["suite"]
        assert (suite["suite"], suite["variant"]["name"]) == ("histosynth-bench", "demo"), where


@pytest.mark.xfail(strict=True, reason="the committed results predate the suite's current version (the paper-metrics "
                   "conventions, the sim-v1 track's thread record); `make leaderboard` refills them from the learning "
                   "curves once they end, and then this mark goes")
def test_the_committed_results_are_scored_by_the_current_suite_version():
    for where, run in load_results(RESULTS):
        assert run.settings["suite"]["suite_version"] == SUITE_VERSION, where


def test_every_builtin_generator_is_on_both_datasets(board):
    builtin = builtin_generators()
    for dataset, reference in DATASETS.items():
        assert sorted(p.name for p in (RESULTS / dataset).iterdir() if p.is_dir()) == builtin
        scored = {r.name for r in board.rows for c in board.columns
                  if c.dataset == reference and (cell := board.cell(r, c)) is not None and cell.value is not None}
        assert set(builtin) <= scored, set(builtin) - scored


def test_the_copy_baseline_is_flagged_and_the_real_ceiling_is_not(board):
    for reference in DATASETS.values():
        column = next(c for c in board.columns if c.metric == "memorization" and c.dataset == reference)
        share = {r.name: board.cell(r, column).value for r in board.rows if board.cell(r, column) is not None}
        assert share["copy-nearest"] == 1.0 and share["real-heldout"] == 0.0


def test_the_committed_page_is_built_from_the_committed_results(tmp_path):
    assert main(["leaderboard", "build", "--results", str(RESULTS), "--out", str(tmp_path), "--title", TITLE]) == 0
    assert (tmp_path / "index.html").read_bytes() == PAGE.read_bytes(), (
        "docs/leaderboard/index.html is stale: rebuild it with `histosynth leaderboard build --results results --out "
        f"docs/leaderboard --title '{TITLE}'` (or `make leaderboard`, whose title this is)")
