"""The layer contracts (pyproject [tool.importlinter]) hold on this checkout, and a breach of them is caught."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tools" / "lint_imports.py"


def lint(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root)], capture_output=True, text=True, timeout=120)


def declared_contracts() -> list[str]:
    """The names of the contracts pyproject.toml declares."""
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return [c["name"] for c in tomllib.load(fh)["tool"]["importlinter"]["contracts"]]


def copy_sources(dest: Path) -> Path:
    """The .py files of histosynth/ and the folders setup.py maps into it, with setup.py and pyproject.toml."""
    spec = importlib.util.spec_from_file_location("lint_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for folder in module.package_dirs(ROOT).values():
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "assets", "*.svs"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)
    return dest


def test_the_checkout_keeps_every_layer_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    contracts = declared_contracts()
    assert len(contracts) >= 7  # core, benchmark, generators, recipe engine and CLI layers
    assert f"Contracts: {len(contracts)} kept, 0 broken." in result.stdout
    assert all(f"{name} KEPT" in result.stdout for name in contracts)


def test_a_core_module_importing_a_generator_breaks_the_core_contract(tmp_path):
    tree = copy_sources(tmp_path)
    with open(tree / "histosynth" / "rows.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef _breach():\n    from histosynth.generators import GENERATORS\n\n    return GENERATORS\n")
    result = lint(tree)
    assert result.returncode != 0
    (core,) = [name for name in declared_contracts() if name.startswith("core ")]
    assert f"{core} BROKEN" in result.stdout
    assert "histosynth.rows is not allowed to import histosynth.generators" in result.stdout


def test_a_core_module_outside_the_core_contract_is_reported(tmp_path):
    tree = copy_sources(tmp_path)
    (tree / "histosynth" / "newcore.py").write_text('"""A core module nobody listed."""\n', encoding="utf-8")
    result = lint(tree)
    assert result.returncode == 1
    assert "histosynth.newcore are not in the core contract's source_modules" in result.stderr
