"""Run the test Hub: `python tests/hub_server --root DIR --port PORT` (token in $HUB_SERVER_TOKEN).

Started by path rather than `python -m tests.hub_server` because torch-fidelity installs a top-level `tests`
package into site-packages, which shadows this repo's `tests/` namespace folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if not __package__:  # run as a script or folder: make `hub_server` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "hub_server"

import uvicorn  # noqa: E402

from .app import HubApp  # noqa: E402
from .storage import Store  # noqa: E402

TOKEN_ENV = "HUB_SERVER_TOKEN"


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, build the app and serve until killed."""
    parser = argparse.ArgumentParser(description="Local Hugging Face Hub for tests (not for real use).")
    parser.add_argument("--root", type=Path, required=True, help="folder holding repos and blobs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="histosynth-test", help="the one user the token belongs to")
    args = parser.parse_args(argv)
    token = os.environ.get(TOKEN_ENV)
    if not token:
        parser.error(f"set ${TOKEN_ENV}: the token is not taken on the command line, where `ps` would show it")
    logging.basicConfig(level=logging.INFO, format="hub_server %(levelname)s %(message)s", stream=sys.stderr)
    app = HubApp(Store(args.root), token=token, user=args.user)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning", lifespan="off")


if __name__ == "__main__":
    main()
