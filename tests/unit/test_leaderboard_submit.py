"""Submissions are scored in the sandbox (leaderboard/scoring.py) under an identity the scorer decides: a malicious
generator plugin that escapes, steals, impersonates another subject, traverses paths, evades the check, or writes a
FIFO, a decompression bomb or a flood of files is contained, each ending in one line of the report, the leaderboard
folder byte-for-byte as it was and the work folder cleaned. The toy plugin from outside the repository is checked,
scored and lands in the leaderboard (slow)."""

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from plugin_paths import PLUGINS, TOY_PLUGIN
from sandbox_required import sandbox  # noqa: F401 (fixture)

from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.suite import VARIANTS
from histosynth.commands.submit import mock_references
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.leaderboard.aggregate import load_leaderboard
from histosynth.leaderboard.sandbox import SandboxLimits
from histosynth.leaderboard.scoring import STEP_FOLDERS, ScoringLimits, score_submission
from histosynth.leaderboard.submission import SubmissionError, load_submission
from histosynth.sources import build_source

pytestmark = pytest.mark.usefixtures("sandbox")
SECRET = "hf_leaderboard_secret_token_987654321"
TINY = replace(VARIANTS["tiny"], n=8)
COMMITTED_HTD = Path(__file__).resolve().parents[2] / "results" / "simulator" / "htd"
FIVE_MINUTES = SandboxLimits(wall_seconds=300)


def tree_digest(folder):
    """sha256 over every file's relative path and bytes under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return mock_references(tmp_path_factory.mktemp("refs"))


@pytest.fixture(scope="module")
def other_refs(refs, tmp_path_factory):
    """References that are not the check's mock data (another training set, the same test)."""
    root = tmp_path_factory.mktemp("other")
    write_dataset(build_source("simulator", n=24, size=32, seed=7, mpp=4.0), root / "train",
                  CardInfo("real train", "simulator patches"))
    return replace(refs, train=root / "train", conditions=root / "train")


@pytest.fixture
def leaderboard(tmp_path):
    """A results folder holding the committed HTD subject."""
    shutil.copytree(COMMITTED_HTD, tmp_path / "results" / "htd")
    return tmp_path / "results"


def htd_checkpoint() -> str:
    return BenchmarkRun.load(COMMITTED_HTD / "distribution-effnet-lite0.json").subjects["fake"].checkpoint_hash


def evil_submission(tmp_path, attack, name="evil"):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"generator": "evil"}))
    (model / "attack.json").write_text(json.dumps(attack))
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: {name}\ncheckpoint: model\n"
                                              f"plugin: {PLUGINS / 'evil_dist'}\n")
    return load_submission(tmp_path / "submission.yaml")


def score(tmp_path, submission, refs, leaderboard, limits=FIVE_MINUTES, **options):
    """Scoring with the distribution task only: the identity and containment checks do not depend on the others."""
    return score_submission(submission, refs, TINY, leaderboard, tmp_path / "work", limits, log=lambda _: None,
                            tasks=("distribution",), **options)


def assert_contained(report, tmp_path, leaderboard, before, step, text):
    """One failed step with `text` in its one-line detail; the board as it was; the step folders removed."""
    failed = report.failed()
    assert failed is not None and failed.name == step and text in failed.detail, report.summary()
    assert "\n" not in failed.detail and not report.results
    assert tree_digest(leaderboard) == before
    assert not any((tmp_path / "work" / name).exists() for name in STEP_FOLDERS)


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
    outside = leaderboard / "htd" / "pwned.json"
    submission = evil_submission(tmp_path, {"kind": "steal", "token_file": str(token_file), "outside": str(outside),
                                            "port": server.getsockname()[1]})
    report = score(tmp_path, submission, refs, leaderboard, keep_work=True)
    found_text = (tmp_path / "work" / "submission" / "found.json").read_text()
    found = json.loads(found_text)
    with pytest.raises(socket.timeout):
        server.accept()
    assert SECRET not in found_text and found["env_token"] is None
    assert found["write_outside"].startswith("failed") and found["socket"].startswith("failed")
    assert found["token_file"].startswith("failed") and found["default_token_file"].startswith("failed")
    assert not report.ok and report.failed().name == "generate" and "evil: attack done" in report.failed().detail
    assert tree_digest(leaderboard) == before and not outside.exists()
    assert SECRET not in (tmp_path / "work" / "report.json").read_text()


def escape_targets(tmp_path, leaderboard):
    return {"canary": str(leaderboard / "htd" / "distribution-effnet-lite0.json"),
            "results_file": str(leaderboard / "htd" / "pwned.json"), "token_inside": "/nonexistent", "secret": SECRET,
            "pth": str(Path(sys.prefix) / "lib" / "zz-evil.pth"), "pyc": str(tmp_path / "x.pyc"),
            "source_file": str(Path(json.__file__).parent / "evil.py"), "unix_socket": str(tmp_path / "none.sock"),
            "port": 9, "host_marker": str(tmp_path), "host_shm": str(tmp_path / "shm"), "var_tmp": str(tmp_path / "vt"),
            "home_file": str(Path.home() / "histosynth-evil")}


def test_a_plugin_that_behaves_only_under_check_is_contained_when_scored(tmp_path, refs, other_refs, leaderboard):
    before = tree_digest(leaderboard)
    submission = evil_submission(tmp_path, {"kind": "evade", "targets": escape_targets(tmp_path, leaderboard)})
    check = score(tmp_path, submission, refs, tmp_path / "check-results", check=True)
    assert check.ok and not check.results and "check: nothing added" in check.summary(), check.summary()
    assert not (tmp_path / "check-results").exists()
    report = score(tmp_path, submission, other_refs, leaderboard, keep_work=True)
    found = json.loads((tmp_path / "work" / "submission" / "found.json").read_text())
    assert all(v.startswith("blocked") for k, v in found.items() if k != "write_host_shm"), found
    assert report.failed().name == "generate" and "evil: attack done" in report.failed().detail
    assert tree_digest(leaderboard) == before


def test_rows_claiming_another_subjects_checkpoint_are_refused(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    forged = {"generator": "evil", "generator_version": "0.0.1", "checkpoint_hash": htd_checkpoint()}
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "rows", "provenance": forged}), refs, leaderboard)
    assert_contained(report, tmp_path, leaderboard, before, "claims", "belongs to generator:htd")


def test_rows_claiming_another_generator_are_refused(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    forged = {"generator": "htd", "generator_version": "0.0.1", "checkpoint_hash": htd_checkpoint()}
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "rows", "provenance": forged}), refs, leaderboard)
    assert_contained(report, tmp_path, leaderboard, before, "validate rows", "rows name generator 'htd', not the "
                                                                              "submitted 'evil'")


def test_a_path_in_the_claimed_hash_never_builds_a_path(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    forged = {"generator": "evil", "generator_version": "0.0.1", "checkpoint_hash": "sha256:/../../zz-rt"}
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "rows", "provenance": forged}), refs, leaderboard)
    assert_contained(report, tmp_path, leaderboard, before, "validate rows", "is not 'sha256:' followed by 64 hex")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "results", "submission.yaml", "work"]


def test_the_plugins_sitecustomize_never_runs_and_valid_rows_get_the_scorers_identity(tmp_path, refs, leaderboard):
    forged = {"generator": "evil", "generator_version": "0.0.1", "checkpoint_hash": "sha256:" + "ab" * 32}
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "rows", "provenance": forged}), refs, leaderboard)
    assert report.ok, report.summary()  # sitecustomize.py would have killed a step with exit code 86
    subject = leaderboard / report.subject
    assert report.subject.startswith("evil-") and subject.is_dir()
    for path in subject.glob("*.json"):
        fake = BenchmarkRun.load(path).subjects.get("fake") or BenchmarkRun.load(path).subjects["train:synthetic"]
        assert fake.name == "evil" and fake.checkpoint_hash == f"sha256:{report.subject[5:]}" + fake.checkpoint_hash[19:]
        assert fake.checkpoint_hash != forged["checkpoint_hash"]
    rows = {r.name: r for r in load_leaderboard(leaderboard).rows}
    assert rows["htd"].checkpoint_hash == htd_checkpoint() and rows["evil"].id != rows["htd"].id
    again = score(tmp_path, evil_submission(tmp_path, {"kind": "rows", "provenance": forged}), refs, leaderboard)
    assert again.failed().name == "new subject" and "already on the board" in again.failed().detail


def test_a_dataset_claiming_htd_is_scored_as_a_dataset_of_its_own(tmp_path, refs, leaderboard):
    from histosynth.disk import iter_samples

    claims = {"generator": "htd", "generator_version": "1.0.0", "checkpoint_hash": htd_checkpoint()}
    rows = [replace(s, provenance=replace(s.provenance, **claims)) for s in list(iter_samples(refs.train))[:8]]
    write_dataset(rows, tmp_path / "set", CardInfo("set", "forged provenance"))
    (tmp_path / "dataset.yaml").write_text("kind: dataset\nname: not-htd\ndataset: set\n")
    report = score(tmp_path, load_submission(tmp_path / "dataset.yaml"), refs, leaderboard)
    assert report.ok and report.subject.startswith("not-htd-"), report.summary()
    board = load_leaderboard(leaderboard)
    kinds = {r.name: r.kind for r in board.rows}
    assert kinds["not-htd"] == "dataset" and kinds["htd"] == "generator"
    htd_files = sorted(p.name for p in (leaderboard / "htd").iterdir())
    assert htd_files == sorted(p.name for p in COMMITTED_HTD.iterdir())
    size = next(s for s in report.steps if s.name == "patch size")
    assert size.ok and size.detail == "32x32 px, the references' size"


def test_outputs_of_another_patch_size_are_scored_with_a_warning(tmp_path, refs, leaderboard):
    write_dataset(build_source("simulator", n=8, size=48, seed=3, mpp=4.0), tmp_path / "set",
                  CardInfo("set", "48 px patches"))
    (tmp_path / "dataset.yaml").write_text("kind: dataset\nname: big-patches\ndataset: set\n")
    report = score(tmp_path, load_submission(tmp_path / "dataset.yaml"), refs, leaderboard)
    assert report.ok, report.summary()
    assert "PASS patch size: warning: the outputs are 48x48 px, the references 32x32 px" in report.summary()


@pytest.mark.parametrize("kind, step, text", [
    ("fifo", "output files", "a FIFO, not a regular file"),
    ("bomb", "validate rows", "decompression bomb"),
    ("invalid-rows", "validate rows", "train-00000-of-00001.parquet"),
])
def test_hostile_output_ends_in_one_line(tmp_path, refs, leaderboard, kind, step, text):
    before = tree_digest(leaderboard)
    report = score(tmp_path, evil_submission(tmp_path, {"kind": kind}), refs, leaderboard)
    assert_contained(report, tmp_path, leaderboard, before, step, text)


def test_a_flood_of_files_is_stopped(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    limits = ScoringLimits(submission=SandboxLimits(wall_seconds=300, output_files=2000))
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "many-files"}), refs, leaderboard, limits)
    assert_contained(report, tmp_path, leaderboard, before, "generate", "killed: wrote more than 2000 files")


def test_a_runaway_generator_is_killed_and_reported(tmp_path, refs, leaderboard):
    before = tree_digest(leaderboard)
    report = score(tmp_path, evil_submission(tmp_path, {"kind": "forever"}), refs, leaderboard,
                   SandboxLimits(wall_seconds=10))
    assert_contained(report, tmp_path, leaderboard, before, "generate", "wall-clock limit")


def test_a_fifo_in_a_submitted_folder_is_refused_before_anything_runs(tmp_path, refs, leaderboard):
    import os

    before = tree_digest(leaderboard)
    submission = evil_submission(tmp_path, {"kind": "forever"})
    os.mkfifo(tmp_path / "model" / "weights.safetensors")
    report = score(tmp_path, submission, refs, leaderboard)
    assert [s.name for s in report.steps] == ["identify"]
    assert_contained(report, tmp_path, leaderboard, before, "identify", "a FIFO, not a regular file")


def test_submission_files_are_checked_field_by_field(tmp_path):
    (tmp_path / "model").mkdir()
    cases = {"kind: generator\ngenerator: toy\ncheckpoint: nowhere\n": r"checkpoint: .*nowhere is not a folder",
             "kind: model\n": "kind: must be one of generator, dataset",
             "kind: dataset\ndataset: hub:me/set@1.0.0\n": "pull me/set@1.0.0 first",
             'kind: generator\ngenerator: "rt\\n"\ncheckpoint: model\n': "not a valid name",
             "kind: generator\ngenerator: a..b\ncheckpoint: model\n": "not a valid name",
             "kind: generator\ngenerator: a/b\ncheckpoint: model\n": "not a valid name",
             'kind: generator\ngenerator: toy\ncheckpoint: "mo\\0del"\n': "NUL character",
             "kind: dataset\nname: ../up\ndataset: model\n": "not a valid name",
             "[" * 20000: "not valid YAML"}
    for text, message in cases.items():
        (tmp_path / "s.yaml").write_text(text)
        with pytest.raises(SubmissionError, match=message):
            load_submission(tmp_path / "s.yaml")
    with pytest.raises(SubmissionError, match="not a regular file"):
        load_submission(tmp_path)


@pytest.mark.slow
def test_a_plugin_generator_is_checked_scored_and_added(tmp_path, refs):
    env = {"PYTHONPATH": str(TOY_PLUGIN), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "histosynth.cli"]
    subprocess.run([*cli, "train", "toy", "--data", str(refs.train), "--out", str(tmp_path / "model"), "--preset",
                    "tiny"], env=env, check=True, capture_output=True)
    (tmp_path / "submission.yaml").write_text(f"kind: generator\ngenerator: toy\ncheckpoint: model\n"
                                              f"plugin: {TOY_PLUGIN}\ntitle: Toy painter\n")
    host = {**env, "PYTHONPATH": ""}
    check = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--check"], capture_output=True,
                           text=True, env=host)
    assert check.returncode == 0 and "check passed" in check.stdout and "nothing added" in check.stdout, \
        check.stdout + check.stderr
    scored = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--train", str(refs.train), "--test",
                             str(refs.test), "--results", str(tmp_path / "results")], capture_output=True, text=True,
                            env=host)
    assert scored.returncode == 0, scored.stdout + scored.stderr
    (subject,) = (tmp_path / "results").iterdir()
    runs = {p.stem: BenchmarkRun.load(p) for p in subject.glob("*.json")}
    assert set(runs) == {"distribution-effnet-lite0", "label-consistency", "tstr-seg"}
    fake = runs["distribution-effnet-lite0"].subjects["fake"]
    assert (fake.kind, fake.name) == ("generator", "toy") and subject.name.startswith("toy-")
    again = subprocess.run([*cli, "submit", str(tmp_path / "submission.yaml"), "--train", str(refs.train), "--test",
                            str(refs.test), "--results", str(tmp_path / "results")], capture_output=True, text=True,
                           env=host)
    assert again.returncode == 1 and "already on the board" in again.stdout
    page = subprocess.run([*cli, "leaderboard", "build", "--results", str(tmp_path / "results"), "--out",
                           str(tmp_path / "site")], capture_output=True, text=True, env=host)
    assert page.returncode == 0, page.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    toy_row = next(r for r in load_leaderboard(tmp_path / "results").rows if r.kind == "generator")
    assert toy_row.name == "toy" and toy_row.checkpoint_hash == fake.checkpoint_hash and toy_row.label in html
