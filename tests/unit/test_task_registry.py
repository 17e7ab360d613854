"""The benchmark task registry: one name per task across the CLI, the suite and the results files."""

import pytest

from histosynth.benchmark.results import COMPARABLE_SETTINGS, TASK_VERSIONS
from histosynth.benchmark.suite import selection, suite_task_names
from histosynth.benchmark.tasks import TASK_METAS, canonical_name, get_task
from histosynth.cli import main
from histosynth.registry import RegistryError


def test_every_registered_task_has_a_class_of_its_name_and_the_results_schema_knows_it():
    for meta in TASK_METAS:
        task = get_task(meta.name)
        assert task.name == meta.name and task.meta is meta
        assert TASK_VERSIONS[meta.name] == meta.version
        assert COMPARABLE_SETTINGS[meta.name] == meta.comparable_settings
    assert suite_task_names() == ("distribution", "label-consistency", "completion", "tstr")


def test_old_names_resolve_and_unknown_ones_suggest_the_closest():
    assert [canonical_name(n) for n in ("fd", "complete", "lpips-masked", "tstr")] == [
        "distribution", "completion", "masked-lpips", "tstr"]
    with pytest.raises(RegistryError, match="distribution"):
        canonical_name("distributon")


def test_suite_selection_accepts_legacy_tstr_parts():
    assert selection(["tstr-nuclei"])["tstr"] == ("hovernet",)
    assert selection(["tstr:deeplabv3plus", "distribution"]) == {"tstr": ("deeplabv3plus",), "distribution": None}


def test_an_old_verb_runs_with_a_note_and_the_new_one_without(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    empty = str(tmp_path / "empty")
    for verb in ("fd", "distribution"):
        assert main(["bench", verb, "--real", empty, "--fake", empty, "--out", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert ("old name of `histosynth bench distribution`" in err) == (verb == "fd")
        assert "README.md: missing" in err


def test_bench_help_lists_every_task(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    printed = capsys.readouterr().out
    assert all(meta.name in printed for meta in TASK_METAS) and "suite" in printed
