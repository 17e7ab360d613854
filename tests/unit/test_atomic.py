import os
import signal
import subprocess
import sys
import textwrap
import threading

import datasets
import numpy as np
import pytest
from datasets.data_files import EmptyDatasetError
from helpers import labeled_sample

from histosynth.atomic import (
    CONTENT_DIR,
    TargetBusyError,
    atomic_directory,
    atomic_file,
    lock_path,
    recover,
    write_bytes_atomic,
    write_text_atomic,
)
from histosynth.data_cards.card import CardInfo
from histosynth.disk import count_samples, iter_samples, write_dataset

CARD = CardInfo("t", "t")
TESTS = os.path.dirname(__file__)

WRITER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import histosynth.atomic as atomic
    from helpers import labeled_sample
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset

    def pause(where):
        print(where, flush=True)  # the test reads this line, then kills us while we wait here
        signal.pause()

    def samples():
        for i in range({n}):
            if i == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            if i == {pause_at}:
                pause("sample " + str(i))
            yield labeled_sample(100 + i)

    atomic.stage_hook = lambda stage: pause(stage) if stage == {pause_stage!r} else None
    if {no_exchange}:
        atomic._exchange = lambda a, b: False  # the two-rename fallback of filesystems without RENAME_EXCHANGE
    write_dataset(samples(), sys.argv[1], CardInfo("new", "new"), max_shard_bytes=5000)
    """
)


def run_writer(target, n, kill_at=-1, pause_at=-1, pause_stage=None, no_exchange=False, wait=True):
    code = WRITER.format(tests=TESTS, n=n, kill_at=kill_at, pause_at=pause_at, pause_stage=pause_stage,
                         no_exchange=no_exchange)
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    if wait:
        proc.wait(timeout=120)
    return proc


def paused_writer(target, **where):
    """A writer stopped at an exact point (it said so on stdout and now waits); the caller kills it."""
    proc = run_writer(target, n=20, wait=False, **where)
    guard = threading.Timer(120, proc.kill)  # a hung writer fails the test instead of blocking it forever
    guard.start()
    line = proc.stdout.readline()  # blocks until the writer reaches the point; "" if it died first
    guard.cancel()
    assert line.strip(), f"the writer never reached {where}: {proc.stderr.read()[-2000:]}"
    return proc, line.strip()


def kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def old_dataset(path):
    write_dataset([labeled_sample(i) for i in range(3)], path, CARD)


def test_kill_during_write_leaves_old_folder_then_rerun_completes(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    proc = run_writer(target, n=20, kill_at=12)
    assert proc.returncode == -signal.SIGKILL
    assert count_samples(target) == 3 and next(iter_samples(target)).equals(labeled_sample(0))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.partial")], "the killed writer's partial folder is left behind"
    proc = run_writer(target, n=20)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert count_samples(target) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "stale partial folders are cleaned up"


def test_kill_mid_write_leaves_the_old_folder_and_no_loadable_partial(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    proc, where = paused_writer(target, pause_at=12)
    (wrapper,) = tmp_path.glob(f".ds.partial-{proc.pid}")
    shards = list((wrapper / CONTENT_DIR / "data").glob("*.parquet"))
    assert where == "sample 12" and shards, "the kill lands mid-write: some shards are written, the rest are not"
    kill(proc)
    assert count_samples(target) == 3 and next(iter_samples(target)).equals(labeled_sample(0))
    with pytest.raises(EmptyDatasetError):
        datasets.load_dataset(str(wrapper))  # a partial folder is not taken for a dataset
    proc = run_writer(target, n=20)
    assert proc.returncode == 0, proc.stderr.read()
    assert count_samples(target) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "the dead writer's partial and lock are gone"


@pytest.mark.parametrize("stage,no_exchange", [("filled", False), ("filled", True), ("displaced", True)])
def test_kill_while_publishing_leaves_the_old_folder(tmp_path, stage, no_exchange):
    target = tmp_path / "ds"
    old_dataset(target)
    proc, where = paused_writer(target, pause_stage=stage, no_exchange=no_exchange)
    assert where == stage
    if stage == "displaced":
        assert not target.exists() and list(tmp_path.glob(f".ds.old-{proc.pid}")), "killed between the two renames"
    kill(proc)
    recover(target)  # what every later write does first
    assert count_samples(target) == 3 and next(iter_samples(target)).equals(labeled_sample(0))
    proc = run_writer(target, n=4)
    assert proc.returncode == 0, proc.stderr.read()
    assert count_samples(target) == 4 and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path, capsys):
    from histosynth.cli import main

    target = tmp_path / "ds"
    old_dataset(target)
    proc, _ = paused_writer(target, pause_at=5)
    try:
        with pytest.raises(TargetBusyError, match=f"{target}: another process \\(pid {proc.pid}\\) is writing it"):
            write_dataset([labeled_sample(7)], target, CARD)
        code = main(["data", "build", "--source", "simulator", "--n", "2", "--size", "32", "--out", str(target)])
        assert code == 2 and f"(pid {proc.pid})" in capsys.readouterr().err
        assert count_samples(target) == 3, "the refused writer changed nothing"
    finally:
        kill(proc)
    write_dataset([labeled_sample(7)], target, CARD)  # the kernel dropped the dead writer's lock
    assert count_samples(target) == 1 and not lock_path(target).exists()


def test_exception_midway_keeps_old_and_removes_partial(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)

    def failing():
        yield labeled_sample(50)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_dataset(failing(), target, CARD)
    assert count_samples(target) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_no_overwrite_refuses_before_writing(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_dataset([labeled_sample(9)], target, CARD, overwrite=False)
    assert count_samples(target) == 3


def test_replace_swaps_content(tmp_path):
    target = tmp_path / "d"
    with atomic_directory(target) as folder:
        (folder / "a").write_text("1")
    with atomic_directory(target) as folder:
        (folder / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_recover_restores_a_displaced_old_folder(tmp_path):
    target = tmp_path / "d"
    displaced = tmp_path / ".d.old-12345"
    displaced.mkdir()
    (displaced / "keep").write_text("old")
    recover(target)
    assert (target / "keep").read_text() == "old" and not displaced.exists()


# ------------------------------------------------------------------ single files (atomic_file)

FILE_WRITER = textwrap.dedent(
    """
    import signal, sys
    import histosynth.atomic as atomic

    def pause(where):
        print(where, flush=True)  # the test reads this line, then kills us while we wait here
        signal.pause()

    atomic.stage_hook = lambda stage: pause(stage) if stage == {stage!r} else None
    with atomic.atomic_file(sys.argv[1]) as partial, open(partial, "wb") as fh:
        fh.write(b"new " * 1000)
        fh.flush()
        if {stage!r} == "mid":
            pause("mid")
        fh.write(b"new " * 1000)
    """
)


def paused_file_writer(target, stage):
    proc = subprocess.Popen([sys.executable, "-c", FILE_WRITER.format(stage=stage), str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(120, proc.kill)
    guard.start()
    line = proc.stdout.readline()
    guard.cancel()
    assert line.strip() == stage, f"the writer never reached {stage}: {proc.stderr.read()[-2000:]}"
    return proc


@pytest.mark.parametrize("stage", ["mid", "file filled"])
@pytest.mark.parametrize("had_old", [True, False])
def test_kill_during_a_file_write_leaves_the_old_file_or_none(tmp_path, stage, had_old):
    target = tmp_path / "run.json"
    if had_old:
        write_text_atomic(target, "old\n")
    proc = paused_file_writer(target, stage)
    (partial,) = tmp_path.glob(".run.json.partial-*")
    assert partial.stat().st_size == (4000 if stage == "mid" else 8000)  # the kill lands where the test says
    kill(proc)
    if had_old:
        assert target.read_text() == "old\n"
    else:
        assert not target.exists()
    write_text_atomic(target, "next\n")  # the next write removes the dead writer's partial
    assert target.read_text() == "next\n" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_exception_in_a_file_write_keeps_the_old_file_and_removes_the_partial(tmp_path):
    target = tmp_path / "stats.npz"
    write_bytes_atomic(target, b"old")
    with pytest.raises(RuntimeError, match="writer broke"):
        with atomic_file(target) as partial:
            partial.write_bytes(b"half")
            raise RuntimeError("writer broke")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["stats.npz"]


def test_a_live_writers_partial_survives_another_write_and_the_last_rename_wins(tmp_path):
    target = tmp_path / "entry.npy"
    with atomic_file(target) as first:
        assert first.name.endswith(".npy")  # numpy keeps the name instead of appending a suffix
        np.save(first, np.arange(3))
        write_text_atomic(target, "second")  # a concurrent writer of the same cache entry
        assert first.exists() and target.read_text() == "second"
    assert np.load(target).tolist() == [0, 1, 2] and sorted(p.name for p in tmp_path.iterdir()) == ["entry.npy"]


def test_atomic_files_get_the_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "sub" / "r.json", "{}\n")
    finally:
        os.umask(mask)
    assert path.read_text() == "{}\n" and path.stat().st_mode & 0o777 == 0o644  # not a private 0600 temp file


def test_an_existing_file_is_never_replaced_by_a_folder(tmp_path):
    from histosynth.atomic import OutputPathError

    target = tmp_path / "out"
    target.write_text("a file the user keeps")
    with pytest.raises(OutputPathError, match="exists and is not a folder"):
        with atomic_directory(target) as folder:
            (folder / "x").write_text("x")
    assert target.read_text() == "a file the user keeps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with pytest.raises(OutputPathError, match="is a folder; a file is expected"):
        write_text_atomic(tmp_path, "x")


def test_a_write_that_fails_on_a_full_disk_names_the_target_and_leaves_nothing(tmp_path):
    """ENOSPC from the writer's own file (raised here as a real disk would) becomes one user-facing error naming
    the target; the partial output and the parent folders this write created are gone."""
    import errno

    from histosynth.atomic import OutputPathError

    target = tmp_path / "a" / "b" / "out"
    with pytest.raises(OutputPathError) as caught:
        with atomic_directory(target) as folder:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder / "shard.parquet"))
    assert str(target) in str(caught.value) and "no space left on device" in str(caught.value)
    assert os.listdir(tmp_path) == []
    with pytest.raises(OutputPathError, match="no space left"):
        with atomic_file(tmp_path / "c" / "x.json") as partial:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))
    assert os.listdir(tmp_path) == []


def test_an_error_about_an_input_is_not_blamed_on_the_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_directory(tmp_path / "out"):
            open(tmp_path / "missing-input")
    assert os.listdir(tmp_path) == []


def test_check_output_names_the_path_and_the_cause(tmp_path):
    from histosynth.atomic import OutputPathError, check_output

    (tmp_path / "f").write_text("x")
    for path, folder, cause in ((tmp_path / "f", True, "exists and is a file"), (tmp_path, False, "is a folder"),
                                (tmp_path / "f" / "x", True, "is a file, not a folder"),
                                (tmp_path / ("n" * 256), True, "256 bytes"), (".", True, "current folder")):
        with pytest.raises(OutputPathError, match=cause) as caught:
            check_output(path, folder, what="--out")
        assert str(caught.value).startswith(f"--out {path}")
    assert check_output(tmp_path / "new" / "deeper", True) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checking creates nothing
