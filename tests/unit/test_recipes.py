"""Recipes (histosynth.recipes): validation errors that name the step and field, plan/status/run with
content-key caching (a changed option reruns only what depends on it), --until, and resuming an interrupted step.
The source steps read real-format files: Camelyon16 pyramidal TIFFs with ASAP XML and PANDA slides with red-channel
label masks and train.csv (recipe_fixtures.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from recipe_fixtures import write_camelyon16, write_panda_folder

from histosynth.cli import main
from histosynth.errors import UserFacingError
from histosynth.recipes.kinds import handlers
from histosynth.recipes.runner import load_state, plan, run_recipe
from histosynth.recipes.spec import RecipeError, load_recipe

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


@pytest.fixture(scope="module")
def panda(tmp_path_factory) -> Path:
    return write_panda_folder(tmp_path_factory.mktemp("panda") / "panda", "karolinska")


def write(tmp_path: Path, text: str, name: str = "small.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, match", [
    (("reader: camelyon16", "reader: camelyon16\n    color: red"), r"step 'source' \(source\) field 'color': unknown field"),
    (("    min_frac: \"${min_frac}\"\n", "    min_frac: \"${nope}\"\n"), r"step 'sample' \(sample\) field 'min_frac': unknown variable \$\{nope\}"),
    (("  - step: split\n    data: data/all", "  - step: split\n    data: data/elsewhere"), r"step 'split' \(split\) field 'data': 'data/elsewhere' is not written by an earlier step"),
    (("  - step: sample", "  - step: smaple"), r"field 'step': unknown step kind 'smaple'; did you mean 'sample'"),
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
    path = write(tmp_path, BASE.replace("reader: camelyon16", "reader: camelyon16\n    color: red"))
    assert main(["recipe", "plan", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("\n") == 0 and "field 'color'" in err
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


def test_step_keys_are_pinned(monkeypatch):
    # A step's key decides whether an existing run folder's step is reused: it hashes the kind, the fields, the
    # inputs, the upstream keys and the installed version, never where the code lives. Pinned at version 0.1.0 so
    # moving or refactoring the engine cannot silently start every run over; a version bump changes every key.
    from histosynth.recipes import runner

    monkeypatch.setattr(runner, "code_version", lambda: "0.1.0")
    keys = runner.step_keys(load_recipe(REPO / "recipes" / "leaderboard-simulator.yaml", "tiny"), None)
    assert keys["source-train"] == "8f314a6ffb17f2587117f6a0c4cb91950b3c5325e1e056f3707d40bce75b5114"
    assert keys["score-htd"] == "c80d38cb2255de378df6d163f1a9db69c79b4d5be014cc1be9a6694f54c0c9b1"  # three upstream


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
def test_kill_in_train_and_in_generate_gives_the_same_dataset(tmp_path, slides, one_thread):
    # one thread here as in the killed children: the thread count changes float sums, hence the bytes
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


def _table_run(tmp_path: Path, name: str, inputs: dict[str, Path]) -> Path:
    recipe = load_recipe(REPO / "recipes" / f"{name}.yaml", "tiny", inputs)
    run_dir = tmp_path / name
    run_recipe(recipe, run_dir, handlers(), log=lambda line: None)
    return run_dir


FD_DATASETS = ("camelyon16", "panda")  # htd-fd-table's inputs; each one's held-out patches are data/NAME-test


def _card_fd(card: str) -> dict[str, float]:
    """encoder -> the authors' FD that a dataset card quotes."""
    import yaml

    rows = yaml.safe_load((CARDS / f"{card}.yaml").read_text())["card"]["benchmark"]
    return {r["encoder"]: r["value"] for r in rows if r["metric"] == "FD"}


def test_fd_table_recipe_plans_both_datasets_and_quotes_the_cards(slides, panda, tmp_path):
    recipe = load_recipe(REPO / "recipes" / "htd-fd-table.yaml", "tiny", {"camelyon16": slides, "panda": panda})
    assert all(p.action == "run" for p in plan(recipe, tmp_path / "run"))
    for dataset in FD_DATASETS:
        scores = [s for s in recipe.steps if s.kind == "score" and s.name.startswith(f"score-{dataset}-")]
        assert len(scores) == 3 and {s.fields["test"] for s in scores} == {f"data/{dataset}-test"}
        assert {s.fields["out"] for s in scores} <= set(recipe.step("table").fields["results"])
        trained = {s.fields["generator"] for s in recipe.steps
                   if s.kind == "train" and s.name.startswith(f"train-{dataset}-")}
        assert trained == {"htd-unconditional", "htd-embedding", "htd"}
    assert recipe.step("source-panda").fields["options"]["provider"] == "karolinska"
    reported = recipe.step("table").fields["reported"]
    for dataset, card in (("Camelyon16", "htd-camelyon16"), ("PANDA Karolinska", "htd-panda-karolinska")):
        assert {r["encoder"]: r["value"] for r in reported if r["dataset"] == dataset} == _card_fd(card)


def test_fd_table_recipe_writes_both_formats_with_authors_numbers_and_not_run_columns(tmp_path, slides, panda):
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.leaderboard.aggregate import format_number

    run_dir = _table_run(tmp_path, "htd-fd-table", {"camelyon16": slides, "panda": panda})
    markdown = (run_dir / "tables" / "table.md").read_text()
    latex = (run_dir / "tables" / "table.tex").read_text()
    assert r"\begin{tabular}" in latex and "| Subject |" in markdown
    state = load_state(run_dir)["steps"]
    # one block per dataset, in the recipe's order; each lists that dataset's three models and no other
    blocks = markdown.split("**Reference data: ")[1:]
    assert [b.split("**")[0] for b in blocks] == [f"{d}-test" for d in FD_DATASETS]
    assert latex.index("% Reference data: camelyon16-test") < latex.index("% Reference data: panda-test")
    for dataset, block in zip(FD_DATASETS, blocks, strict=True):
        models = {state[f"train-{dataset}-{m}"]["summary"]["checkpoint_hash"].split(":")[1][:8]
                  for m in ("unconditional", "embedding", "htd")}
        rows = [line for line in block.split("References:")[0].splitlines() if line.startswith("| htd")]
        assert {re.search(r"\(([0-9a-f]{8})\)", row).group(1) for row in rows} == models and len(rows) == 3
        # uni2-h's weights are gated and absent here: its column says so, and groups with the measured one (its
        # results file records the same reference data), so both columns are subtitled with this dataset
        assert f"fd (uni2-h) ↓<br>{dataset}-test, distribution v1" in block
        assert f"fd (effnet-lite0) ↓<br>{dataset}-test, distribution v1" in block
        assert block.split("References:")[0].count("not run (weights)") == 3
        # ours are the results files' numbers, the authors' sit in their own labeled block
        fd = BenchmarkRun.load(run_dir / "results" / dataset / "htd" / "distribution-effnet-lite0.json")
        short = state[f"train-{dataset}-htd"]["summary"]["checkpoint_hash"].split(":")[1][:8]
        row = next(line for line in block.splitlines() if line.startswith("| htd 0") and short in line)
        assert format_number(next(r.value for r in fd.results if r.metric == "fd")) in row
    assert markdown.count("not run (weights)") == 6 and latex.count("not run (weights)") == 6
    assert markdown.count("References:") == 1 and latex.count("% Citations") == 1  # cited once, after both blocks
    assert "Reported by the authors" in markdown and "| Camelyon16 | htd | FD | UNI2-h | 85.2 |" in markdown
    assert "| PANDA Karolinska | htd | FD | UNI2-h | 52.4 |" in markdown
    assert "Reported by the authors" in latex and "481.4" in latex and "299.9" in latex


def test_not_run_files_record_the_reference_data(tmp_path, slides):
    """An encoder without weights writes a results file with the same reference data as a measured one, so the
    table puts its column with the measured columns of that data (not under "-")."""
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.benchmark.suite import VARIANTS, Outputs, References, run_suite
    from histosynth.leaderboard.aggregate import load_leaderboard, reference_dataset

    run_dir = tmp_path / "run"
    run_recipe(load_recipe(write(tmp_path, BASE), "tiny", {"slides": slides}), run_dir, handlers(),
               log=lambda line: None)
    refs = References(run_dir / "data" / "train", run_dir / "data" / "test", run_dir / "data" / "train")
    chosen = replace(VARIANTS["tiny"], encoders=("effnet-lite0", "uni2-h"), bootstrap=2)
    run_suite(Outputs(run_dir / "data" / "train-all"), refs, chosen, tmp_path / "results", log=lambda line: None,
              tasks=["distribution"])
    measured = BenchmarkRun.load(tmp_path / "results" / "distribution-effnet-lite0.json")
    absent = BenchmarkRun.load(tmp_path / "results" / "distribution-uni2-h.json")
    assert absent.settings["not_run"].startswith("not run (weights)") and all(r.value is None for r in absent.results)
    assert absent.data == measured.data  # real (held-out), train and the scored set: names, hashes and sizes
    assert absent.comparability()["reference"] == measured.comparability()["reference"] != {}
    assert reference_dataset(absent) == "test"
    assert {c.dataset for c in load_leaderboard(tmp_path / "results").columns} == {"test"}


def test_tstr_columns_name_the_model_they_train(tmp_path):
    """A TSTR results file's task is "tstr" for DeepLabv3+ and HoVer-Net alike; headers and captions say which."""
    from leaderboard_runs import tstr_run

    from histosynth.leaderboard.aggregate import build_leaderboard
    from histosynth.leaderboard.tables import render_table

    deeplab = tstr_run()
    hovernet = tstr_run()
    hovernet.settings["model"] = "hovernet"
    board = build_leaderboard([("deeplab.json", deeplab), ("hovernet.json", hovernet)])
    assert sorted(c.task_label for c in board.columns) == ["tstr (deeplabv3plus)", "tstr (hovernet)"]
    for fmt in ("markdown", "latex"):
        text = render_table(board, board.columns, fmt)
        assert "sim-test, tstr (deeplabv3plus) v1" in text and "sim-test, tstr (hovernet) v1" in text
        assert "histosynth leaderboard: tstr (deeplabv3plus) v1, tstr (hovernet) v1." in text


@pytest.mark.slow  # a tiny DeepLabv3+ trained twice (real, synthetic); keeps the default run under its time budget
def test_tstr_table_recipe_has_real_and_synthetic_rows(tmp_path, slides):
    run_dir = _table_run(tmp_path, "htd-tstr-table", {"camelyon16": slides})
    markdown = (run_dir / "tables" / "table.md").read_text()
    assert "miou" in markdown and "(reference)" in markdown and "| htd 0" in markdown
    assert "tstr (deeplabv3plus) v1" in markdown  # the task as the table names it: the model it trains
    assert "| real | DeepLabv3+ IoU | - | 0.72 |" in markdown
    assert (run_dir / "tables" / "table.tex").is_file()


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["tiny", "demo", "full"])
def test_every_shipped_recipe_validates_at_every_scale(path, scale):
    recipe = load_recipe(path, scale, require_inputs=False)
    assert recipe.name == path.stem and recipe.steps
    kinds = handlers()
    assert all(step.kind in kinds for step in recipe.steps)


def test_plan_of_a_run_that_never_started_writes_nothing(tmp_path):
    from histosynth.cli import main

    fixture = tmp_path / "inputs"
    fixture.mkdir()
    (fixture / "slide.tif").write_bytes(b"not read by plan beyond hashing")
    run_dir = tmp_path / "run"
    assert main(["recipe", "plan", str(REPO / "recipes" / "htd-fd-table.yaml"), "--scale", "tiny", "--input", f"camelyon16={fixture}",
                 "--input", f"panda={fixture}", "--run-dir", str(run_dir)]) == 0
    assert not run_dir.exists()


REGIONS = """
recipe: regions
format: 1
scales:
  tiny: {size: 32}
  demo: {size: 32}
  full: {size: 32}
steps:
  - {step: source, name: source, reader: simulator, options: {n: 16, size: "${size}", mpp: 2.0, seed: 5},
     split: {by: region, test_fraction: 0.5, seed: 0, region_size: 64}, out: data/all}
  - {step: split, name: apart, data: data/all, by: existing, train: data/train, test: data/heldout}
  - {step: split, name: again, data: data/heldout, by: region, test_fraction: 0.5, seed: 1, region_size: 64,
     train: data/conditions, test: data/test}
"""


def test_split_steps_keep_regions_apart_and_take_existing_splits_as_they_are(tmp_path):
    from histosynth.disk import iter_samples

    run_dir = tmp_path / "run"
    report = run_recipe(load_recipe(write(tmp_path, REGIONS), "tiny"), run_dir, handlers(), log=lambda line: None)

    def xs(folder, split="train"):
        return [s.provenance.x for s in iter_samples(run_dir / "data" / folder, split)]

    # a source step with a split writes both splits; `by: existing` takes them apart unchanged
    assert xs("train") == xs("all", "train") and xs("heldout") == xs("all", "test")
    assert sorted(xs("train") + xs("heldout")) == [32 * i for i in range(16)]
    # a split by region (64 level-0 px = 2 tiles of 32) puts each block wholly on one side, and both sides get rows
    conditions, test = xs("conditions"), xs("test")
    assert conditions and test and sorted(conditions + test) == sorted(xs("heldout"))
    assert not {x // 64 for x in conditions} & {x // 64 for x in test}
    assert report["steps"]["again"]["summary"]["groups"] == {"train": len({x // 64 for x in conditions}),
                                                             "test": len({x // 64 for x in test})}
    bad = write(tmp_path, REGIONS.replace("data: data/heldout, by: region", "data: data/heldout, by: existing"), "bad.yaml")
    with pytest.raises(UserFacingError, match="'existing' needs a folder with exactly the splits train and test"):
        run_recipe(load_recipe(bad, "tiny"), tmp_path / "bad", handlers(), log=lambda line: None)
