"""Run a histosynth module with a submission's plugin folder importable: the entry of every sandboxed step that runs
submitted code (`python -I -B -m histosynth.leaderboard.plugin_step PLUGIN MODULE ARGS...`).

The folder is appended to sys.path after start-up, never put on PYTHONPATH: so its sitecustomize.py, usercustomize.py
and .pth files are never run, and it cannot shadow the standard library or histosynth. Its code runs only when the
generator's entry point is loaded. PLUGIN "-" means no plugin (a built-in generator).
"""

from __future__ import annotations

import runpy
import sys


def main(argv: list[str]) -> None:
    """argv: PLUGIN MODULE [ARGS...]."""
    if len(argv) < 2:
        raise SystemExit("usage: python -I -B -m histosynth.leaderboard.plugin_step PLUGIN|- MODULE [ARGS...]")
    plugin, module, *args = argv
    if plugin != "-":
        sys.path.append(plugin)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
