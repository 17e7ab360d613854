"""Start the local test Hub (tests/hub_server) once per session and point the HF clients at it.

`huggingface_hub` and `datasets` read HF_ENDPOINT, HF_HOME, HF_TOKEN and the offline flags when they are first
imported, so everything here happens in `pytest_configure`, which pytest calls as soon as this conftest is loaded:
before any module of tests/hub is imported. The server only starts when the hub tests are what this run is about
(`HISTOSYNTH_HUB_TESTS=1`, `-m hub`, or only paths under tests/hub); in a mixed run the hub tests are skipped and
the offline settings of tests/conftest.py stay untouched.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "hub_server"  # started by path: torch-fidelity's site-packages `tests` shadows ours
START_TIMEOUT_S = 30.0
RUN_HINT = "run the hub tests on their own: HISTOSYNTH_HUB_TESTS=1 pytest tests/hub  (or: pytest -m hub)"


@dataclass(frozen=True)
class HubServer:
    """The running test Hub, as the tests see it."""

    url: str
    token: str
    user: str
    root: Path
    log_path: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")


_server: HubServer | None = None


def _hub_tests_wanted(config: pytest.Config) -> bool:
    """True when this pytest run is the hub run (and may switch the HF clients online)."""
    if os.environ.get("HISTOSYNTH_HUB_TESTS"):
        return True
    markexpr = config.option.markexpr or ""
    if markexpr:
        try:
            from _pytest.mark.expression import Expression

            expression = Expression.compile(markexpr)
            return expression.evaluate(lambda name, **kw: name == "hub") and not expression.evaluate(
                lambda name, **kw: False
            )
        except Exception:  # private pytest API: fall back to the one expression we document
            return markexpr.strip() == "hub"
    args = [Path(a.split("::")[0]).resolve() for a in config.args]
    return bool(args) and all(a == HERE or HERE in a.parents for a in args)


def _free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server() -> HubServer:
    """Start the server subprocess on a fresh root and wait until it answers HTTP."""
    root = Path(tempfile.mkdtemp(prefix="histosynth-hub-"))
    token = "hf_test_" + secrets.token_hex(16)
    user = "histosynth-test"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env["HUB_SERVER_TOKEN"] = token
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--root", str(root / "store"), "--port", str(port), "--user", user],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    server = HubServer(url, token, user, root, log_path, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"test Hub exited with {process.returncode}:\n{server.log_text()}")
        try:
            urllib.request.urlopen(f"{url}/api/whoami-v2", timeout=1)
            break
        except urllib.error.HTTPError:  # 401 without a token: it is up
            break
        except OSError as err:
            if time.monotonic() > deadline:
                _stop_server(server)
                raise RuntimeError(f"test Hub did not answer within {START_TIMEOUT_S} s:\n{server.log_text()}") from err
            time.sleep(0.1)
    return server


def _stop_server(server: HubServer) -> None:
    """Terminate the subprocess and remove its files."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    shutil.rmtree(server.root, ignore_errors=True)


def _stop_at_exit() -> None:
    global _server
    if _server is not None:
        _stop_server(_server)
        _server = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the server and set the clients' environment, before the test modules import them."""
    global _server
    if _server is not None or not _hub_tests_wanted(config):
        return
    imported = sorted(m for m in ("huggingface_hub", "datasets") if m in sys.modules)
    if imported:
        raise pytest.UsageError(f"{imported} imported before tests/hub/conftest.py could configure them; {RUN_HINT}")
    _server = _start_server()
    atexit.register(_stop_at_exit)  # also covers runs that die before pytest_unconfigure
    os.environ.update(
        {
            "HF_ENDPOINT": _server.url,
            "HF_HOME": str(_server.root / "hf_home"),
            "HF_TOKEN": _server.token,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    for name in ("HF_HUB_CACHE", "HF_DATASETS_CACHE", "HF_TOKEN_PATH", "HF_HUB_ENABLE_HF_TRANSFER"):
        os.environ.pop(name, None)  # would otherwise point outside the scratch HF_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop the server at the end of the session."""
    _stop_at_exit()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/hub is a hub test; skip them when this run did not start the server."""
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.hub)
            if _server is None:
                item.add_marker(pytest.mark.skip(reason=f"the local Hub is not started in this run; {RUN_HINT}"))


@pytest.fixture(scope="session")
def hub_server() -> HubServer:
    """The running test Hub (url, token, user, log)."""
    assert _server is not None, RUN_HINT
    return _server
