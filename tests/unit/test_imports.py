"""Guard: the root folders are only ever imported as histosynth.<name> (a bare import makes a second module copy)."""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BARE = {"generators", "baselines", "benchmark", "leaderboard", "data_cards"}


def python_files():
    for folder in ["histosynth", *sorted(BARE), "tests", "perf"]:
        yield from (ROOT / folder).rglob("*.py")


def test_no_source_file_imports_a_root_folder_bare():
    offenders = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in BARE]
    assert not offenders, offenders


def test_importing_every_module_creates_no_bare_module():
    """Import all of histosynth (every sub-module of every mapped folder) in a fresh process and inspect sys.modules."""
    code = f"""
import importlib, json, pkgutil, sys
import histosynth
failed = []
for package in ["histosynth", *["histosynth." + b for b in {sorted(BARE)!r}]]:
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
bare = sorted(m for m in sys.modules if m.split(".")[0] in {sorted(BARE)!r})
print(json.dumps({{"bare": bare, "count": len([m for m in sys.modules if m.startswith("histosynth.")])}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["bare"] == []
    assert result["count"] >= 10


def test_mapped_packages_resolve_to_the_root_folders():
    import histosynth.benchmark
    import histosynth.data_cards

    assert Path(histosynth.benchmark.__file__).parent == ROOT / "benchmark"
    assert Path(histosynth.data_cards.__file__).parent == ROOT / "data_cards"
