"""Generators from outside the repository arrive through the histosynth.generators entry-point group
(generators/plugins.py). Plugins are only ever put on a child process's path here, so this process's registry
stays the built-in one."""

import json
import os
import subprocess
import sys

import pytest
from plugin_paths import PLUGINS


def run_child(args, plugin_dir, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(PLUGINS / plugin_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def test_an_installed_plugin_is_listed_and_described():
    meta = run_child(["-m", "histosynth.generators.plugins", "toy"], "toy_dist")
    assert meta.returncode == 0, meta.stderr
    assert json.loads(meta.stdout)["target"] == "toy_generator:ToyPainter"
    listing = run_child(["-m", "histosynth.cli", "ls", "generators"], "toy_dist")
    assert listing.returncode == 0 and "toy" in listing.stdout.split() and "htd" in listing.stdout.split()


@pytest.mark.slow  # three child processes that import torch: ~40 s on a loaded machine
def test_a_plugin_trains_and_generates_through_the_cli(tmp_path):
    data = run_child(["-m", "histosynth.cli", "data", "build", "--source", "simulator", "--n", "6", "--size", "32", "--out",
                      str(tmp_path / "data")], "toy_dist")
    assert data.returncode == 0, data.stderr
    train = run_child(["-m", "histosynth.cli", "train", "toy", "--data", str(tmp_path / "data"), "--out",
                       str(tmp_path / "model"), "--preset", "tiny"], "toy_dist")
    assert train.returncode == 0, train.stderr
    generate = run_child(["-m", "histosynth.cli", "generate", "toy", "--checkpoint", str(tmp_path / "model"),
                          "--conditions", str(tmp_path / "data"), "--n", "3", "--out", str(tmp_path / "gen")], "toy_dist")
    assert generate.returncode == 0, generate.stderr
    assert "3 samples by toy" in generate.stdout


def test_a_broken_plugin_is_named_in_a_one_line_error():
    listing = run_child(["-m", "histosynth.cli", "ls", "generators"], "bad_dist")
    assert listing.returncode == 2
    assert "entry point 'broken'" in listing.stderr and "not a GeneratorMeta" in listing.stderr


def test_without_the_plugin_the_name_is_unknown(tmp_path):
    for folder in ("model", "conditions"):  # real folders: only the generator's name is wrong
        (tmp_path / folder).mkdir()
    result = run_child(["-m", "histosynth.cli", "generate", "toy", "--checkpoint", str(tmp_path / "model"),
                        "--conditions", str(tmp_path / "conditions"), "--n", "1", "--out", str(tmp_path / "z")],
                       "bad_dist_missing")
    assert result.returncode == 2 and "unknown generator 'toy'" in result.stderr
