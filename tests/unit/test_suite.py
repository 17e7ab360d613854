"""The suite's task selection and coverage rules (histosynth.benchmark.suite); the tasks' numbers are tested with their
runners, and a whole suite run in tests/unit/test_leaderboard_submit.py and tests/unit/test_recipes.py."""

from dataclasses import replace

import pytest

from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.suite import VARIANTS, Outputs, References, applicable_tasks, outputs_of, run_suite, variant
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.errors import InputError
from histosynth.leaderboard.aggregate import build_leaderboard, load_results
from histosynth.sources import build_source


def test_only_selected_tasks_run(tmp_path):
    outputs = Outputs(tmp_path / "fake", tissue=True, nuclei=True)
    refs = References(tmp_path / "train", tmp_path / "test", tmp_path / "train")
    nothing = replace(VARIANTS["tiny"], encoders=())
    assert run_suite(outputs, refs, nothing, tmp_path / "out", tasks=["distribution"]) == []  # tissue tasks skipped
    with pytest.raises(InputError, match="unknown suite task"):
        run_suite(outputs, refs, nothing, tmp_path / "bad", tasks=["fid"])
    assert not (tmp_path / "bad").exists()


def test_tasks_apply_by_what_the_outputs_carry(tmp_path):
    plain = applicable_tasks(Outputs(tmp_path))
    assert plain["distribution"] is None and all(plain[t] for t in ("label-consistency", "completion", "tstr"))
    full = applicable_tasks(Outputs(tmp_path, tmp_path / "completed", tissue=True, nuclei=True))
    assert all(reason is None for reason in full.values())
    with pytest.raises(InputError, match="unknown suite variant"):
        variant("huge")


def test_conditions_may_not_be_the_test_set(tmp_path):
    (tmp_path / "test").mkdir()
    with pytest.raises(InputError, match="leak them into TSTR"):
        References(tmp_path / "train", tmp_path / "test", tmp_path / "." / "test")


def test_a_completion_only_generator_is_scored_on_completion_alone(tmp_path):
    only = applicable_tasks(Outputs(None, tmp_path / "completed", tissue=True, nuclei=True))
    assert only["completion"] is None
    assert all("does not synthesize" in only[t] for t in ("distribution", "label-consistency", "tstr"))
    refs = References(tmp_path / "train", tmp_path / "test", tmp_path / "train")
    with pytest.raises(InputError, match="nothing to score"):
        run_suite(Outputs(None), refs, VARIANTS["tiny"], tmp_path / "out")


def test_what_the_outputs_carry_is_read_from_their_rows(tmp_path):
    sim = list(build_source("simulator", n=2, size=32, seed=1, mpp=2.0))
    write_dataset(sim, tmp_path / "labeled", CardInfo("l", "l"))
    assert (outputs_of(tmp_path / "labeled").tissue, outputs_of(tmp_path / "labeled").nuclei) == (True, True)
    write_dataset([replace(s, tissue=None, tissue_schema=None, nuclei=None) for s in sim], tmp_path / "plain",
                  CardInfo("p", "p"))
    plain = outputs_of(None, tmp_path / "plain")
    assert (plain.synthesized, plain.completed, plain.tissue, plain.nuclei) == (None, tmp_path / "plain", False, False)


def test_a_synthetic_set_without_nuclei_gets_a_not_run_tstr_nuclei_file(tmp_path):
    for name, seed, density in (("train", 1, 1.0), ("test", 2, 1.0), ("fake", 3, 0.0)):
        write_dataset(build_source("simulator", n=4, size=64, seed=seed, mpp=0.5, nuclei_density=density),
                      tmp_path / name, CardInfo(name, name))
    outputs = outputs_of(tmp_path / "fake")
    assert outputs.nuclei  # instance maps, every one empty
    refs = References(tmp_path / "train", tmp_path / "test", tmp_path / "train")
    files = run_suite(outputs, refs, replace(VARIANTS["tiny"], encoders=()), tmp_path / "out",
                      tasks=["distribution", "tstr-nuclei"], log=lambda line: None)
    assert [f.name for f in files] == ["tstr-nuclei.json"]
    run = BenchmarkRun.load(files[0])
    assert run.settings["not_run"].startswith("the synthetic set holds no nuclei")
    assert all(r.value is None and r.extra["not_run"] for r in run.results)
    board = build_leaderboard(load_results(tmp_path / "out"))
    assert [(row.kind, row.name) for row in board.rows] == [("real", "simulator")]  # the fake set is simulator data


def test_the_nuclei_model_trains_its_own_budget(tmp_path):
    for name, seed in (("train", 1), ("test", 2), ("fake", 3)):
        write_dataset(build_source("simulator", n=4, size=64, seed=seed, mpp=0.5), tmp_path / name, CardInfo(name, name))
    refs = References(tmp_path / "train", tmp_path / "test", tmp_path / "train")
    chosen = replace(VARIANTS["tiny"], encoders=(), tstr_steps=2, tstr_nuclei_steps=3)
    files = run_suite(outputs_of(tmp_path / "fake"), refs, chosen, tmp_path / "out", tasks=["tstr-seg", "tstr-nuclei"],
                      log=lambda line: None)
    steps = {f.name: BenchmarkRun.load(f).settings["train"]["steps"] for f in files}
    assert steps == {"tstr-seg.json": 2, "tstr-nuclei.json": 3}
    assert VARIANTS["demo"].tstr_nuclei_steps == 1000 and VARIANTS["demo"].tstr_steps == 200
