"""`histosynth publish` / `pull` and histosynth.hub against the local test Hub, with the real clients (no mocks).

A simulator dataset is published as v1.0.0 and v1.1.0 through the CLI; both are pulled back pixel- and label-exact
through the CLI and through `datasets.load_dataset(revision=...)`. Refusals (existing version, invalid folder),
--dry-run and the token's absence from every output are checked against the server's request log; interrupted
publishes are real SIGKILLs of a publishing subprocess, triggered from the client's public HTTP event hooks.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, RepoFile, get_session, hf_hub_download
from huggingface_hub.errors import RepositoryNotFoundError

from histosynth.cli import main
from histosynth.data_cards.card import CardInfo, render_set_card, validate_card
from histosynth.data_cards.model import Version
from histosynth.data_cards.sets import DATASETS
from histosynth.disk import iter_samples, write_dataset
from histosynth.hub import PublishError, file_hashes, list_versions, load_samples, publish
from histosynth.rows import encode_png, row_to_sample
from histosynth.sources import build_source

pytestmark = pytest.mark.hub

SHARD_BYTES = 30_000  # a few shards per version, so uploads are several LFS objects
VERSIONS = {"v1.0.0": (0, 12), "v1.1.0": (1, 7)}  # version -> (seed, n): v1.1.0 has fewer shards than v1.0.0
WRITES = ("/preupload/", "/commit/", "/tag/", "/branch/", "/lfs", "/repos/create", "/repos/delete")

# Runs `histosynth <argv...>` in a fresh process that SIGKILLs itself as soon as the Hub answers 200 to the first
# request whose method is argv[1] and whose path contains argv[2]; later requests of that kind wait to be killed,
# so exactly one of them reaches the server. The hook is installed on huggingface_hub's shared client through its
# public `get_session()`; histosynth's code runs unmodified.
KILLER = r"""
import os, signal, sys, threading, time
from huggingface_hub import get_session
method, fragment, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
lock, seen = threading.Lock(), []

def before(request):
    if request.method == method and fragment in request.url.path:
        with lock:
            seen.append(request.url.path)
            first = len(seen) == 1
        if not first:
            time.sleep(120)  # killed before this request is sent

def after(response):
    request = response.request
    if request.method == method and fragment in request.url.path and response.status_code == 200:
        os.kill(os.getpid(), signal.SIGKILL)

hooks = get_session().event_hooks
hooks["request"].append(before)
hooks["response"].append(after)
from histosynth.cli import main
sys.exit(main(argv))
"""


def sim_card(repo: str, version: str, seed: int, n: int) -> CardInfo:
    """The card of a simulator test set, with the full provenance a synthetic set carries."""
    return CardInfo(
        pretty_name=f"histosynth simulator test set {version}",
        description="Procedural H&E-like patches with exact tissue maps and nuclei, for testing releases.",
        license="cc0-1.0",
        source="The histosynth `simulator` source: Beer-Lambert stain mixing over random tissue fields.",
        command=f"histosynth data build --source simulator --n {n} --size 64 --seed {seed} --out DIR\n"
                f"histosynth publish DIR --repo {repo} --version {version}",
        tags=["simulator", "test"],
        generator="simulator",
        generator_version="0.1.0",
        checkpoint_hash="none: procedural, no weights",
        conditioning_source="none: unconditional procedural tissue",
        seeds=f"base seed {seed}; sample i uses the seed derived from ({seed}, i), stored in its `seed` column",
        version=version,
        repo=repo,
    )


def build_set(folder: Path, repo: str, version: str, seed: int, n: int) -> Path:
    """A simulator dataset folder (64 px patches) written by histosynth.disk."""
    samples = build_source("simulator", n=n, size=64, seed=seed)
    write_dataset(samples, folder, sim_card(repo, version, seed, n), max_shard_bytes=SHARD_BYTES)
    return folder


def run_cli(*argv: str) -> tuple[int, str]:
    """`histosynth argv...` in this process -> (exit code, stdout + stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()


def run_subprocess(code: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -c code argv...` with the test Hub's environment (or `env`)."""
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=180,
                          env=env or dict(os.environ))


class ServerLog:
    """The test Hub's request log from a mark on: (method, path, status) per request."""

    def __init__(self, hub_server) -> None:
        self.hub_server, self.start = hub_server, len(hub_server.log_text())

    def requests(self) -> list[tuple[str, str, int]]:
        lines = self.hub_server.log_text()[self.start:].splitlines()
        out = []
        for line in lines:
            parts = line.rsplit(" ", 3)[-3:]
            if len(parts) == 3 and parts[0] in ("GET", "HEAD", "POST", "PUT", "DELETE") and parts[2].isdigit():
                out.append((parts[0], parts[1], int(parts[2])))
        return out

    def writes(self) -> list[tuple[str, str, int]]:
        return [r for r in self.requests() if r[0] != "GET" and r[0] != "HEAD" and any(w in r[1] for w in WRITES)]

    def uploads(self) -> int:
        return sum(1 for m, p, s in self.requests() if m == "PUT" and p.startswith("/lfs-upload/") and s == 200)


def repo_state(api: HfApi, repo: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """(tags, branches, main's commit ids) of a repo."""
    refs = api.list_repo_refs(repo, repo_type="dataset")
    commits = [c.commit_id for c in api.list_repo_commits(repo, repo_type="dataset")]
    return ({t.name: t.target_commit for t in refs.tags}, {b.name: b.target_commit for b in refs.branches}, commits)


def tree(api: HfApi, repo: str, revision: str) -> set[str]:
    """Paths of the files of a repo at a revision."""
    return {f.path for f in api.list_repo_tree(repo, repo_type="dataset", revision=revision, recursive=True)
            if isinstance(f, RepoFile)}


def files_of(folder: Path) -> set[str]:
    """Paths of the files of a local folder, as in the repo."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@dataclass
class Released:
    """A repo with v1.0.0 and v1.1.0 published through the CLI."""

    repo: str
    folders: dict[str, Path]
    outputs: dict[str, str]
    commits: dict[str, str]
    initial: str  # the repo's first commit (create_repo's .gitattributes)


@pytest.fixture(scope="module")
def api(hub_server) -> HfApi:
    return HfApi()


@pytest.fixture(scope="module")
def released(api: HfApi, hub_server, tmp_path_factory: pytest.TempPathFactory) -> Released:
    repo = f"{hub_server.user}/sim-{uuid.uuid4().hex[:8]}"
    folders, outputs = {}, {}
    for version, (seed, n) in VERSIONS.items():
        folders[version] = build_set(tmp_path_factory.mktemp(version) / "ds", repo, version, seed, n)
        code, outputs[version] = run_cli("publish", str(folders[version]), "--repo", repo, "--version", version)
        assert code == 0, outputs[version]
    tags, _, commits = repo_state(api, repo)
    return Released(repo, folders, outputs, tags, commits[-1])


def test_publish_makes_one_commit_and_one_tag_per_version(api: HfApi, released: Released) -> None:
    tags, branches, commits = repo_state(api, released.repo)
    assert tags == released.commits
    assert branches == {"main": tags["v1.1.0"]}
    assert commits == [tags["v1.1.0"], tags["v1.0.0"], released.initial]
    assert "created dataset repo" in released.outputs["v1.0.0"] and "tagged v1.0.0" in released.outputs["v1.0.0"]
    assert list(list_versions(released.repo)) == [Version.parse(v) for v in VERSIONS]
    for version, folder in released.folders.items():
        assert tree(api, released.repo, version) == files_of(folder) | {".gitattributes"}
    old_shards = {p for p in tree(api, released.repo, "v1.0.0") if p.startswith("data/")}
    new_shards = {p for p in tree(api, released.repo, "v1.1.0") if p.startswith("data/")}
    assert len(old_shards) > len(new_shards) >= 2 and not old_shards & new_shards  # stale shards were deleted


def test_shards_are_lfs_objects_with_the_local_hashes(api: HfApi, released: Released) -> None:
    folder = released.folders["v1.0.0"]
    paths = sorted(p.relative_to(folder).as_posix() for p in (folder / "data").iterdir())
    for info in api.get_paths_info(released.repo, paths, repo_type="dataset", revision="v1.0.0"):
        assert info.lfs is not None and info.lfs.sha256 == file_hashes(folder / info.path)[0]


def test_pull_cli_is_byte_pixel_and_label_exact(released: Released, tmp_path: Path) -> None:
    out = tmp_path / "pulled"
    code, printed = run_cli("pull", f"{released.repo}@v1.0.0", "--out", str(out))
    assert code == 0, printed
    assert f"commit {released.commits['v1.0.0'][:12]}" in printed
    folder = released.folders["v1.0.0"]
    assert files_of(out) == files_of(folder)
    for path in folder.rglob("*.parquet"):
        assert (out / path.relative_to(folder)).read_bytes() == path.read_bytes()
    expected = list(build_source("simulator", n=VERSIONS["v1.0.0"][1], size=64, seed=VERSIONS["v1.0.0"][0]))
    pulled = list(iter_samples(out))
    assert len(pulled) == len(expected) and all(a.equals(b) for a, b in zip(pulled, expected, strict=False))
    assert sum(len(s.nuclei) for s in pulled) > 0 and all(s.tissue is not None for s in pulled)
    code, printed = run_cli("pull", f"{released.repo}@v1.0.0", "--out", str(out))
    assert code == 2 and "refusing to overwrite" in printed


@pytest.mark.parametrize("version", list(VERSIONS))
def test_load_dataset_at_the_tag_gives_the_same_samples(released: Released, version: str) -> None:
    seed, n = VERSIONS[version]
    expected = list(build_source("simulator", n=n, size=64, seed=seed))
    rows = datasets.load_dataset(released.repo, revision=version, split="train")
    assert len(rows) == n and all(row_to_sample(r).equals(s) for r, s in zip(rows, expected, strict=False))
    helper = list(load_samples(released.repo, version))
    assert len(helper) == n and all(a.equals(b) for a, b in zip(helper, expected, strict=False))


def test_pull_and_load_work_offline_from_the_cache(released: Released, tmp_path: Path) -> None:
    run_cli("pull", f"{released.repo}@v1.1.0", "--out", str(tmp_path / "online"))  # fills the cache
    list(load_samples(released.repo, "v1.1.0"))
    code = (
        "import sys\n"
        "from histosynth.cli import main\n"
        "from histosynth.hub import load_samples\n"
        "assert main(['pull', sys.argv[1] + '@v1.1.0', '--out', sys.argv[2]]) == 0\n"
        "print('loaded', len(list(load_samples(sys.argv[1], 'v1.1.0'))))\n"
        "assert main(['pull', sys.argv[1] + '@v1.0.1', '--out', sys.argv[2] + '-missing']) == 2\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")  # no Hub
    result = run_subprocess(code, released.repo, str(tmp_path / "offline"), env=env)
    assert result.returncode == 0, result.stderr
    assert f"loaded {VERSIONS['v1.1.0'][1]}" in result.stdout
    assert "not in the local HF cache" in result.stderr
    expected = list(iter_samples(released.folders["v1.1.0"]))
    assert all(a.equals(b) for a, b in zip(iter_samples(tmp_path / "offline"), expected, strict=False))


def test_republishing_a_version_is_refused_and_changes_nothing(api: HfApi, released: Released, hub_server,
                                                             tmp_path: Path) -> None:
    before = repo_state(api, released.repo)
    changed = build_set(tmp_path / "ds", released.repo, "v1.0.0", seed=7, n=3)
    log = ServerLog(hub_server)
    code, printed = run_cli("publish", str(changed), "--repo", released.repo, "--version", "v1.0.0")
    assert code == 2
    assert f"already has version v1.0.0 (commit {released.commits['v1.0.0'][:12]})" in printed
    assert "published versions are immutable" in printed and "Nothing was uploaded" in printed
    assert log.writes() == [] and repo_state(api, released.repo) == before
    code, printed = run_cli("publish", str(changed), "--repo", released.repo, "--version", "1.2.0")
    assert code == 2 and "vMAJOR.MINOR.PATCH" in printed


def test_dry_run_lists_files_and_uploads_nothing(api: HfApi, released: Released, hub_server, tmp_path: Path) -> None:
    before = repo_state(api, released.repo)
    folder = build_set(tmp_path / "ds", released.repo, "v1.2.0", seed=3, n=4)
    log = ServerLog(hub_server)
    code, printed = run_cli("publish", str(folder), "--repo", released.repo, "--version", "v1.2.0", "--dry-run")
    assert code == 0, printed
    for path in folder.rglob("*"):
        if path.is_file():
            assert f"  {path.relative_to(folder).as_posix()}  " in printed
    assert "(delete: not in the folder)" in printed and "nothing was uploaded" in printed
    new_repo = f"{released.repo}-new"
    code, printed = run_cli("publish", str(folder), "--repo", new_repo, "--version", "v1.0.0", "--dry-run", "--private")
    assert code == 0 and f"would create the dataset repo {new_repo} (private)" in printed
    assert log.writes() == [] and repo_state(api, released.repo) == before
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(new_repo)


def corrupt_row(folder: Path) -> None:
    """Rewrite the first shard with a tissue map holding class 9, which simulator-tissue does not have."""
    shard = sorted((folder / "data").glob("*.parquet"))[0]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    tissue = row_to_sample(rows[0]).tissue.copy()
    tissue[0, 0] = 9
    rows[0]["tissue"] = {"bytes": encode_png(tissue), "path": None}
    pq.write_table(table.from_pylist(rows, schema=table.schema), shard)


@pytest.mark.parametrize("damage, message", [
    (lambda f: sorted((f / "data").glob("*.parquet"))[1].write_bytes(b"PAR1 truncated"), "unreadable parquet shard"),
    (corrupt_row, "row 0: not a valid Sample"),
    (lambda f: sorted((f / "data").glob("*.parquet"))[-1].unlink(), "split 'train' has"),
    (lambda f: (f / "notes.txt").write_text("x"), "unexpected files ['notes.txt']"),
    (lambda f: (f / "README.md").write_text((f / "README.md").read_text().replace("license: cc0-1.0\n", "")),
     "metadata has no `license`"),
])
def test_a_folder_failing_validation_is_refused_before_any_request(hub_server, api: HfApi, tmp_path: Path,
                                                                   damage, message) -> None:
    repo = f"{hub_server.user}/bad-{uuid.uuid4().hex[:8]}"
    folder = build_set(tmp_path / "ds", repo, "v1.0.0", seed=5, n=6)
    damage(folder)
    log = ServerLog(hub_server)
    code, printed = run_cli("publish", str(folder), "--repo", repo, "--version", "v1.0.0")
    assert code == 2 and message in printed, printed
    assert log.requests() == []
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(repo)


def test_nc_sa_source_license_is_enforced(tmp_path: Path, hub_server) -> None:
    folder = build_set(tmp_path / "ds", "o/n", "v1.0.0", seed=5, n=2)
    text = (folder / "README.md").read_text().replace("source_datasets:\n- original", "source_datasets:\n- extended|panda")
    (folder / "README.md").write_text(text)
    code, printed = run_cli("publish", str(folder), "--repo", f"{hub_server.user}/nc", "--version", "v1.0.0")
    assert code == 2 and "must be licensed 'cc-by-nc-sa-4.0'" in printed


def test_the_token_is_never_printed(released: Released, hub_server, tmp_path: Path) -> None:
    for printed in released.outputs.values():
        assert hub_server.token not in printed
    dummy = "hf_" + "dummyKnownToken0123456789abcdef"  # built in two parts: not a real-looking token in the source
    env = dict(os.environ, HF_TOKEN=dummy, HF_DEBUG="0")
    code = "import sys\nfrom histosynth.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    result = run_subprocess(code, "publish", str(released.folders["v1.0.0"]), "--repo", f"{released.repo}-x",
                            "--version", "v2.0.0", env=env)
    assert result.returncode == 2
    assert "the Hub refused the request (log in with `hf auth login` or set HF_TOKEN" in result.stderr
    assert dummy not in result.stdout + result.stderr and hub_server.token not in result.stdout + result.stderr
    assert dummy not in hub_server.log_text() and hub_server.token not in hub_server.log_text()


def test_killed_mid_upload_then_rerun_finishes_one_version(api: HfApi, hub_server, tmp_path: Path) -> None:
    repo = f"{hub_server.user}/killed-{uuid.uuid4().hex[:8]}"
    folder = build_set(tmp_path / "ds", repo, "v1.0.0", seed=2, n=12)
    shards = len(list((folder / "data").glob("*.parquet")))
    assert shards >= 3
    first = ServerLog(hub_server)
    result = run_subprocess(KILLER, "PUT", "/lfs-upload/", "publish", str(folder), "--repo", repo,
                            "--version", "v1.0.0")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert first.uploads() == 1  # exactly one shard reached the server before the kill
    tags, _, commits = repo_state(api, repo)
    assert tags == {} and len(commits) == 1  # created, nothing committed, nothing tagged
    rerun = ServerLog(hub_server)
    code, printed = run_cli("publish", str(folder), "--repo", repo, "--version", "v1.0.0")
    assert code == 0, printed
    assert rerun.uploads() == shards - 1  # the uploaded shard was not sent again
    tags, branches, after = repo_state(api, repo)
    assert tags == {"v1.0.0": after[0]} and branches == {"main": after[0]} and after[1:] == commits
    assert tree(api, repo, "v1.0.0") == files_of(folder) | {".gitattributes"}


def test_commit_landed_but_tag_did_not_rerun_tags_that_commit(api: HfApi, hub_server, tmp_path: Path) -> None:
    repo = f"{hub_server.user}/untagged-{uuid.uuid4().hex[:8]}"
    folder = build_set(tmp_path / "ds", repo, "v1.0.0", seed=4, n=5)
    result = run_subprocess(KILLER, "POST", "/commit/main", "publish", str(folder), "--repo", repo,
                            "--version", "v1.0.0", "--private")
    assert result.returncode == -signal.SIGKILL, result.stderr
    tags, _, commits = repo_state(api, repo)
    assert tags == {} and len(commits) == 2  # the commit landed, the tag did not
    log = ServerLog(hub_server)
    code, printed = run_cli("publish", str(folder), "--repo", repo, "--version", "v1.0.0")
    assert code == 0, printed
    assert "main already holds exactly these files" in printed and "tagging it, no new commit" in printed
    assert not [r for r in log.writes() if "/commit/" in r[1] or "/lfs" in r[1] or "/preupload/" in r[1]]
    tags, _, after = repo_state(api, repo)
    assert after == commits and tags == {"v1.0.0": commits[0]}
    assert api.dataset_info(repo).private is True


def test_a_concurrent_commit_fails_the_publish_and_a_rerun_replaces_it(api: HfApi, hub_server, tmp_path: Path) -> None:
    repo = f"{hub_server.user}/race-{uuid.uuid4().hex[:8]}"
    publish(build_set(tmp_path / "a", repo, "v1.0.0", seed=8, n=3), repo, "v1.0.0", log=lambda line: None)
    folder = build_set(tmp_path / "b", repo, "v1.1.0", seed=9, n=3)
    busy, intruder = [], []

    def intrude(response) -> None:  # someone else commits to main while our files are being prepared
        if not busy and response.request.method == "POST" and "/preupload/" in response.request.url.path:
            busy.append(True)
            intruder.append(HfApi().create_commit(repo, [CommitOperationAdd("late.txt", b"someone else")],
                                                  commit_message="concurrent", repo_type="dataset").oid)

    hooks = get_session().event_hooks["response"]
    hooks.append(intrude)
    try:
        with pytest.raises(PublishError, match="moved while publishing .* nothing was committed"):
            publish(folder, repo, "v1.1.0", log=lambda line: None)
    finally:
        hooks.remove(intrude)
    tags, branches, _ = repo_state(api, repo)
    assert list(tags) == ["v1.0.0"] and branches == {"main": intruder[0]}
    result = publish(folder, repo, "v1.1.0", log=lambda line: None)
    assert "late.txt" in result.deletions
    assert tree(api, repo, "v1.1.0") == files_of(folder) | {".gitattributes"}


def test_published_cards_validate_and_show_classes_and_provenance(api: HfApi, released: Released) -> None:
    for version in VERSIONS:
        path = hf_hub_download(released.repo, "README.md", repo_type="dataset", revision=version)
        text = Path(path).read_text(encoding="utf-8")
        assert text == (released.folders[version] / "README.md").read_text(encoding="utf-8")
        DatasetCard(text).validate(repo_type="dataset")  # the Hub's validator, remotely
        card = validate_card(text, remote=True)
        info = api.dataset_info(released.repo, revision=version)
        assert info.card_data.license == card.data.license == "cc0-1.0"
        assert card.data.histosynth["version"] == version
        for needle in ("| 1 | stroma | `#00c8c8` |", "| 5 | epithelial | `#ffa500` |", "| generator | `simulator` 0.1.0 |",
                       "| checkpoint hash | none: procedural, no weights |", f"--version {version}",
                       f"| seeds | base seed {VERSIONS[version][0]};", f"revision=\"{version}\""):
            assert needle in text, needle
    for spec in DATASETS.entries():  # the planned sets' cards pass the Hub's validator too
        DatasetCard(render_set_card(spec.target)).validate(repo_type="dataset")


def test_publish_api_returns_what_it_did(api: HfApi, hub_server, tmp_path: Path) -> None:
    repo = f"{hub_server.user}/api-{uuid.uuid4().hex[:8]}"
    folder = build_set(tmp_path / "ds", repo, "v0.1.0", seed=6, n=3)
    lines: list[str] = []
    result = publish(folder, repo, "v0.1.0", log=lines.append)
    assert result.created_repo and result.commit == api.dataset_info(repo, revision="v0.1.0").sha
    assert sorted(result.uploads) == sorted(f.path for f in result.files) and result.deletions == []
    build_set(tmp_path / "ds", repo, "v0.1.0", seed=6, n=3)  # rewritten identically: a new version tags the same commit
    again = publish(folder, repo, "v0.2.0", log=lines.append)
    assert again.reused_commit and again.commit == result.commit and "the commit of v0.1.0" in lines[-2]
