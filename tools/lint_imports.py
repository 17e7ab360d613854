"""Check the layer contracts of pyproject.toml ([tool.importlinter]) with import-linter.

setup.py maps five root folders into the `histosynth` package (generators/ -> histosynth.generators, ...), but
import-linter's graph builder (grimp) walks histosynth/ on disk only and would not see them. This script lays the
sources out in a temporary folder as the one installed package (the .py files of histosynth/ plus each mapped
folder at its package path), runs `lint-imports <repo>/pyproject.toml` there, and removes the folder.

It also checks that every core module (histosynth/ without the CLI, the recipe engine and the mapped folders) is a
source of the core contract, so a new core module cannot stay outside the contracts unnoticed.

    python tools/lint_imports.py [--root REPO]     # exit status 0 when every contract is kept
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
CORE_CONTRACT = "core"  # the name of the contract that lists the core modules starts with this word
NOT_CORE = {"cli", "commands", "recipes", "__init__", "__main__"}  # recipes: a layer of its own


def package_dirs(root: Path) -> dict[str, str]:
    """setup.py's PACKAGE_DIRS (package -> folder), read without running setup.py."""
    tree = ast.parse((root / "setup.py").read_text(encoding="utf-8"), "setup.py")
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PACKAGE_DIRS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit(f"{root / 'setup.py'}: no PACKAGE_DIRS mapping found")


def lay_out(root: Path, dirs: dict[str, str], dest: Path) -> int:
    """Copy the .py files of each mapped folder to its package path under `dest`; returns the number copied."""

    def skip(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (not n.endswith(".py") and not Path(folder, n).is_dir())]

    for package, folder in sorted(dirs.items()):  # parents before children
        target = dest.joinpath(*package.split("."))
        if target.exists():
            raise SystemExit(f"{root / folder}: package {package} collides with a folder already laid out")
        shutil.copytree(root / folder, target, ignore=skip)
    return sum(1 for _ in dest.rglob("*.py"))


def uncovered_core_modules(root: Path, dirs: dict[str, str], config: dict) -> list[str]:
    """Core modules (top level of histosynth/, not the CLI nor a mapped package) missing from the core contract."""
    contracts = config["tool"]["importlinter"]["contracts"]
    core = [c for c in contracts if c["name"].split()[0] == CORE_CONTRACT]
    if len(core) != 1:
        raise SystemExit(f"{root / 'pyproject.toml'}: expected one contract named '{CORE_CONTRACT} ...', found {len(core)}")
    listed = set(core[0]["source_modules"])
    mapped = {p for p in dirs if p.count(".") == 1}
    modules = {f"histosynth.{p.stem}" for p in (root / "histosynth").iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").is_file()) and p.stem not in NOT_CORE}
    return sorted(modules - mapped - listed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    config_file = root / "pyproject.toml"
    dirs = package_dirs(root)
    missing = uncovered_core_modules(root, dirs, tomllib.loads(config_file.read_text(encoding="utf-8")))
    if missing:
        print(f"{config_file}: core module(s) {', '.join(missing)} are not in the core contract's source_modules",
              file=sys.stderr)
        return 1
    lint = shutil.which("lint-imports", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if lint is None:
        raise SystemExit("lint-imports not found: install the test extras (pip install -e '.[test]')")
    with tempfile.TemporaryDirectory(prefix="histosynth-lint-") as tmp:
        files = lay_out(root, dirs, Path(tmp))
        print(f"lint_imports: {files} files laid out as one histosynth package")
        # PYTHONPATH comes before the editable install's finder, so grimp reads the laid-out copy
        env = os.environ | {"PYTHONPATH": tmp}
        return subprocess.run([lint, str(config_file), "--no-cache", "--no-logo"], env=env, cwd=tmp).returncode


if __name__ == "__main__":
    sys.exit(main())
