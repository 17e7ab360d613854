"""Submitted code cannot escape the sandbox (histosynth.leaderboard.sandbox): a hostile script tries every escape
that worked against the earlier home-made sandbox (remount, umount of the token's cover, .pth and .pyc planting,
host processes through /proc, a host unix socket, namespaces, ptrace, raw syscalls); each is refused, and the canary,
the token, the results folder, the venv's site-packages and histosynth's source are unchanged afterwards."""

import json
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest
from plugin_paths import PLUGINS
from sandbox_required import sandbox  # noqa: F401 (fixture)

import histosynth
from histosynth.leaderboard.sandbox import SandboxLimits, run_sandboxed, sandbox_input

pytestmark = pytest.mark.usefixtures("sandbox")
SECRET = "hf_sandbox_secret_token_0123456789"
ATTACKS = PLUGINS / "evil_dist" / "evil_attacks.py"
MINUTE = SandboxLimits(wall_seconds=60)


def snapshot(*folders: Path) -> dict[str, tuple]:
    """(size, mtime, ctime, inode) of every entry under `folders`: any write, rename or new file changes it (ctime
    is the kernel's, which no process can set back)."""
    seen = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            for name in dirs + files:
                path = os.path.join(root, name)
                stat = os.lstat(path)
                seen[path] = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    return seen


@pytest.fixture(scope="module")
def escape(tmp_path_factory):
    """Run the whole attack battery once; returns (what it found, the test's own view afterwards)."""
    import huggingface_hub.constants as constants

    tmp = tmp_path_factory.mktemp("escape")
    results = tmp / "results"
    (results / "htd-0123456789ab").mkdir(parents=True)
    (results / "canary.txt").write_text("canary")
    model = tmp / "model"
    model.mkdir()
    token = model / "token"
    token.write_text(SECRET)
    site_packages = Path(sysconfig.get_paths()["purelib"])
    source = Path(histosynth.__file__).parent
    leaderboard_source = Path(histosynth.leaderboard.__path__[0])
    tag = uuid.uuid4().hex[:8]
    unix_path = tmp / "host.sock"
    unix_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_server.bind(str(unix_path))
    unix_server.listen(1)
    unix_server.settimeout(0.2)
    tcp_server = socket.socket()
    tcp_server.bind(("127.0.0.1", 0))
    tcp_server.listen(1)
    tcp_server.settimeout(0.2)
    marker = f"host-process-{tag}"
    host_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", marker])
    host_files = {"host_shm": f"/dev/shm/histosynth-evil-{tag}", "var_tmp": f"/var/tmp/histosynth-evil-{tag}",
                  "home_file": str(Path.home() / f"histosynth-evil-{tag}")}
    targets = {"canary": str(results / "canary.txt"), "results_file": str(results / "htd-0123456789ab" / "pwned.json"),
               "token_inside": str(sandbox_input("model") / "token"), "secret": SECRET,
               "pth": str(site_packages / f"zz-evil-{tag}.pth"),
               "pyc": str(leaderboard_source / "__pycache__" / "aggregate.cpython-311.pyc"),
               "source_file": str(source / f"evil_{tag}.py"), "unix_socket": str(unix_path),
               "port": tcp_server.getsockname()[1], "host_marker": marker, **host_files}
    work = tmp / "work"
    work.mkdir()
    shutil.copy(ATTACKS, work / "evil_attacks.py")
    (work / "targets.json").write_text(json.dumps(targets))
    watched = [results, Path(sys.prefix), source, leaderboard_source]  # the whole venv, site-packages included
    before = snapshot(*watched)
    saved = constants.HF_TOKEN_PATH
    constants.HF_TOKEN_PATH = str(token)  # the scorer hides the token file wherever a bind would show it
    os.environ["HF_TOKEN"] = SECRET
    try:
        result = run_sandboxed([sys.executable, "evil_attacks.py", "targets.json"], work, MINUTE,
                               inputs={"model": model})
    finally:
        constants.HF_TOKEN_PATH = saved
        del os.environ["HF_TOKEN"]
        host_process.kill()
    reached = {}
    for name, server in (("unix", unix_server), ("tcp", tcp_server)):
        try:
            server.accept()
            reached[name] = True
        except (socket.timeout, BlockingIOError):
            reached[name] = False
        server.close()
    found = json.loads((work / "found.json").read_text())
    after = snapshot(*watched)
    leftovers = [path for path in host_files.values() if os.path.exists(path)]
    for path in leftovers:
        os.unlink(path)
    yield {"result": result, "found": found, "changed": sorted(set(before.items()) ^ set(after.items())),
           "reached": reached, "leftovers": leftovers, "token": token.read_text(), "found_text": json.dumps(found)}


# /dev/shm inside is the sandbox's own tmpfs: that write succeeds there and never reaches the host's (checked below)
ESCAPES = ["write_canary", "plant_results_file", "drop_pth", "forge_pyc", "write_source", "write_var_tmp", "write_home", "remount_root_writable", "umount_token", "umount_proc_and_list",
           "connect_unix", "connect_tcp", "new_user_namespace", "new_mount_namespace", "mount_tmpfs", "chroot",
           "ptrace_init", "setns_host", "raw_syscalls", "process_status", "env_token"]


@pytest.mark.parametrize("attack", ESCAPES)
def test_every_escape_is_refused(escape, attack):
    assert escape["result"].ok, escape["result"].stderr
    assert escape["found"][attack].startswith("blocked"), escape["found"][attack]


def test_nothing_outside_the_work_folder_changed(escape):
    assert escape["found"]["write_host_shm"].startswith("WORKED")  # in the sandbox's own /dev/shm ...
    assert escape["changed"] == [] and escape["leftovers"] == []  # ... and nothing in the host's
    assert escape["reached"] == {"unix": False, "tcp": False}
    assert escape["token"] == SECRET and SECRET not in escape["found_text"]


def test_the_seccomp_filter_and_mount_lock_refuse_with_eperm(escape):
    found = escape["found"]
    assert "Operation not permitted" in found["remount_root_writable"]
    assert "Operation not permitted" in found["new_user_namespace"] and "Operation not permitted" in found["chroot"]
    assert "pids visible" in found["umount_proc_and_list"]


def run_script(tmp_path, body: str, limits=MINUTE, **options):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "script.py").write_text(body)
    return run_sandboxed([sys.executable, "script.py"], work, limits, **options)


def test_process_count_is_limited_for_the_whole_sandbox(tmp_path):
    result = run_script(tmp_path, """
import os, time
children = 0
for _ in range(400):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(20)
        os._exit(0)
    children += 1
print("forked", children)
""", SandboxLimits(wall_seconds=60, processes=64))
    forked = int(result.stdout.split()[-1])
    assert result.returncode == 0 and forked < 64, result.stderr


def test_memory_is_limited_for_all_processes_together(tmp_path):
    result = run_script(tmp_path, """
import multiprocessing as mp, sys

def hold(megabytes):
    block = bytearray(megabytes << 20)
    block[::4096] = b"x" * len(block[::4096])
    import time; time.sleep(3)

if __name__ == "__main__":
    workers = [mp.Process(target=hold, args=(700,)) for _ in range(4)]
    for w in workers: w.start()
    for w in workers: w.join()
    print("exit codes", [w.exitcode for w in workers])
    sys.exit(0 if all(w.exitcode == 0 for w in workers) else 3)
""", SandboxLimits(wall_seconds=120, memory_bytes=1 << 30))
    assert not result.ok and "out of memory" in result.describe(), (result.describe(), result.stderr)


def test_file_size_is_limited(tmp_path):
    result = run_script(tmp_path, """
with open("sparse", "wb") as f:
    f.seek(30 << 30)
    f.write(b"x")
""", SandboxLimits(wall_seconds=60, file_bytes=1 << 30))
    assert result.returncode == 1 and "File too large" in result.stderr
    assert (tmp_path / "work" / "sparse").stat().st_size <= 1 << 30


def test_too_many_files_stop_the_run(tmp_path):
    result = run_script(tmp_path, """
import os
os.makedirs("flood", exist_ok=True)
for i in range(100_000):
    open(f"flood/{i}", "w").close()
""", SandboxLimits(wall_seconds=120, output_files=2000))
    assert not result.ok and result.describe() == "killed: wrote more than 2000 files and folders"


def test_a_flood_of_output_stops_the_run(tmp_path):
    result = run_script(tmp_path, "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
                        SandboxLimits(wall_seconds=120))
    assert not result.ok and "printed more than" in result.describe()


def test_runaway_and_its_escaped_children_are_killed_at_the_wall_clock_limit(tmp_path):
    marker = f"runaway-{uuid.uuid4().hex[:8]}"
    result = run_script(tmp_path, f"""
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import os, time; os.setsid(); time.sleep(600)", "{marker}"])
time.sleep(0.5)
while True:
    pass
""", SandboxLimits(wall_seconds=3))
    assert result.timed_out and not result.ok and "wall-clock" in result.describe()
    alive = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert not alive  # the setsid() grandchild died with the sandbox


def test_inputs_are_read_only_and_the_environment_is_clean(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.txt").write_text("input")
    monkeypatch.setenv("MY_SECRET_TOKEN", "nope")
    result = run_script(tmp_path, f"""
import os
print(open("{sandbox_input('data') / 'x.txt'}").read())
try:
    open("{sandbox_input('data') / 'y.txt'}", "w")
except OSError as err:
    print("refused", err.strerror)
print(sorted(k for k in os.environ if "TOKEN" in k or "SECRET" in k))
""", inputs={"data": data})
    assert result.ok and result.stdout.split("\n")[:3] == ["input", "refused Read-only file system", "[]"]
    assert sorted(p.name for p in data.iterdir()) == ["x.txt"]


@pytest.mark.parametrize("field, value, message", [
    ("wall_seconds", float("nan"), "wall-clock limit must be a number of seconds in"),
    ("wall_seconds", -1.0, "wall-clock limit"),
    ("memory_bytes", -1, "memory_bytes must be a whole number in"),
    ("memory_bytes", 300 << 20, "memory_bytes must be a whole number in"),
    ("memory_bytes", 1 << 50, "this machine's memory"),
    ("processes", 3, "processes must be"),
    ("output_files", 0, "output_files must be"),
])
def test_impossible_limits_are_refused_up_front(field, value, message):
    from histosynth.errors import InputError

    with pytest.raises(InputError, match=message):
        SandboxLimits(**{field: value})


@pytest.mark.parametrize("options", [["--timeout", "nan"], ["--memory-gb", "-1"], ["--memory-gb", "0.25"],
                                     ["--timeout", "inf"], ["--memory-gb", "nan"]])
def test_submit_refuses_impossible_limits_with_one_line(tmp_path, options, capsys):
    from histosynth.cli import main

    (tmp_path / "model").mkdir()
    (tmp_path / "s.yaml").write_text("kind: generator\ngenerator: toy\ncheckpoint: model\n")
    assert main(["submit", str(tmp_path / "s.yaml"), "--check", *options]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and options[0] in err[0]


def test_as_root_without_a_cgroup_the_sandbox_refuses_rather_than_run_unbounded(tmp_path):
    from histosynth.leaderboard.sandbox import SandboxUnavailable

    if os.geteuid() != 0:
        pytest.skip("the rlimit fallback is the right one for an unprivileged user")
    with pytest.raises(SandboxUnavailable, match="RLIMIT_NPROC binds nothing"):
        run_sandboxed(["/bin/true"], tmp_path / "work", MINUTE, backend="rlimit")


def test_without_bubblewrap_scoring_refuses_and_says_how_to_install(tmp_path, monkeypatch):
    from histosynth.leaderboard.sandbox import SandboxUnavailable

    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_sandboxed(["/bin/true"], tmp_path / "work", MINUTE)


def test_a_python_installation_under_tmp_is_bound_over_the_fresh_tmp(monkeypatch, tmp_path):
    # bwrap applies its mounts in order: the empty /tmp must come first, or it hides a venv that lives under /tmp
    from histosynth.leaderboard.sandbox import bwrap

    venv = tmp_path / "checkout" / ".venv"
    monkeypatch.setattr(bwrap, "python_paths", lambda: [venv])
    monkeypatch.setattr(bwrap, "cache_paths", dict)
    argv = bwrap.bwrap_argv({}, tmp_path / "work", 3, 4)
    pairs = list(zip(argv, argv[1:], strict=False))  # neighbors: the last item has none
    assert pairs.index(("--tmpfs", "/tmp")) < pairs.index(("--ro-bind", str(venv)))
    assert argv[argv.index("--remount-ro") + 1] == "/"  # and everything is still made read-only at the end
