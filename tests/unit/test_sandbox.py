"""Submitted code is contained: a malicious submission cannot read the token, write outside its folder, reach the
network, run forever or take unbounded memory, and each attempt is reported (histosynth.leaderboard.sandbox)."""

import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from histosynth.errors import InputError
from histosynth.leaderboard.sandbox import SandboxLimits, isolation_available, run_sandboxed, sandbox_env

pytestmark = pytest.mark.skipif(not isolation_available(),
                                reason="unshare cannot create user/net/mount namespaces on this machine")
SECRET = "hf_this_is_a_secret_token_0123456789"


MINUTE = SandboxLimits(wall_seconds=60)


def run_script(tmp_path, body, limits=MINUTE, hide=None):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "evil.py").write_text(textwrap.dedent(body))
    return run_sandboxed([sys.executable, "evil.py"], work, limits, hide=hide)


def test_no_token_in_environment_or_token_file(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text(SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET)
    result = run_script(tmp_path, f"""
        import os
        print("env:", {{k: v for k, v in os.environ.items() if "{SECRET[:8]}" in v}})
        try:
            print("file:", open("{hf_home / 'token'}").read())
        except OSError as err:
            print("file blocked:", err.strerror)
        """, hide=[str(hf_home)])
    assert result.ok, result.stderr
    assert SECRET not in result.stdout and "env: {}" in result.stdout and "file blocked" in result.stdout


def test_writes_outside_the_folder_are_refused(tmp_path):
    outside = tmp_path / "outside.txt"
    result = run_script(tmp_path, f"""
        open("inside.txt", "w").write("fine")
        open("{outside}", "w").write("escaped")
        """)
    assert not outside.exists() and (tmp_path / "work" / "inside.txt").read_text() == "fine"
    assert result.returncode == 1 and "Read-only file system" in result.stderr
    assert "Read-only file system" in result.describe()


def test_no_network_even_to_our_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    result = run_script(tmp_path, f"""
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=5)
        print("connected")
        """)
    with pytest.raises(socket.timeout):
        server.accept()  # nothing ever reached us
    server.close()
    assert result.returncode == 1 and "connected" not in result.stdout
    assert "ConnectionRefusedError" in result.stderr or "unreachable" in result.stderr


def running_with(marker: str) -> list[int]:
    """Pids of our processes whose command line holds `marker`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            pass
    return pids


def test_runaway_and_its_escaped_children_are_killed_at_the_wall_clock_limit(tmp_path):
    marker = f"runaway-{tmp_path.name}"
    result = run_script(tmp_path, f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "{marker}"])
        time.sleep(0.5)
        while True:
            pass
        """, limits=SandboxLimits(wall_seconds=3))
    assert result.timed_out and not result.ok and "wall-clock" in result.describe()
    deadline = time.monotonic() + 10
    while running_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running_with(marker)  # the setsid() grandchild died with the sandbox's PID namespace


def test_default_secret_paths_hide_the_hub_token_file(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    token = tmp_path / "token"
    token.write_text(SECRET)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token))
    result = run_script(tmp_path, f"print(repr(open('{token}').read()))")
    assert result.ok and SECRET not in result.stdout and "''" in result.stdout


def test_memory_is_bounded(tmp_path):
    result = run_script(tmp_path, """
        block = bytearray(2 << 30)
        print("allocated")
        """, limits=SandboxLimits(wall_seconds=60, memory_bytes=1 << 30))
    assert result.returncode != 0 and "MemoryError" in result.stderr and "allocated" not in result.stdout


def test_secret_looking_variables_are_refused(tmp_path):
    with pytest.raises(InputError, match="HF_TOKEN"):
        sandbox_env(tmp_path, {"HF_TOKEN": "x"})
    env = sandbox_env(tmp_path, {"SEED": "1"})
    assert env["HF_HUB_OFFLINE"] == "1" and env["HOME"].startswith(str(tmp_path)) and "SEED" in env
