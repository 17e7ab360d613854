"""A small local Hugging Face Hub for TESTS ONLY: lets the real `huggingface_hub` and `datasets` clients publish
and pull versioned repos over HTTP on 127.0.0.1, with no mocks of the clients.

Run it:  python tests/hub_server --root DIR --port PORT   (token from $HUB_SERVER_TOKEN; tests/hub/conftest.py
starts it for the hub tests). Clients need HF_ENDPOINT=http://127.0.0.1:PORT, HF_TOKEN=<same token>,
HF_HUB_DISABLE_XET=1 and a scratch HF_HOME, all set before `huggingface_hub`/`datasets` are imported.

Why not olah (the offline mirror named in ARCHITECTURE.md)? olah serves existing git repos read-only: it has no
create-repo, preupload, LFS, commit, tag or branch endpoints, ignores HTTP Range, and needs git repos on disk.
Adding writes would mean growing a git backend inside someone else's mirror. A self-contained Starlette app
over a tiny store is smaller and says exactly what the clients rely on:

* storage (storage.py): content-addressed blobs (sha256) + one JSON snapshot per commit + a refs file per repo.
  No git: the git object ids the clients compare against are computed directly.
* HTTP (app.py): the endpoints read from the installed clients' source (huggingface_hub 2.4.0, datasets 5.2.0):
  whoami-v2, validate-yaml, repos/create|delete, repo info (at main and /revision/{rev}), refs, commits, tree,
  paths-info, preupload, commit (NDJSON, parentCommit checked), tag and branch create/delete, LFS batch + signed
  basic upload + verify, and resolve (GET/HEAD, ETag, X-Repo-Commit, X-Linked-Etag/-Size, Range -> 206); the
  card check of validate-yaml and repo info in cards.py.
* uvicorn runs it with its access log off: our own log line is method, path and status, never headers.

Not a Hub: one user and one token, any namespace writable, no pull requests, no Xet, no pagination, no
datasets-server. It is not installed with histosynth and nothing outside tests/ may import it.
"""

from .app import HubApp
from .storage import HubError, Store

__all__ = ["HubApp", "HubError", "Store"]
