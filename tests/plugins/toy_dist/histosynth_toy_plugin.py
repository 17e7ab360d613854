"""A generator from outside the repository, as an installed plugin: the toy painter (tests/unit/toy_generator.py)
behind a `histosynth.generators` entry point. The folder holding this file and its .dist-info is put on the
PYTHONPATH of a child process only (never of the test process, whose registry must stay the built-in one)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit"))

from toy_generator import META  # noqa: E402

__all__ = ["META"]
