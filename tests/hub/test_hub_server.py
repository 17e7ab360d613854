"""The local test Hub against the real clients: publish two tagged versions, then pull each one back.

Publishing follows the project's rule (ARCHITECTURE.md): one `create_commit` of the validated folder, then
`create_tag`. Everything goes over HTTP through `huggingface_hub` and `datasets`; nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import random
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    DatasetCard,
    HfApi,
    HfFileSystem,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

pytestmark = pytest.mark.hub

PARQUET = "data/train-00000-of-00001.parquet"
CARD = """---
license: cc0-1.0
tags:
- histopathology
- synthetic
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*.parquet
---
# histosynth hub-test dataset {version}
"""


@dataclass
class Published:
    """A dataset repo with two tagged versions, and the local folders they were committed from."""

    repo_id: str
    folders: dict[str, Path]  # tag -> local folder committed for it
    rows: dict[str, dict[str, list]]  # tag -> column -> values
    commits: dict[str, str]  # tag -> commit oid


def build_folder(folder: Path, version: str, n_rows: int, seed: int) -> dict[str, list]:
    """A dataset folder as the factory writes it: README with YAML + one parquet shard (with datasets' features)."""
    rng = random.Random(seed)
    rows = {
        "idx": list(range(n_rows)),
        "label": [rng.choice(["tumor", "stroma", "normal"]) for _ in range(n_rows)],
        "patch": [rng.randbytes(1024) for _ in range(n_rows)],  # incompressible: the shard is ~n_rows KiB
    }
    (folder / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).to_parquet(str(folder / PARQUET))
    (folder / "README.md").write_text(CARD.format(version=version))
    return rows


def commit_folder(api: HfApi, repo_id: str, folder: Path, message: str, parent: str | None) -> str:
    """One commit holding every file of the folder; returns its oid."""
    operations = [
        CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]
    info = api.create_commit(
        repo_id, operations, commit_message=message, repo_type="dataset", parent_commit=parent
    )
    return info.oid


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None):
    """A raw HTTP call (stdlib, no HF client) -> (status, headers, body)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


@pytest.fixture(scope="module")
def api(hub_server) -> HfApi:
    """A client with the session's token (from HF_TOKEN)."""
    return HfApi()


@pytest.fixture(scope="module")
def published(api: HfApi, hub_server, tmp_path_factory: pytest.TempPathFactory) -> Published:
    """Create a dataset repo, publish v1.0.0 and v1.1.0 (one commit + one tag each)."""
    repo_id = f"{hub_server.user}/hubtest-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type="dataset")
    folders = {tag: tmp_path_factory.mktemp(tag) for tag in ("v1.0.0", "v1.1.0")}
    rows = {
        "v1.0.0": build_folder(folders["v1.0.0"], "v1.0.0", n_rows=120, seed=0),
        "v1.1.0": build_folder(folders["v1.1.0"], "v1.1.0", n_rows=80, seed=1),
    }
    commits: dict[str, str] = {}
    parent = api.dataset_info(repo_id).sha
    for tag in ("v1.0.0", "v1.1.0"):
        parent = commits[tag] = commit_folder(api, repo_id, folders[tag], f"release {tag}", parent)
        api.create_tag(repo_id, tag=tag, revision=parent, repo_type="dataset", tag_message=f"histosynth {tag}")
    return Published(repo_id, folders, rows, commits)


def test_whoami_answers_for_the_test_token(api: HfApi, hub_server) -> None:
    assert api.whoami()["name"] == hub_server.user


def test_refs_list_both_tags_and_main(api: HfApi, published: Published) -> None:
    refs = api.list_repo_refs(published.repo_id, repo_type="dataset")
    assert {t.name: t.target_commit for t in refs.tags} == published.commits
    assert {b.name: b.target_commit for b in refs.branches} == {"main": published.commits["v1.1.0"]}
    assert api.dataset_info(published.repo_id, revision="v1.0.0").sha == published.commits["v1.0.0"]


def test_shard_went_through_lfs_and_card_did_not(api: HfApi, published: Published) -> None:
    infos = {i.path: i for i in api.get_paths_info(published.repo_id, [PARQUET, "README.md"], repo_type="dataset",
                                                   revision="v1.0.0")}
    shard = (published.folders["v1.0.0"] / PARQUET).read_bytes()
    assert infos[PARQUET].lfs is not None
    assert infos[PARQUET].lfs.sha256 == hashlib.sha256(shard).hexdigest()
    assert infos[PARQUET].size == len(shard) > 100_000
    assert infos["README.md"].lfs is None
    tree = {e.path for e in api.list_repo_tree(published.repo_id, repo_type="dataset", revision="v1.0.0",
                                               recursive=True)}
    assert tree == {".gitattributes", "README.md", "data", PARQUET}
    info = api.dataset_info(published.repo_id, revision="v1.1.0", files_metadata=True)
    assert info.card_data.license == "cc0-1.0"
    assert {s.rfilename for s in info.siblings} == {".gitattributes", "README.md", PARQUET}


@pytest.mark.parametrize("tag", ["v1.0.0", "v1.1.0"])
def test_snapshot_download_returns_the_tagged_bytes(published: Published, tag: str) -> None:
    local = Path(snapshot_download(published.repo_id, repo_type="dataset", revision=tag))
    assert local.name == published.commits[tag]
    for name in ("README.md", PARQUET):
        assert (local / name).read_bytes() == (published.folders[tag] / name).read_bytes()


@pytest.mark.parametrize("tag", ["v1.0.0", "v1.1.0"])
def test_load_dataset_at_a_tag_returns_its_rows(published: Published, tag: str) -> None:
    ds = datasets.load_dataset(published.repo_id, revision=tag, split="train")
    assert ds.to_dict() == published.rows[tag]


def test_streaming_at_a_tag_reads_through_hffilesystem(published: Published) -> None:
    ds = datasets.load_dataset(published.repo_id, revision="v1.0.0", split="train", streaming=True)
    assert [row["idx"] for row in ds] == published.rows["v1.0.0"]["idx"]


def test_resolve_serves_ranges(published: Published, hub_server) -> None:
    shard = (published.folders["v1.0.0"] / PARQUET).read_bytes()
    path = hf_hub_download(published.repo_id, PARQUET, repo_type="dataset", revision="v1.0.0")
    assert Path(path).read_bytes() == shard
    url = f"{hub_server.url}/datasets/{published.repo_id}/resolve/v1.0.0/{PARQUET}"
    status, headers, body = http(url, headers={"Range": "bytes=100-4195"})
    assert (status, body, headers["Content-Range"]) == (206, shard[100:4196], f"bytes 100-4195/{len(shard)}")
    status, headers, _ = http(url, method="HEAD")
    assert status == 200
    assert headers["X-Repo-Commit"] == published.commits["v1.0.0"]
    assert headers["X-Linked-Etag"] == f'"{hashlib.sha256(shard).hexdigest()}"'
    assert int(headers["X-Linked-Size"]) == int(headers["Content-Length"]) == len(shard)
    assert http(url, headers={"Range": f"bytes={len(shard)}-"})[0] == 416
    # HfFileSystem (what datasets streams through) reads with Range requests too.
    with HfFileSystem().open(f"datasets/{published.repo_id}@v1.0.0/{PARQUET}", "rb", block_size=1024) as f:
        f.seek(len(shard) - 3000)
        assert f.read(2000) == shard[-3000:-1000]


def test_existing_tag_is_refused_and_unchanged(api: HfApi, published: Published) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(published.repo_id, tag="v1.0.0", revision="main", repo_type="dataset")
    assert err.value.response.status_code == 409
    tags = {t.name: t.target_commit for t in api.list_repo_refs(published.repo_id, repo_type="dataset").tags}
    assert tags == published.commits


def test_stale_parent_commit_is_refused(api: HfApi, published: Published) -> None:
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            published.repo_id,
            [CommitOperationAdd(path_in_repo="late.txt", path_or_fileobj=b"too late")],
            commit_message="stale",
            repo_type="dataset",
            parent_commit=published.commits["v1.0.0"],
        )
    assert err.value.response.status_code == 412
    assert api.dataset_info(published.repo_id).sha == published.commits["v1.1.0"]


def test_branch_from_a_tag_moves_independently(api: HfApi, published: Published) -> None:
    api.create_branch(published.repo_id, branch="fix", revision="v1.0.0", repo_type="dataset")
    oid = api.create_commit(
        published.repo_id,
        [CommitOperationAdd(path_in_repo="NOTES.md", path_or_fileobj=b"erratum\n")],
        commit_message="erratum",
        repo_type="dataset",
        revision="fix",
    ).oid
    branches = {b.name: b.target_commit for b in api.list_repo_refs(published.repo_id, repo_type="dataset").branches}
    assert branches == {"main": published.commits["v1.1.0"], "fix": oid}
    commits = api.list_repo_commits(published.repo_id, repo_type="dataset", revision="fix")
    assert [c.commit_id for c in commits[:2]] == [oid, published.commits["v1.0.0"]]
    api.delete_branch(published.repo_id, branch="fix", repo_type="dataset")


def test_writes_need_the_token(published: Published, hub_server) -> None:
    anonymous = HfApi(token=False)
    for write in (
        lambda: anonymous.create_repo(f"{hub_server.user}/anon", repo_type="dataset"),
        lambda: anonymous.create_tag(published.repo_id, tag="v9", repo_type="dataset"),
        lambda: anonymous.create_commit(
            published.repo_id, [CommitOperationAdd(path_in_repo="x.txt", path_or_fileobj=b"x")],
            commit_message="anon", repo_type="dataset"),
    ):
        with pytest.raises(HfHubHTTPError) as err:
            write()
        assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_tag(published.repo_id, tag="v9", repo_type="dataset")
    assert err.value.response.status_code == 401
    assert [t.name for t in HfApi().list_repo_refs(published.repo_id, repo_type="dataset").tags] == ["v1.0.0", "v1.1.0"]


def test_lfs_upload_checks_content_and_commit_checks_uploads(published: Published, hub_server) -> None:
    auth = {"Authorization": f"Bearer {hub_server.token}", "Content-Type": "application/json"}
    data = b"real content"
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    status, _, body = http(f"{hub_server.url}/datasets/{published.repo_id}.git/info/lfs/objects/batch", "POST",
                           auth, json.dumps(batch).encode())
    assert status == 200
    href = json.loads(body)["objects"][0]["actions"]["upload"]["href"]
    assert http(href, "PUT", body=b"other content")[0] == 400
    assert http(href.replace("sig=", "sig=0"), "PUT", body=data)[0] == 403
    lines = [{"key": "header", "value": {"summary": "missing blob"}},
             {"key": "lfsFile", "value": {"path": "x.bin", "algo": "sha256", "oid": oid, "size": len(data)}}]
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    status, _, _ = http(f"{hub_server.url}/api/datasets/{published.repo_id}/commit/main", "POST",
                        {**auth, "Content-Type": "application/x-ndjson"}, ndjson)
    assert status == 400
    assert http(href, "PUT", body=data)[0] == 200
    assert http(f"{hub_server.url}/api/repos/create", "POST", auth, b"not json")[0] == 400  # 400, not a retried 500


def test_private_repo_is_hidden_without_token(api: HfApi, hub_server) -> None:
    repo_id = f"{hub_server.user}/private-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id, repo_type="dataset", private=True)
    assert api.dataset_info(repo_id).private is True
    anonymous = HfApi(token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.dataset_info(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.list_repo_refs(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", repo_type="dataset", token=False)
    api.delete_repo(repo_id, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info(repo_id)


def test_dataset_card_validation(api: HfApi, published: Published) -> None:
    DatasetCard(CARD.format(version="x")).validate(repo_type="dataset")
    for bad in ("---\ntags: {a: 1}\n---\n# card\n", "---\nconfigs: 3\n---\n# card\n"):
        with pytest.raises(ValueError, match="must be"):  # the server's message, as DatasetCard.validate raises it
            DatasetCard(bad).validate(repo_type="dataset")
    # Malformed YAML (which DatasetCard itself cannot even parse): create_commit asks the server before uploading.
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.create_commit(
            published.repo_id,
            [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=b"---\nlicense: [unclosed\n---\n")],
            commit_message="bad card",
            repo_type="dataset",
        )
    assert api.dataset_info(published.repo_id).sha == published.commits["v1.1.0"]


def test_server_log_never_contains_the_token(hub_server) -> None:
    """Runs last in this module: by now every endpoint above has been called with the token."""
    log = hub_server.log_text()
    assert "POST /api/repos/create 200" in log
    assert hub_server.token not in log
