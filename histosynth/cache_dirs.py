"""Where histosynth keeps its caches: one rule for every cache (pseudo-label arrays, encoder features)."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "HISTOSYNTH_CACHE"


def cache_root() -> Path:
    """`$HISTOSYNTH_CACHE`, else `$XDG_CACHE_HOME/histosynth`, else `~/.cache/histosynth`."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "histosynth"


def cache_dir(kind: str) -> Path:
    """The cache folder of one kind of cached work (e.g. "labels", "features"), under `cache_root()`."""
    return cache_root() / kind
