"""`histosynth leaderboard publish` against the local test Hub: the results files go up in one commit tagged by the
suite version and come back byte-identical; a page built from the pulled files equals one built from the local ones;
an existing version is refused before any write."""

from __future__ import annotations

import contextlib
import io
import uuid
from pathlib import Path

import pytest
from huggingface_hub import HfApi, snapshot_download
from leaderboard_runs import write_runs

from histosynth.cli import main
from histosynth.leaderboard.aggregate import load_leaderboard
from histosynth.leaderboard.page import render_page

pytestmark = pytest.mark.hub


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_results_publish_and_pull_back_identical(hub_server, tmp_path: Path) -> None:
    api = HfApi()
    results = write_runs(tmp_path / "results")
    repo = f"{hub_server.user}/bench-results-{uuid.uuid4().hex[:8]}"
    code, out = run_cli("leaderboard", "publish", "--results", str(results), "--repo", repo, "--version", "v1.0.0",
                        "--dry-run")
    assert code == 0 and "would create the dataset repo" in out and "results/sub/tstr.json" in out, out
    assert not api.repo_exists(repo, repo_type="dataset")  # a dry run writes nothing
    code, out = run_cli("leaderboard", "publish", "--results", str(results), "--repo", repo, "--version", "v1.0.0")
    assert code == 0, out
    assert "validated 5 results files" in out and "tagged v1.0.0" in out

    refs = api.list_repo_refs(repo, repo_type="dataset")
    (tag,) = refs.tags
    commits = [c.commit_id for c in api.list_repo_commits(repo, repo_type="dataset")]
    assert tag.name == "v1.0.0" and commits[0] == tag.target_commit and len(commits) == 2  # create_repo's + ours

    pulled = Path(snapshot_download(repo, repo_type="dataset", revision="v1.0.0", local_dir=tmp_path / "pulled"))
    remote = local_files(pulled / "results")
    assert remote == local_files(results)  # every results file, byte for byte, and nothing else
    assert "histosynth-bench results v1.0.0" in (pulled / "README.md").read_text()
    assert render_page(load_leaderboard(pulled / "results")) == render_page(load_leaderboard(results))

    code, out = run_cli("leaderboard", "publish", "--results", str(results), "--repo", repo, "--version", "v1.0.0")
    assert code == 2 and "already has version v1.0.0" in out and "Nothing was uploaded" in out
    assert [c.commit_id for c in api.list_repo_commits(repo, repo_type="dataset")] == commits


def test_invalid_results_are_refused_before_any_request(hub_server, tmp_path: Path) -> None:
    results = write_runs(tmp_path / "results")
    (results / "broken.json").write_text('{"schema_version": 2, "task": "distribution"}')
    repo = f"{hub_server.user}/bench-results-{uuid.uuid4().hex[:8]}"
    code, out = run_cli("leaderboard", "publish", "--results", str(results), "--repo", repo, "--version", "v1.0.0")
    assert code == 2 and "broken.json: task_version: missing" in out
    with pytest.raises(Exception, match="404|not found|Repository Not Found"):
        HfApi().list_repo_refs(repo, repo_type="dataset")
