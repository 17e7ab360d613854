"""On-disk state of the test Hub: content-addressed blobs, one JSON snapshot per commit, refs per repo.

Layout under the root folder (plain files, easy to inspect when a test fails)::

    blobs/<sha256[:2]>/<sha256>                 file contents, regular and LFS alike
    tmp/                                        uploads in progress (renamed into blobs/ once verified)
    repos/<kind>/<namespace>/<name>/repo.json   {"private", "createdAt"}
    repos/<kind>/<namespace>/<name>/refs.json   {"branches": {name: sha}, "tags": {name: {"target", "message"}}}
    repos/<kind>/<namespace>/<name>/commits/<sha>.json
        {"id", "parents", "title", "message", "author", "date", "files": {path: FileEntry}}

A commit stores the whole file list (a snapshot), so reading a revision never walks history. Git object ids are
computed the way git does (sha1 of "blob <size>\\0<content>", of the LFS pointer for LFS files) because the clients
compare them with their own hashes to skip unchanged files.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import posixpath
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

KINDS = ("model", "dataset", "space")
SHORT_SHA_MIN = 7
# Default attributes of a new repo (a subset of the Hub's): these extensions are stored as LFS.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z *.arrow *.bin *.bz2 *.ckpt *.gz *.h5 *.lz4 *.npy *.npz *.onnx *.parquet *.pickle *.pkl *.pt *.pth"
        " *.safetensors *.tar *.tar.* *.tgz *.xz *.zip *.zst *.png *.jpg *.jpeg *.webp *.tiff *.wav *.mp3 *tfevents*"
    ).split()
)
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"


class HubError(Exception):
    """An error the server turns into an HTTP response the clients understand (status + X-Error-Code)."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def git_blob_oid(data: bytes) -> str:
    """Git's object id of a blob (what the Hub reports as `oid`/`blobId` of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The LFS pointer file git stores in place of an LFS file's content."""
    return LFS_POINTER.format(oid=sha256, size=size).encode()


def lfs_patterns(gitattributes: bytes) -> list[str]:
    """Patterns marked `filter=lfs` in a .gitattributes file."""
    patterns = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) > 1 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches_lfs(path: str, patterns: list[str]) -> bool:
    """Git's rule: a pattern without '/' matches the basename at any depth, one with '/' the whole path."""
    for pattern in patterns:
        target = path if "/" in pattern else posixpath.basename(path)
        if fnmatch.fnmatchcase(target, pattern.lstrip("/")):
            return True
    return False


def validate_path(path: str) -> str:
    """Refuse paths that could escape the repo or clash with git internals."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def now_iso() -> str:
    """Current UTC time in the Hub's format (ISO 8601, milliseconds, Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit snapshot."""

    sha256: str
    size: int
    lfs: bool
    oid: str  # git blob id: of the content (regular) or of the LFS pointer (LFS)

    @classmethod
    def make(cls, sha256: str, size: int, lfs: bool, content: bytes | None = None) -> FileEntry:
        """Build an entry, computing its git oid from the content (regular) or the pointer (LFS)."""
        if lfs:
            return cls(sha256, size, True, git_blob_oid(lfs_pointer(sha256, size)))
        assert content is not None
        return cls(sha256, size, False, git_blob_oid(content))

    def as_tree_item(self, path: str) -> dict[str, Any]:
        """The Hub's tree/paths-info JSON for this file."""
        item: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": path}
        if self.lfs:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            item["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return item


def _write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename) so a killed server never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


class Store:
    """All repos and blobs under one root folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp_dir = self.root / "tmp"
        for sub in ("blobs", "tmp", "repos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- blobs ------------------------------------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        """Where the content with this sha256 lives (whether or not it exists)."""
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, f"Invalid sha256: {sha256!r}")
        return self.root / "blobs" / sha256[:2] / sha256

    def has_blob(self, sha256: str, size: int | None = None) -> bool:
        """True if the blob is stored (and has `size` bytes, when given)."""
        path = self.blob_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def put_blob(self, data: bytes) -> str:
        """Store bytes, return their sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        if not self.has_blob(sha256):
            fd, tmp = tempfile.mkstemp(dir=self.tmp_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.adopt_blob(Path(tmp), sha256)
        return sha256

    def adopt_blob(self, tmp: Path, sha256: str) -> None:
        """Move an already verified temp file into blob storage."""
        target = self.blob_path(sha256)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)

    def read_blob(self, sha256: str) -> bytes:
        """Content of a stored blob."""
        return self.blob_path(sha256).read_bytes()

    # -- repos ------------------------------------------------------------------------------------------------------
    def repo_dir(self, kind: str, repo_id: str) -> Path:
        """Folder of a repo (whether or not it exists)."""
        namespace, _, name = repo_id.partition("/")
        if kind not in KINDS or not re.fullmatch(r"[\w.-]+", namespace) or not re.fullmatch(r"[\w.-]+", name):
            raise HubError(400, f"Invalid repo id {repo_id!r} or type {kind!r}")
        return self.root / "repos" / kind / namespace / name

    def repo(self, kind: str, repo_id: str) -> Repo:
        """An existing repo, or a 404 RepoNotFound."""
        directory = self.repo_dir(kind, repo_id)
        if not (directory / "repo.json").is_file():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return Repo(self, kind, repo_id, directory)

    def create_repo(self, kind: str, repo_id: str, private: bool, author: str) -> Repo:
        """Create a repo with one initial commit holding the default .gitattributes (as the Hub does)."""
        directory = self.repo_dir(kind, repo_id)
        if (directory / "repo.json").is_file():
            raise HubError(409, f"You already created this {kind} repo: {repo_id}")
        _write_json(directory / "refs.json", {"branches": {}, "tags": {}})
        _write_json(directory / "repo.json", {"private": private, "createdAt": now_iso()})
        repo = Repo(self, kind, repo_id, directory)
        attributes = ("file", ".gitattributes", DEFAULT_GITATTRIBUTES.encode())
        repo.commit("main", None, "initial commit", "", author, [attributes])
        return repo

    def delete_repo(self, kind: str, repo_id: str) -> None:
        """Remove a repo (its blobs stay: they may be shared)."""
        shutil.rmtree(self.repo(kind, repo_id).directory)


class Repo:
    """One repo: refs, commits and snapshots. Mutations happen without awaiting, hence atomically per request."""

    def __init__(self, store: Store, kind: str, repo_id: str, directory: Path):
        self.store, self.kind, self.repo_id, self.directory = store, kind, repo_id, directory

    @property
    def meta(self) -> dict[str, Any]:
        """repo.json: visibility and creation date."""
        return json.loads((self.directory / "repo.json").read_text())

    @property
    def refs(self) -> dict[str, Any]:
        """refs.json: branch heads and tags."""
        return json.loads((self.directory / "refs.json").read_text())

    def _save_refs(self, refs: dict[str, Any]) -> None:
        _write_json(self.directory / "refs.json", refs)

    def resolve(self, revision: str) -> str:
        """Commit sha of a branch, tag, full sha or unique sha prefix; 404 RevisionNotFound otherwise."""
        refs = self.refs
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        if revision.startswith("refs/tags/") and name in refs["tags"]:
            return refs["tags"][name]["target"]
        if name in refs["branches"]:
            return refs["branches"][name]
        if name in refs["tags"]:
            return refs["tags"][name]["target"]
        if re.fullmatch(r"[0-9a-f]{%d,40}" % SHORT_SHA_MIN, revision):
            found = [p.stem for p in (self.directory / "commits").glob(f"{revision}*.json")]
            if len(found) == 1:
                return found[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def read_commit(self, sha: str) -> dict[str, Any]:
        """A commit's JSON (header + snapshot)."""
        return json.loads((self.directory / "commits" / f"{sha}.json").read_text())

    def files(self, sha: str) -> dict[str, FileEntry]:
        """The snapshot of a commit: path -> entry."""
        return {path: FileEntry(**entry) for path, entry in self.read_commit(sha)["files"].items()}

    def history(self, sha: str) -> list[dict[str, Any]]:
        """Commits reachable from `sha` by first parents, newest first."""
        commits = []
        current: str | None = sha
        while current is not None:
            commit = self.read_commit(current)
            commits.append(commit)
            current = commit["parents"][0] if commit["parents"] else None
        return commits

    def commit(
        self,
        branch: str,
        parent_commit: str | None,
        title: str,
        message: str,
        author: str,
        operations: list[tuple],
    ) -> str:
        """Apply operations on top of a branch head and move the branch; refuse a stale `parent_commit` (412).

        Operations: ("file", path, bytes), ("lfsFile", path, sha256, size), ("deletedFile", path),
        ("deletedFolder", path). A new repo's first commit creates the branch.
        """
        refs = self.refs
        head = refs["branches"].get(branch)
        if head is None and refs["branches"]:
            if branch in refs["tags"]:
                raise HubError(400, f"Cannot commit to tag {branch}: only branches move")
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        if parent_commit is not None and parent_commit != head:
            raise HubError(412, f"A commit has happened since: parent commit {parent_commit} is not the head {head}")
        files = {p: asdict(e) for p, e in self.files(head).items()} if head else {}
        for op in operations:
            kind, path = op[0], validate_path(op[1])
            if kind == "file":
                content = op[2]
                files[path] = asdict(FileEntry.make(self.store.put_blob(content), len(content), False, content))
            elif kind == "lfsFile":
                sha256, size = op[2], op[3]
                if not self.store.has_blob(sha256, size):
                    raise HubError(400, f"LFS object {sha256} ({size} bytes) for {path} was not uploaded")
                files[path] = asdict(FileEntry.make(sha256, size, True))
            elif kind == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            elif kind == "deletedFolder":
                inside = [p for p in files if p.startswith(path.rstrip("/") + "/")]
                if not inside:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                for p in inside:
                    del files[p]
            else:
                raise HubError(400, f"Unknown commit operation {kind!r}")
        commit = {
            "parents": [head] if head else [],
            "title": title,
            "message": message,
            "author": author,
            "date": now_iso(),
            "files": dict(sorted(files.items())),
        }
        sha = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        _write_json(self.directory / "commits" / f"{sha}.json", {"id": sha, **commit})
        refs["branches"][branch] = sha
        self._save_refs(refs)
        return sha

    def create_tag(self, tag: str, revision: str, message: str | None) -> str:
        """Tag a revision; an existing tag (or a branch of that name) is a 409 and changes nothing."""
        refs = self.refs
        if tag in refs["tags"] or tag in refs["branches"]:
            raise HubError(409, f"Tag {tag} already exists")
        _check_ref_name(tag)
        sha = self.resolve(revision)
        refs["tags"][tag] = {"target": sha, "message": message or ""}
        self._save_refs(refs)
        return sha

    def delete_tag(self, tag: str) -> None:
        """Remove a tag; 404 RevisionNotFound when missing."""
        refs = self.refs
        if refs["tags"].pop(tag, None) is None:
            raise HubError(404, f"Invalid rev id: {tag}", "RevisionNotFound")
        self._save_refs(refs)

    def create_branch(self, branch: str, starting_point: str | None) -> str:
        """Create a branch at a revision (default: main's head); 409 if the name is taken."""
        refs = self.refs
        if branch in refs["branches"] or branch in refs["tags"]:
            raise HubError(409, f"Reference {branch} already exists")
        _check_ref_name(branch)
        sha = self.resolve(starting_point or "main")
        refs["branches"][branch] = sha
        self._save_refs(refs)
        return sha

    def delete_branch(self, branch: str) -> None:
        """Remove a branch other than main."""
        refs = self.refs
        if branch == "main":
            raise HubError(403, "Cannot delete the main branch")
        if refs["branches"].pop(branch, None) is None:
            raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
        self._save_refs(refs)


def _check_ref_name(name: str) -> None:
    """A conservative subset of git's ref-name rules (the Hub refuses refs/pr/* and the like)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]*", name) or ".." in name or name.startswith("refs/"):
        raise HubError(400, f"Invalid reference name: {name!r}")
