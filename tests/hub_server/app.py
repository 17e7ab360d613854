"""HTTP layer of the test Hub: the endpoints `huggingface_hub` and `datasets` call, with the Hub's response shapes.

Routing is done on the raw (still percent-encoded) path because the clients quote revisions with `safe=""`:
`refs%2Fpr%2F1` must stay one segment, which a router working on the decoded path cannot tell from `refs/pr/1`.
Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound) so the clients raise their
usual exception types. Auth: one bearer token (given at start-up, never logged); writes need it, reads of private
repos need it, and a wrong token is refused everywhere, as on the Hub.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send

from .cards import parse_card
from .storage import FileEntry, HubError, Repo, Store, lfs_patterns, matches_lfs

log = logging.getLogger("hub_server")

LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files above 10 MB
KIND_OF = {"models": "model", "datasets": "dataset", "spaces": "space"}
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}

Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
_REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+?)"
_API = r"/api/(?P<kind>models|datasets|spaces)/" + _REPO
_GIT = r"/(?:(?P<kind>datasets|spaces)/)?" + _REPO  # resolve and LFS URLs: models have no type prefix
_REV = r"(?P<rev>[^/]+)"


class HubApp:
    """ASGI application serving one Store."""

    def __init__(self, store: Store, token: str, user: str = "histosynth-test"):
        if not token:
            raise ValueError("the test Hub needs a token to guard writes")
        self.store, self.user = store, user
        self._token = token.encode()
        self._upload_secret = os.urandom(32)  # signs LFS upload URLs (the client PUTs them without auth)
        routes: list[tuple[str, str, Handler]] = [
            ("GET", r"/api/whoami-v2", self.whoami),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", r"/api/repos/create", self.create_repo),
            ("DELETE", r"/api/repos/delete", self.delete_repo),
            ("GET", _API, self.repo_info),
            ("GET", _API + r"/revision/" + _REV, self.repo_info),
            ("GET", _API + r"/refs", self.list_refs),
            ("GET", _API + r"/commits/" + _REV, self.list_commits),
            ("GET", _API + r"/tree/" + _REV + r"(?:/(?P<path>.*))?", self.tree),
            ("POST", _API + r"/paths-info/" + _REV, self.paths_info),
            ("POST", _API + r"/preupload/" + _REV, self.preupload),
            ("POST", _API + r"/commit/" + _REV, self.commit),
            ("POST", _API + r"/tag/" + _REV, self.create_tag),
            ("DELETE", _API + r"/tag/(?P<tag>[^/]+)", self.delete_tag),
            ("POST", _API + r"/branch/(?P<branch>[^/]+)", self.create_branch),
            ("DELETE", _API + r"/branch/(?P<branch>[^/]+)", self.delete_branch),
            ("POST", _GIT + r"\.git/info/lfs/objects/batch", self.lfs_batch),
            ("POST", _GIT + r"\.git/info/lfs/objects/verify", self.lfs_verify),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self.lfs_upload),
            ("GET", _GIT + r"/resolve/" + _REV + r"/(?P<path>.+)", self.resolve),
            ("HEAD", _GIT + r"/resolve/" + _REV + r"/(?P<path>.+)", self.resolve),
        ]
        self.routes = [(method, re.compile(pattern), handler) for method, pattern, handler in routes]

    # -- plumbing ---------------------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one HTTP request; HubError becomes the Hub's error response."""
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?", 1)[0]
        try:
            response = await self.dispatch(request, raw_path)
        except HubError as err:
            response = error_response(err)
        except (ValueError, KeyError, TypeError) as exc:  # malformed body: a 400, never a 500 the client retries
            response = error_response(HubError(400, f"Bad request: {type(exc).__name__}: {exc}"))
        # Method, path and status only: never headers (the token) nor the query (signed upload URLs).
        log.info("%s %s %d", request.method, raw_path, response.status_code)
        await response(scope, receive, send)

    async def dispatch(self, request: Request, raw_path: str) -> Response:
        """Find the route matching method + raw path and call it with its unquoted path parameters."""
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(raw_path)
            if match and method == request.method:
                params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                return await handler(request, params)
        log.warning("no route for %s %s", request.method, raw_path)
        raise HubError(404, f"Not found: {request.method} {raw_path}")

    def authenticate(self, request: Request) -> str | None:
        """The user behind the bearer token, None without one; a wrong token is a 401 everywhere."""
        header = request.headers.get("authorization")
        if header is None:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._token):
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.user

    def require_user(self, request: Request) -> str:
        """The authenticated user, or a 401 (writes)."""
        user = self.authenticate(request)
        if user is None:
            raise HubError(401, "You must be authenticated to perform this action")
        return user

    def readable_repo(self, request: Request, params: dict[str, str]) -> Repo:
        """The repo of the URL if the caller may read it. Like the Hub, an anonymous caller gets the same 401
        for a missing and a private repo, so private names do not leak."""
        user = self.authenticate(request)
        kind = KIND_OF[params.get("kind", "models")]
        try:
            repo = self.store.repo(kind, f"{params['ns']}/{params['name']}")
        except HubError:
            if user is None:
                raise HubError(401, "Repository not found", "RepoNotFound") from None
            raise
        if repo.meta["private"] and user is None:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    def writable_repo(self, request: Request, params: dict[str, str]) -> tuple[Repo, str]:
        """The repo of the URL and the authenticated user (any user may write any namespace here)."""
        user = self.require_user(request)
        return self.readable_repo(request, params), user

    def base_url(self, request: Request) -> str:
        """Scheme + host the client used, so URLs we hand out match its HF_ENDPOINT."""
        return str(request.base_url).rstrip("/")

    # -- account and cards ------------------------------------------------------------------------------------------
    async def whoami(self, request: Request, params: dict[str, str]) -> Response:
        """/api/whoami-v2 for the one test user."""
        user = self.require_user(request)
        return JSONResponse(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": "Histosynth test user",
                "email": None,
                "emailVerified": False,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    async def validate_yaml(self, request: Request, params: dict[str, str]) -> Response:
        """Check a card's YAML front matter; 400 with {"errors": [{"message"}]} (or text, if asked) when bad."""
        self.authenticate(request)
        body = await request.json()
        _, errors, warnings = parse_card(str(body.get("content", "")))
        if errors:
            if "text/plain" in request.headers.get("accept", ""):
                return PlainTextResponse("\n".join(errors), status_code=400)
            return JSONResponse(
                {"error": "Invalid metadata in README.md", "errors": [{"message": e} for e in errors], "warnings": []},
                status_code=400,
            )
        return JSONResponse({"errors": [], "warnings": [{"message": w} for w in warnings]})

    # -- repos ------------------------------------------------------------------------------------------------------
    async def create_repo(self, request: Request, params: dict[str, str]) -> Response:
        """POST /api/repos/create {"name", "organization", "type", "visibility"|"private"} -> {"url"}."""
        user = self.require_user(request)
        body = await request.json()
        kind = body.get("type") or "model"
        repo_id = f"{body.get('organization') or user}/{body['name']}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
        self.store.create_repo(kind, repo_id, private, user)
        url = f"{self.base_url(request)}/{URL_PREFIX[kind]}{repo_id}"
        return JSONResponse({"url": url, "name": repo_id, "id": repo_id})

    async def delete_repo(self, request: Request, params: dict[str, str]) -> Response:
        """DELETE /api/repos/delete {"name", "organization", "type"}."""
        user = self.require_user(request)
        body = await request.json()
        self.store.delete_repo(body.get("type") or "model", f"{body.get('organization') or user}/{body['name']}")
        return JSONResponse({})

    async def repo_info(self, request: Request, params: dict[str, str]) -> Response:
        """Repo info at main or at /revision/{rev}: sha, siblings (with sizes and LFS data if ?blobs), cardData."""
        repo = self.readable_repo(request, params)
        sha = repo.resolve(params.get("rev", "main"))
        commit, files = repo.read_commit(sha), repo.files(sha)
        blobs = request.query_params.get("blobs", "").lower() in ("1", "true")
        siblings = []
        for path, entry in files.items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    lfs = entry.as_tree_item(path)["lfs"]
                    sibling["lfs"] = {"size": entry.size, "sha256": entry.sha256, "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        card = None
        if "README.md" in files:
            card, _, _ = parse_card(self.store.read_blob(files["README.md"].sha256).decode("utf-8", "replace"))
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.kind}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": repo.meta["private"],
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": repo.meta["createdAt"],
            "lastModified": commit["date"],
            "siblings": siblings,
            "usedStorage": sum(e.size for e in files.values()),
        }
        if card:
            info["cardData"] = card
        return JSONResponse(info)

    async def list_refs(self, request: Request, params: dict[str, str]) -> Response:
        """Branches and tags with their target commits."""
        refs = self.readable_repo(request, params).refs
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in refs["branches"].items()]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["target"]} for n, t in refs["tags"].items()]
        return JSONResponse({"branches": branches, "converts": [], "tags": tags, "pullRequests": []})

    async def list_commits(self, request: Request, params: dict[str, str]) -> Response:
        """First-parent history of a revision, newest first (one page)."""
        repo = self.readable_repo(request, params)
        return JSONResponse(
            [
                {"id": c["id"], "title": c["title"], "message": c["message"], "authors": [{"user": c["author"]}],
                 "date": c["date"]}
                for c in repo.history(repo.resolve(params["rev"]))
            ]
        )

    # -- listing ----------------------------------------------------------------------------------------------------
    async def tree(self, request: Request, params: dict[str, str]) -> Response:
        """Entries under a folder at a revision; ?recursive lists the whole subtree, ?expand adds lastCommit."""
        repo = self.readable_repo(request, params)
        sha = repo.resolve(params["rev"])
        files = repo.files(sha)
        folder = params.get("path", "").strip("/")
        recursive = request.query_params.get("recursive", "").lower() in ("1", "true")
        expand = request.query_params.get("expand", "").lower() in ("1", "true")
        if folder and not any(p.startswith(folder + "/") for p in files):
            raise HubError(404, f"Path {folder} is not a folder at this revision", "EntryNotFound",
                           {"X-Repo-Commit": sha})
        paths: set[str] = set()
        for path in files:
            if folder and not path.startswith(folder + "/"):
                continue
            rest = path[len(folder) + 1:] if folder else path
            parts = rest.split("/")
            prefix = f"{folder}/" if folder else ""
            depth = len(parts) if recursive else 1
            paths.update(prefix + "/".join(parts[: i + 1]) for i in range(min(depth, len(parts))))
        history = repo.history(sha) if expand else []
        return JSONResponse([tree_item(files, p, history) for p in sorted(paths)])

    async def paths_info(self, request: Request, params: dict[str, str]) -> Response:
        """Info on the given paths at a revision (form- or JSON-encoded); missing paths are left out."""
        repo = self.readable_repo(request, params)
        sha = repo.resolve(params["rev"])
        files = repo.files(sha)
        body = await request.body()
        if request.headers.get("content-type", "").startswith("application/json"):
            data = json.loads(body or b"{}")
            paths, expand = data.get("paths", []), bool(data.get("expand"))
        else:
            form = parse_qs(body.decode(), keep_blank_values=True)
            paths, expand = form.get("paths", []), form.get("expand", ["false"])[0].lower() in ("1", "true")
        history = repo.history(sha) if expand else []
        out = []
        for path in (p.strip("/") for p in paths):
            if path in files or any(p.startswith(path + "/") for p in files):
                out.append(tree_item(files, path, history))
        return JSONResponse(out)

    # -- writing ----------------------------------------------------------------------------------------------------
    async def preupload(self, request: Request, params: dict[str, str]) -> Response:
        """Tell the client which files go through LFS: .gitattributes patterns, size, or binary-looking content."""
        repo, _ = self.writable_repo(request, params)
        head = repo.resolve(params["rev"])
        files = repo.files(head)
        attrs = files.get(".gitattributes")
        patterns = lfs_patterns(self.store.read_blob(attrs.sha256)) if attrs else []
        body = await request.json()
        out = []
        for item in body.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = size >= LFS_SIZE_THRESHOLD or b"\0" in sample or matches_lfs(path, patterns)
            existing = files.get(path)
            remote_oid = (existing.sha256 if existing.lfs else existing.oid) if existing else None
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": remote_oid})
        return JSONResponse({"files": out, "commitOid": head})

    async def commit(self, request: Request, params: dict[str, str]) -> Response:
        """NDJSON commit: a header line, then file / lfsFile / deletedFile / deletedFolder lines."""
        repo, user = self.writable_repo(request, params)
        if request.query_params.get("create_pr"):
            raise HubError(400, "The test Hub does not support pull requests")
        header: dict[str, Any] = {}
        operations: list[tuple] = []
        for line in (await request.body()).splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                header = value
            elif key == "file":
                raw = value["content"]
                content = base64.b64decode(raw) if value.get("encoding") == "base64" else raw.encode()
                operations.append(("file", value["path"], content))
            elif key == "lfsFile":
                size = value.get("size")
                if size is None:  # copies of LFS files come without a size
                    blob = self.store.blob_path(value["oid"])
                    size = blob.stat().st_size if blob.is_file() else -1
                operations.append(("lfsFile", value["path"], value["oid"], int(size)))
            elif key in ("deletedFile", "deletedFolder"):
                operations.append((key, value["path"]))
            else:
                raise HubError(400, f"Unsupported commit line {key!r}")
        if not header.get("summary"):
            raise HubError(400, "The commit header needs a summary")
        branch = params["rev"].removeprefix("refs/heads/")
        sha = repo.commit(branch, header.get("parentCommit"), header["summary"], header.get("description", ""),
                          user, operations)
        url = f"{self.base_url(request)}/{URL_PREFIX[repo.kind]}{repo.repo_id}/commit/{sha}"
        return JSONResponse({"success": True, "commitOid": sha, "commitUrl": url, "hookOutput": "",
                             "pullRequestUrl": None})

    async def create_tag(self, request: Request, params: dict[str, str]) -> Response:
        """POST /tag/{revision} {"tag", "message"}; 409 if the tag exists."""
        repo, _ = self.writable_repo(request, params)
        body = await request.json()
        sha = repo.create_tag(body["tag"], params["rev"], body.get("message"))
        return JSONResponse({"name": body["tag"], "ref": f"refs/tags/{body['tag']}", "targetCommit": sha})

    async def delete_tag(self, request: Request, params: dict[str, str]) -> Response:
        """DELETE /tag/{tag}."""
        repo, _ = self.writable_repo(request, params)
        repo.delete_tag(params["tag"])
        return JSONResponse({})

    async def create_branch(self, request: Request, params: dict[str, str]) -> Response:
        """POST /branch/{branch} {"startingPoint"}; 409 if the name exists."""
        repo, _ = self.writable_repo(request, params)
        body = json.loads(await request.body() or b"{}")
        sha = repo.create_branch(params["branch"], body.get("startingPoint"))
        return JSONResponse({"name": params["branch"], "ref": f"refs/heads/{params['branch']}", "targetCommit": sha})

    async def delete_branch(self, request: Request, params: dict[str, str]) -> Response:
        """DELETE /branch/{branch} (not main)."""
        repo, _ = self.writable_repo(request, params)
        repo.delete_branch(params["branch"])
        return JSONResponse({})

    # -- LFS --------------------------------------------------------------------------------------------------------
    def _upload_signature(self, oid: str, size: int) -> str:
        return hmac.new(self._upload_secret, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    async def lfs_batch(self, request: Request, params: dict[str, str]) -> Response:
        """git-lfs batch API, upload only, basic transfer: a signed PUT URL plus a verify URL per missing object."""
        repo, _ = self.writable_repo(request, params)
        body = await request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "The test Hub's LFS batch endpoint only handles uploads")
        base = self.base_url(request)
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj["oid"]), int(obj["size"])
            if not re.fullmatch(r"[0-9a-f]{64}", oid) or size < 0:
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid object"}})
            elif self.store.has_blob(oid, size):
                objects.append({"oid": oid, "size": size})  # no actions: already stored
            else:
                href = f"{base}/lfs-upload/{oid}?size={size}&sig={self._upload_signature(oid, size)}"
                verify = f"{base}/{URL_PREFIX[repo.kind]}{repo.repo_id}.git/info/lfs/objects/verify"
                objects.append({"oid": oid, "size": size, "authenticated": True,
                                "actions": {"upload": {"href": href}, "verify": {"href": verify}}})
        return JSONResponse({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                            media_type="application/vnd.git-lfs+json")

    async def lfs_upload(self, request: Request, params: dict[str, str]) -> Response:
        """PUT of one LFS object to a signed URL; the content must match the announced sha256 and size."""
        oid = params["oid"]
        size = int(request.query_params.get("size", "-1"))
        if not hmac.compare_digest(request.query_params.get("sig", ""), self._upload_signature(oid, size)):
            raise HubError(403, "Invalid or missing upload signature")
        digest, received = hashlib.sha256(), 0
        fd, tmp = tempfile.mkstemp(dir=self.store.tmp_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                async for chunk in request.stream():
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
            if received != size or digest.hexdigest() != oid:
                raise HubError(400, f"Uploaded content does not match: {received} bytes, sha256 {digest.hexdigest()}")
            self.store.adopt_blob(Path(tmp), oid)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return Response(status_code=200)

    async def lfs_verify(self, request: Request, params: dict[str, str]) -> Response:
        """POST {"oid", "size"}: 200 if that object is stored with that size."""
        self.writable_repo(request, params)
        body = await request.json()
        if not self.store.has_blob(str(body["oid"]), int(body["size"])):
            raise HubError(404, f"LFS object {body['oid']} not found")
        return JSONResponse({"message": "Everything is fine"})

    # -- downloads --------------------------------------------------------------------------------------------------
    async def resolve(self, request: Request, params: dict[str, str]) -> Response:
        """GET/HEAD of a file at a revision, with the Hub's metadata headers and HTTP Range support (206)."""
        repo = self.readable_repo(request, params)
        sha = repo.resolve(params["rev"])
        entry = repo.files(sha).get(params["path"])
        if entry is None:
            raise HubError(404, f"Entry not found: {params['path']}", "EntryNotFound", {"X-Repo-Commit": sha})
        etag = entry.sha256 if entry.lfs else entry.oid
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": sha}
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        return FileResponse(self.store.blob_path(entry.sha256), headers=headers, media_type="application/octet-stream")


def error_response(err: HubError) -> Response:
    """The Hub's error shape: JSON {"error"} plus X-Error-Code / X-Error-Message headers."""
    headers = {"X-Error-Message": err.message.encode("ascii", "replace").decode(), **err.headers}
    if err.code:
        headers["X-Error-Code"] = err.code
    return JSONResponse({"error": err.message}, status_code=err.status, headers=headers)


def tree_item(files: dict[str, FileEntry], path: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Tree/paths-info JSON of a file or folder; with a history (expand), the commit that last changed it."""
    if path in files:
        item = files[path].as_tree_item(path)
    else:
        children = sorted((p, e.oid) for p, e in files.items() if p.startswith(path + "/"))
        tree_id = hashlib.sha1(json.dumps(children).encode()).hexdigest()
        item = {"type": "directory", "oid": tree_id, "size": 0, "path": path}
    if history:
        def state(commit: dict[str, Any]) -> Any:
            return commit["files"].get(path) or sorted(
                (p, e["oid"]) for p, e in commit["files"].items() if p.startswith(path + "/")
            )

        current, last = state(history[0]), history[0]
        for older in history[1:]:
            if state(older) != current:
                break
            last = older
        item["lastCommit"] = {"id": last["id"], "title": last["title"], "date": last["date"]}
    return item
