import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from helpers import labelled_sample
from histosynth.atomic import atomic_directory, recover
from histosynth.data_cards.card import CardInfo
from histosynth.disk import count_samples, iter_samples, write_dataset

CARD = CardInfo("t", "t")
TESTS = os.path.dirname(__file__)

WRITER = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from helpers import labelled_sample
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset

    def samples():
        for i in range({n}):
            if i == {kill_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep({delay})
            yield labelled_sample(100 + i)

    write_dataset(samples(), sys.argv[1], CardInfo("new", "new"), max_shard_bytes=5000)
    """
)


def run_writer(target, n, kill_at=-1, delay=0.0, wait=True):
    code = WRITER.format(tests=TESTS, n=n, kill_at=kill_at, delay=delay)
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if wait:
        proc.wait(timeout=120)
    return proc


def old_dataset(path):
    write_dataset([labelled_sample(i) for i in range(3)], path, CARD)


def assert_old_or_new(path, n_new):
    n = count_samples(path)
    assert n in (3, n_new), n
    first = next(iter_samples(path))
    assert first.equals(labelled_sample(0 if n == 3 else 100))


def test_kill_during_write_leaves_old_folder_then_rerun_completes(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    proc = run_writer(target, n=20, kill_at=12)
    assert proc.returncode == -signal.SIGKILL
    assert count_samples(target) == 3 and next(iter_samples(target)).equals(labelled_sample(0))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.partial")], "the killed writer's partial folder is left behind"
    proc = run_writer(target, n=20)
    assert proc.returncode == 0, proc.stderr.read().decode()
    assert count_samples(target) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"], "stale partial folders are cleaned up"


def test_kill_at_random_moments_never_leaves_a_broken_folder(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    for delay_before_kill in (0.3, 0.9, 1.5, 2.5):
        proc = run_writer(target, n=8, delay=0.05, wait=False)
        time.sleep(delay_before_kill)
        proc.kill()
        proc.wait()
        recover(target)
        assert_old_or_new(target, 8)


def test_exception_midway_keeps_old_and_removes_partial(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)

    def failing():
        yield labelled_sample(50)
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_dataset(failing(), target, CARD)
    assert count_samples(target) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_no_overwrite_refuses_before_writing(tmp_path):
    target = tmp_path / "ds"
    old_dataset(target)
    with pytest.raises(FileExistsError, match="refusing to overwrite"):
        write_dataset([labelled_sample(9)], target, CARD, overwrite=False)
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
