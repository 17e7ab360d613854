"""Reading the small files of a saved folder with the damage named: a JSON object, a safetensors file's header.

Model folders (histosynth.generators) and training checkpoints (histosynth.training) both read config and state
JSON files and check weight files before loading them; each passes the error type its callers catch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in `path`; a missing, unreadable or invalid file raises `error` naming it."""
    if not path.is_file():
        raise error(f"{path}: missing; the checkpoint folder is incomplete")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def check_safetensors_file(path: Path, error: type[Exception]) -> None:
    """Raise `error` naming `path` unless its safetensors header is valid and covers the whole file (a truncated,
    empty or foreign file is named here, instead of failing somewhere inside the loader)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np"):
            pass
    except (SafetensorError, OSError) as err:
        raise error(f"{path}: damaged safetensors file, {path.stat().st_size} bytes ({err})") from err
