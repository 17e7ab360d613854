"""The files `histosynth new generator NAME` writes: a generator plugin package that works as written.

The texts are package data, templates/generator/*.tmpl; FILES maps each written path to its template. Paths and
texts have `${name}` (the generator's registered name), `${package}` (the import package: the name with '_' for
'-'), `${cls}` (the Generator class) and `${title}` substituted (string.Template; `$$` is a literal dollar). The
generated package passes its own contract test (`PYTHONPATH=. python -m pytest tests`) and, installed into a folder
and trained, `histosynth submit --check` (tests/unit/test_new_generator.py checks both).
"""

from __future__ import annotations

from pathlib import Path
from string import Template

TEMPLATES = Path(__file__).with_name("templates") / "generator"
FILES = {
    "pyproject.toml": "pyproject.toml.tmpl",
    "README.md": "README.md.tmpl",
    ".gitignore": "gitignore.tmpl",
    "${package}/__init__.py": "__init__.py.tmpl",
    "${package}/meta.py": "meta.py.tmpl",
    "${package}/presets.py": "presets.py.tmpl",
    "${package}/model.py": "model.py.tmpl",
    "tests/test_contract.py": "test_contract.py.tmpl",
}


def template(path: str) -> str:
    """The template text of the written file `path` (a key of FILES), exactly as stored."""
    return (TEMPLATES / FILES[path]).read_bytes().decode("utf-8")


def render(name: str, package: str, cls: str, title: str) -> dict[str, str]:
    """Every file of the skeleton: relative path -> text."""
    values = {"name": name, "package": package, "cls": cls, "title": title}
    return {Template(path).substitute(values): Template(template(path)).substitute(values) for path in FILES}
