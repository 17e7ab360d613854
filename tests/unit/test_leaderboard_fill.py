"""The recipes that fill the committed leaderboard (recipes/leaderboard-{simulator,embedded}.yaml) run end to end at
tiny scale: every registered generator is trained, generated and scored with the suite on both datasets, and the
page lists them all. The reference rows behave as they must: the copy baseline is flagged by the memorization score
and the real held-out patches are not. Also: a completion-only generator submitted through `histosynth submit` is
scored on completion alone (slow: several minutes of CPU)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from sandbox_required import sandbox  # noqa: F401 (fixture)

from histosynth.cli import main
from histosynth.generators.registry import builtin_generators
from histosynth.leaderboard.aggregate import load_leaderboard

REPO = Path(__file__).resolve().parents[2]
DATASETS = {"simulator": "sim", "embedded": "embedded"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fill")
    for dataset in DATASETS:
        assert main(["recipe", "run", str(REPO / "recipes" / f"leaderboard-{dataset}.yaml"), "--scale", "tiny",
                     "--run-dir", str(root / dataset)]) == 0
    return root


def _memorization(board, generator: str, tag: str) -> float | None:
    """The generator's memorization share against the dataset's training set (effnet-lite0 features)."""
    column = next(c for c in board.columns if c.metric == "memorization" and c.dataset == f"{tag}-test")
    row = next(r for r in board.rows if r.name == generator)
    return board.cell(row, column).value


def test_every_registered_generator_is_scored_on_both_datasets(runs, tmp_path):
    names = builtin_generators()
    for dataset, tag in DATASETS.items():
        results = runs / dataset / "results"
        assert sorted(p.name for p in results.iterdir()) == names
        board = load_leaderboard(results)
        # the real-data ceiling and the copy baseline are reference lines, never ranked generators
        assert sorted(r.name for r in board.rows if r.kind == "reference") == ["copy-nearest", "real-heldout"]
        assert sorted(r.name for r in board.rows if r.kind == "generator") == [
            n for n in names if n not in ("copy-nearest", "real-heldout")]
        assert {c.dataset for c in board.columns} == {f"{tag}-test"}  # every task under the held-out set
        # harp-inpaint only completes: it is scored on completion and nothing else
        assert sorted(p.name for p in (results / "harp-inpaint").iterdir()) == ["completion.json"]
        assert (results / "dual-lora" / "completion.json").is_file()
        assert _memorization(board, "copy-nearest", tag) == 1.0  # every sample is a training patch
        assert _memorization(board, "real-heldout", tag) == 0.0  # real patches of held-out regions or slides
    combined = tmp_path / "results"
    for dataset in DATASETS:
        shutil.copytree(runs / dataset / "results", combined / dataset)
    assert main(["leaderboard", "build", "--results", str(combined), "--out", str(tmp_path / "site")]) == 0
    html = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert all(f"{tag}-test" in html for tag in DATASETS.values())
    assert all(name in html for name in names)


@pytest.mark.usefixtures("sandbox")
def test_a_completion_only_submission_is_scored_on_completion(runs, tmp_path):
    import subprocess

    run = runs / "simulator"
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: harp-inpaint\n"
                                              f"checkpoint: {run / 'models' / 'harp-inpaint'}\n")
    scored = subprocess.run([sys.executable, "-m", "histosynth.cli", "submit", str(tmp_path / "submission.yaml"),
                             "--train", str(run / "data" / "sim-train"), "--test", str(run / "data" / "sim-test"),
                             "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                                                 "HF_HUB_OFFLINE": "1"})
    assert scored.returncode == 0, scored.stdout + scored.stderr
    assert "PASS complete" in scored.stdout and "PASS generate" not in scored.stdout
    (subject,) = (tmp_path / "results").iterdir()
    assert subject.name.startswith("harp-inpaint-") and [p.name for p in subject.iterdir()] == ["completion.json"]
