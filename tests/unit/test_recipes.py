"""Recipes (histosynth.leaderboard.recipes): validation errors that name the step and field, plan/status/run with
content-key caching (a changed option reruns only what depends on it), --until, and resuming an interrupted step.
The source steps read real-format files: Camelyon16 pyramidal TIFFs with ASAP XML (recipe_fixtures.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from recipe_fixtures import write_camelyon16

from histosynth.cli import main
from histosynth.commands.recipe import handlers
from histosynth.errors import UserFacingError
from histosynth.leaderboard.recipes.runner import load_state, plan, run_recipe
from histosynth.leaderboard.recipes.spec import RecipeError, load_recipe

REPO = Path(__file__).resolve().parents[2]
CARDS = REPO / "data_cards" / "cards"

BASE = """
recipe: small
format: 1
inputs:
  slides: {help: "Camelyon16 training folder"}
scales:
  tiny: {size: 32, min_frac: 0.2}
  demo: {size: 64, min_frac: 0.2}
  full: {size: 256, min_frac: 0.2}
steps:
  - step: source
    reader: camelyon16
    options: {path: "${input:slides}", annotations: "${input:slides}/lesion_annotations", size: "${size}", mpp: 0.5}
    out: data/all
  - step: split
    data: data/all
    train: data/train-all
    test: data/test
  - step: sample
    data: data/train-all
    min_frac: "${min_frac}"
    out: data/train
"""


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    return write_camelyon16(tmp_path_factory.mktemp("c16") / "training")


def write(tmp_path: Path, text: str, name: str = "small.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, match", [
    (("reader: camelyon16", "reader: camelyon16\n    colour: red"), r"step 'source' \(source\) field 'colour': unknown field"),
    (("    min_frac: \"${min_frac}\"\n", "    min_frac: \"${nope}\"\n"), r"step 'sample' \(sample\) field 'min_frac': unknown variable \$\{nope\}"),
    (("  - step: split\n    data: data/all", "  - step: split\n    data: data/elsewhere"), r"step 'split' \(split\) field 'data': 'data/elsewhere' is not written by an earlier step"),
    (("  - step: sample", "  - step: smaple"), r"field 'step': unknown kind 'smaple'"),
    (("    train: data/train-all\n", ""), r"step 'split' \(split\) field 'train': is required"),
    (("    out: data/train\n", "    out: /abs/train\n"), r"step 'sample' \(sample\) field 'out': must be a path inside the run folder"),
    (("  full: {size: 256, min_frac: 0.2}\n", ""), r"scales: must define exactly tiny, demo, full"),
    (("format: 1", "format: 2"), r"format: must be 1"),
])
def test_validation_errors_name_the_step_and_field(tmp_path, slides, edit, match):
    path = write(tmp_path, BASE.replace(*edit))
    with pytest.raises(RecipeError, match=match) as info:
        load_recipe(path, "tiny", {"slides": slides})
    assert str(path) in str(info.value) and isinstance(info.value, UserFacingError)


def test_inputs_are_checked_when_bound(tmp_path, slides):
    path = write(tmp_path, BASE)
    with pytest.raises(RecipeError, match="input 'slides' is needed at scale tiny: pass --input slides=PATH"):
        load_recipe(path, "tiny", {})
    with pytest.raises(RecipeError, match="the recipe has no input 'slide'"):
        load_recipe(path, "tiny", {"slide": slides})
    with pytest.raises(RecipeError, match="no such file or folder"):
        load_recipe(path, "tiny", {"slides": tmp_path / "missing"})
    recipe = load_recipe(path, "demo", {"slides": slides})
    assert recipe.step("source").fields["options"]["size"] == 64  # the scale's value, with its type
    assert recipe.step("source").fields["options"]["annotations"] == f"{slides}/lesion_annotations"


def test_a_card_without_a_recipe_says_so(tmp_path):
    card = (CARDS / "htd-camelyon16.yaml").read_text().replace("recipe: ../../recipes/htd-camelyon16.yaml\n", "")
    with pytest.raises(RecipeError, match="names no recipe"):
        load_recipe(write(tmp_path, card, "htd-camelyon16.yaml"))


def test_cli_errors_are_one_line(tmp_path, slides, capsys):
    path = write(tmp_path, BASE.replace("reader: camelyon16", "reader: camelyon16\n    colour: red"))
    assert main(["recipe", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and "field 'colour'" in err
    assert main(["recipe", "run", str(write(tmp_path, BASE, "ok.yaml")), "--input", "slides"]) == 2
    assert "expected NAME=PATH" in capsys.readouterr().err


def test_run_caches_by_content_key_and_reruns_what_changed(tmp_path, slides, capsys):
    path = write(tmp_path, BASE)
    run_dir = tmp_path / "run"
    recipe = load_recipe(path, "tiny", {"slides": slides})
    assert [p.action for p in plan(recipe, run_dir)] == ["run", "run", "run"]
    run_recipe(recipe, run_dir, handlers(), until="split", log=lambda line: None)
    assert [p.action for p in plan(recipe, run_dir)] == ["cached", "cached", "run"]
    report = run_recipe(recipe, run_dir, handlers(), log=lambda line: None)
    assert report["steps"]["split"]["summary"]["groups"] == {"train": 2, "test": 1}
    first = load_state(run_dir)["steps"]
    assert main(["recipe", "status", str(path), "--run-dir", str(run_dir), "--input", f"slides={slides}"]) == 0
    assert capsys.readouterr().out.count(": done") == 3
    assert main(["recipe", "plan", str(path), "--run-dir", str(run_dir), "--input", f"slides={slides}"]) == 0
    assert capsys.readouterr().out.count(": cached") == 3
    assert main(["recipe", "run", str(path), "--run-dir", str(run_dir), "--input", f"slides={slides}", "--until", "nope"]) == 2
    assert "no step 'nope'" in capsys.readouterr().err
    # a changed option reruns its step and what depends on it, not what comes before
    changed = load_recipe(write(tmp_path, BASE.replace("min_frac: 0.2}\n  demo", "min_frac: 0.3}\n  demo")), "tiny",
                          {"slides": slides})
    assert [p.action for p in plan(changed, run_dir)] == ["cached", "cached", "rerun"]
    # so does a changed input file (content, not name)
    xml = slides / "lesion_annotations" / "tumor_003.xml"
    original = xml.read_bytes()
    try:
        xml.write_bytes(original.replace(b'X="384"', b'X="380"'))
        assert [p.action for p in plan(recipe, run_dir)] == ["rerun", "rerun", "rerun"]
    finally:
        xml.write_bytes(original)
    assert [p.action for p in plan(recipe, run_dir)] == ["cached", "cached", "cached"]
    assert load_state(run_dir)["steps"] == first  # planning wrote nothing


def test_a_step_that_died_is_resumed_and_the_rest_skipped(tmp_path, slides):
    path = write(tmp_path, BASE)
    run_dir = tmp_path / "run"
    recipe = load_recipe(path, "tiny", {"slides": slides})
    steps = handlers()
    seen = []

    def dies(step, ctx):
        seen.append(ctx.resume)
        raise KeyboardInterrupt  # a crash in the middle of the step

    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, run_dir, {**steps, "split": dies}, log=lambda line: None)
    assert load_state(run_dir)["steps"]["split"]["status"] == "started"
    assert [p.action for p in plan(recipe, run_dir)] == ["cached", "resume", "run"]

    def records(step, ctx):
        seen.append(ctx.resume)
        return steps["split"](step, ctx)

    run_recipe(recipe, run_dir, {**steps, "split": records}, log=lambda line: None)
    assert seen == [False, True]
    assert [p.action for p in plan(recipe, run_dir)] == ["cached", "cached", "cached"]


def test_cards_point_to_recipes_that_validate():
    for card in sorted(CARDS.glob("*.yaml")):
        recipe = load_recipe(card, "full", require_inputs=False)
        assert recipe.card == card.stem
        assert [s.kind for s in recipe.steps][-2:] == ["card", "publish"]
        assert recipe.step("train").fields["preset"] == "paper"
        assert recipe.step("train").fields["weights"] == {"autoencoder_weights": "<vq-f4>"}
        assert recipe.step("generate").fields["n"] == 10000
        tiny = load_recipe(card, "tiny", require_inputs=False)
        assert tiny.step("train").fields["preset"] == "tiny" and tiny.text_hash == recipe.text_hash


KILLED = BASE.replace("  tiny: {size: 32, min_frac: 0.2}", "  tiny: {size: 32, min_frac: 0.2, train: {steps: 12, checkpoint_every: 2}}") + """
  - step: train
    generator: htd
    preset: tiny
    overrides: "${train}"
    data: data/train
    out: model
  - step: generate
    checkpoint: model
    conditions: data/train
    n: 64
    chunk_size: 4
    steps: 2
    out: synth
"""


def _kill_when(argv: list[str], ready, timeout: float = 300.0) -> bool:
    """Run `histosynth <argv>` in a fresh process and SIGKILL it as soon as `ready()`; False if it ended first."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "histosynth.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.01)
    process.kill()
    process.wait()
    return False


@pytest.mark.slow  # three processes that import torch, two tiny HTD trainings: ~1 min on 2 shared cores
def test_kill_in_train_and_in_generate_gives_the_same_dataset(tmp_path, slides):
    path = write(tmp_path, KILLED)
    recipe = load_recipe(path, "tiny", {"slides": slides})
    reference = run_recipe(recipe, tmp_path / "reference", handlers(), log=lambda line: None)
    run_dir = tmp_path / "killed"
    argv = ["recipe", "run", str(path), "--input", f"slides={slides}", "--run-dir", str(run_dir)]
    in_train = _kill_when(argv, lambda: any((run_dir / "model" / "training").glob("step-*/trainer_state.json")))
    in_generate = _kill_when(argv, lambda: any(run_dir.glob(".synth.work-*/*/*.parquet")))
    state = load_state(run_dir)["steps"]
    assert in_train and in_generate and state["generate"]["status"] == "started"
    assert state["train"]["summary"]["resumed_from_step"] > 0  # the second process resumed the killed training
    assert [p.action for p in plan(recipe, run_dir)][-1] == "resume"
    report = run_recipe(recipe, run_dir, handlers(), log=lambda line: None)
    assert report["steps"]["generate"]["summary"]["dataset_hash"] == reference["steps"]["generate"]["summary"]["dataset_hash"]
    assert report["steps"]["train"]["summary"]["checkpoint_hash"] == reference["steps"]["train"]["summary"]["checkpoint_hash"]
    assert json.loads((run_dir / "report.json").read_text())["recipe_hash"] == recipe.text_hash


def _table_run(tmp_path: Path, slides: Path, name: str) -> Path:
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", "tiny", {"camelyon16": slides})
    run_dir = tmp_path / name
    run_recipe(recipe, run_dir, handlers(), log=lambda line: None)
    return run_dir


def test_fd_table_recipe_writes_both_formats_with_authors_numbers_and_not_run_columns(tmp_path, slides):
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.leaderboard.aggregate import format_number

    run_dir = _table_run(tmp_path, slides, "htd-fd-table")
    markdown = (run_dir / "tables" / "table.md").read_text()
    latex = (run_dir / "tables" / "table.tex").read_text()
    assert r"\begin{tabular}" in latex and "| Subject |" in markdown
    for generator in ("htd ", "htd-embedding", "htd-unconditional"):
        assert generator in markdown and generator in latex
    # uni2-h's weights are gated and absent here: its column says so in both formats
    assert "fd (uni2-h)" in markdown and markdown.count("not run (weights)") == 3 and latex.count("not run (weights)") == 3
    # ours are the results files' numbers, the authors' sit in their own labelled block
    fd = BenchmarkRun.load(run_dir / "results" / "htd" / "distribution-effnet-lite0.json")
    value = next(r.value for r in fd.results if r.metric == "fd")
    row = next(line for line in markdown.splitlines() if line.startswith("| htd 0"))
    assert format_number(value) in row
    assert "Reported by the authors" in markdown and "| htd | FD | UNI2-h | 85.2 |" in markdown
    assert "Reported by the authors" in latex and "481.4" in latex


@pytest.mark.slow  # a tiny DeepLabv3+ trained twice (real, synthetic); keeps the default run under its time budget
def test_tstr_table_recipe_has_real_and_synthetic_rows(tmp_path, slides):
    run_dir = _table_run(tmp_path, slides, "htd-tstr-table")
    markdown = (run_dir / "tables" / "table.md").read_text()
    assert "miou" in markdown and "(reference)" in markdown and "| htd 0" in markdown
    assert "| real | DeepLabv3+ IoU | - | 0.72 |" in markdown
    assert (run_dir / "tables" / "table.tex").is_file()


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["tiny", "demo", "full"])
def test_every_shipped_recipe_validates_at_every_scale(path, scale):
    recipe = load_recipe(path, scale, require_inputs=False)
    assert recipe.name == path.stem and recipe.steps
    kinds = handlers()
    assert all(step.kind in kinds for step in recipe.steps)
