"""Submissions are scored in isolation (leaderboard/scoring.py): a malicious generator plugin that reads the token,
writes into the leaderboard, opens a socket, emits invalid rows or runs forever is contained and reported, and the
leaderboard folder is left byte-for-byte as it was. The toy plugin from outside the repository is checked, scored
and lands in the leaderboard (slow)."""

import hashlib
import json
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
from plugin_paths import PLUGINS, TOY_PLUGIN

from histosynth.benchmark.results import BenchmarkRun
from histosynth.commands.submit import mock_references
from histosynth.leaderboard.aggregate import load_leaderboard
from histosynth.leaderboard.sandbox import SandboxLimits, isolation_available
from histosynth.leaderboard.scoring import score_submission
from histosynth.leaderboard.submission import SubmissionError, load_submission
from histosynth.leaderboard.suite import VARIANTS

pytestmark = pytest.mark.skipif(not isolation_available(),
                                reason="unshare cannot create user/net/mount namespaces on this machine")
SECRET = "hf_leaderboard_secret_token_987654321"
TINY = replace(VARIANTS["tiny"], n=4)


def tree_digest(folder):
    """sha256 over every file's relative path and bytes under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return mock_references(tmp_path_factory.mktemp("refs"))


@pytest.fixture
def leaderboard(tmp_path):
    results = tmp_path / "results" / "htd-0123456789ab"
    results.mkdir(parents=True)
    (results / "distribution-effnet-lite0.json").write_text('{"already": "published"}\n')
    return tmp_path / "results"


def evil_submission(tmp_path, attack):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"generator": "evil"}))
    (model / "attack.json").write_text(json.dumps(attack))
    (tmp_path / "submission.yaml").write_text("kind: generator\ngenerator: evil\ncheckpoint: model\n"
                                              f"plugin: {PLUGINS / 'evil_dist'}\n")
    return load_submission(tmp_path / "submission.yaml")


def test_token_theft_outside_writes_and_network_are_contained(tmp_path, refs, leaderboard, monkeypatch):
    import huggingface_hub.constants as constants

    token_file = tmp_path / "hf-token"
    token_file.write_text(SECRET)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    monkeypatch.setenv("HF_TOKEN", SECRET)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    before = tree_digest(leaderboard)
    outside = leaderboard / "htd-0123456789ab" / "pwned.json"
    submission = evil_submission(tmp_path, {"kind": "steal", "token_file": str(token_file), "outside": str(outside),
                                            "port": server.getsockname()[1]})
    report = score_submission(submission, refs, TINY, leaderboard, tmp_path / "work", SandboxLimits(wall_seconds=300))
    found_text = (tmp_path / "work" / "sandbox" / "found.json").read_text()
    found = json.loads(found_text)
    with pytest.raises(socket.timeout):
        server.accept()
    assert SECRET not in found_text and found["env_token"] is None
    assert found["write_outside"].startswith("failed") and found["socket"].startswith("failed")
    assert not report.ok and report.failed().name == "generate" and "evil: attack done" in report.failed().detail
    assert tree_digest(leaderboard) == before and not outside.exists()
    assert SECRET not in (tmp_path / "work" / "report.json").read_text()


def test_invalid_rows_are_caught_before_any_score(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    report = score_submission(evil_submission(tmp_path, {"kind": "invalid-rows"}), refs, TINY, leaderboard,
                              tmp_path / "work", SandboxLimits(wall_seconds=300))
    failed = report.failed()
    assert failed.name == "validate rows" and "train-00000-of-00001.parquet" in failed.detail
    assert [s.name for s in report.steps] == ["describe", "generate", "validate rows"]
    assert tree_digest(leaderboard) == before and not report.results


def test_a_runaway_generator_is_killed_and_reported(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    report = score_submission(evil_submission(tmp_path, {"kind": "forever"}), refs, TINY, leaderboard,
                              tmp_path / "work", SandboxLimits(wall_seconds=10))
    assert report.failed().name == "generate" and "wall-clock limit" in report.failed().detail
    assert tree_digest(leaderboard) == before


def test_submission_files_are_checked_field_by_field(tmp_path):
    (tmp_path / "s.yaml").write_text("kind: generator\ngenerator: toy\ncheckpoint: nowhere\n")
    with pytest.raises(SubmissionError, match=r"s.yaml: checkpoint: .*nowhere is not a folder"):
        load_submission(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("kind: model\n")
    with pytest.raises(SubmissionError, match="kind: must be one of generator, dataset"):
        load_submission(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text("kind: dataset\ndataset: hub:me/set@1.0.0\n")
    with pytest.raises(SubmissionError, match="pull me/set@1.0.0 first"):
        load_submission(tmp_path / "s.yaml")


@pytest.mark.slow
def test_a_plugin_generator_is_checked_scored_and_added(tmp_path, refs):
    env = {"PYTHONPATH": str(TOY_PLUGIN), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "histosynth.cli"]
    subprocess.run([*cli, "train", "toy", "--data", str(refs.train), "--out", str(tmp_path / "model"), "--preset",
                    "tiny"], env=env, check=True, capture_output=True)
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: toy\ncheckpoint: model\n"
                                              f"plugin: {TOY_PLUGIN}\ntitle: Toy painter\n")
    check = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--check"], capture_output=True,
                           text=True, env={**env, "PYTHONPATH": ""})
    assert check.returncode == 0 and "check passed" in check.stdout, check.stdout + check.stderr
    scored = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--train", str(refs.train), "--test",
                             str(refs.test), "--results", str(tmp_path / "results")], capture_output=True, text=True,
                            env={**env, "PYTHONPATH": ""})
    assert scored.returncode == 0, scored.stdout + scored.stderr
    (subject,) = (tmp_path / "results").iterdir()
    runs = {p.stem: BenchmarkRun.load(p) for p in subject.glob("*.json")}
    assert set(runs) == {"distribution-effnet-lite0", "label-consistency", "tstr-seg"}
    fake = runs["distribution-effnet-lite0"].subjects["fake"]
    assert (fake.kind, fake.name) == ("generator", "toy") and subject.name.startswith("toy-")
    again = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--train", str(refs.train), "--test",
                            str(refs.test), "--results", str(tmp_path / "results")], capture_output=True, text=True,
                           env={**env, "PYTHONPATH": ""})
    assert again.returncode == 1 and "never overwritten" in again.stdout
    page = subprocess.run([*cli, "leaderboard", "build", "--results", str(tmp_path / "results"), "--out",
                           str(tmp_path / "site")], capture_output=True, text=True, env={**env, "PYTHONPATH": ""})
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    toy_row = next(r for r in load_leaderboard(tmp_path / "results").rows if r.kind == "generator")
    assert toy_row.name == "toy" and toy_row.checkpoint_hash == fake.checkpoint_hash and toy_row.label in html
