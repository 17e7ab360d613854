"""The package version has one source, histosynth.__version__; pyproject.toml reads it (setuptools dynamic)."""

import importlib.metadata
from pathlib import Path

import pytest

import histosynth

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_takes_the_version_from_the_package():
    tomllib = pytest.importorskip("tomllib")  # standard library from Python 3.11
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in pyproject["project"], "a second, static version in pyproject.toml would drift"
    assert "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "histosynth.__version__"}


def test_installed_metadata_matches_the_package_version():
    assert importlib.metadata.version("histosynth") == histosynth.__version__
