"""The suite's task selection and coverage rules (leaderboard/suite.py); the tasks' numbers are tested with their
runners, and a whole suite run in tests/unit/test_leaderboard_submit.py and tests/unit/test_recipes.py."""

from dataclasses import replace

import pytest

from histosynth.errors import InputError
from histosynth.leaderboard.suite import VARIANTS, Outputs, References, applicable_tasks, run_suite, variant


def test_only_selected_tasks_run(tmp_path):
    outputs = Outputs(tmp_path / "fake", tissue=True, nuclei=True)
    refs = References(tmp_path / "train", tmp_path / "test", tmp_path / "test")
    nothing = replace(VARIANTS["tiny"], encoders=())
    assert run_suite(outputs, refs, nothing, tmp_path / "out", tasks=["distribution"]) == []  # tissue tasks skipped
    with pytest.raises(InputError, match="unknown suite task"):
        run_suite(outputs, refs, nothing, tmp_path / "bad", tasks=["fid"])
    assert not (tmp_path / "bad").exists()


def test_tasks_apply_by_what_the_outputs_carry(tmp_path):
    plain = applicable_tasks(Outputs(tmp_path))
    assert plain["distribution"] is None and all(plain[t] for t in ("label-consistency", "completion", "tstr-seg",
                                                                     "tstr-nuclei"))
    full = applicable_tasks(Outputs(tmp_path, tmp_path / "completed", tissue=True, nuclei=True))
    assert all(reason is None for reason in full.values())
    with pytest.raises(InputError, match="unknown suite variant"):
        variant("huge")
