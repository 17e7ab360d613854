"""Where the test plugins live, and the toy painter imported by path (its entry point stays off sys.path)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
TOY_PLUGIN = PLUGINS / "toy_dist"


def load_toy_module() -> ModuleType:
    """tests/plugins/toy_dist/toy_generator.py as module `toy_generator`, without putting its folder (and so its
    `histosynth.generators` entry point) on this process's path: the test process's registry stays the built-in one."""
    if "toy_generator" not in sys.modules:
        spec = importlib.util.spec_from_file_location("toy_generator", TOY_PLUGIN / "toy_generator.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["toy_generator"] = module
        spec.loader.exec_module(module)
    return sys.modules["toy_generator"]
