"""One rule for where caches live: every cache is a sub-folder of the one cache root."""

from __future__ import annotations

from pathlib import Path

from histosynth.benchmark.features import default_cache_dir as features_cache_dir
from histosynth.cache_dirs import cache_root
from histosynth.labels.cache import default_cache_dir as labels_cache_dir


def test_root_follows_histosynth_cache_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HISTOSYNTH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_root() == tmp_path / "home" / ".cache" / "histosynth"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "histosynth"
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"


def test_every_cache_is_a_distinct_folder_under_the_root(monkeypatch, tmp_path):
    for env in ({"HISTOSYNTH_CACHE": str(tmp_path / "mine")}, {"XDG_CACHE_HOME": str(tmp_path / "xdg")}):
        monkeypatch.delenv("HISTOSYNTH_CACHE", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        dirs = [labels_cache_dir(), features_cache_dir()]
        assert all(Path(d).parent == cache_root() for d in dirs), dirs
        assert len(set(dirs)) == len(dirs)
