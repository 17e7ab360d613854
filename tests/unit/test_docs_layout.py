"""The docs say what the tree holds: the layout table of docs/ARCHITECTURE.md (and of the README, if it has one)
names only folders and modules that exist and every package folder there is; every relative link of README.md and
docs/ resolves to a file; no code, doc or config file refers to a numbered issue."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
PACKAGE_ROOTS = ("histosynth", "generators", "baselines", "benchmark", "leaderboard", "data_cards")
SKIPPED = {".venv", "runs", ".git", "build", "node_modules", "__pycache__"}
ROW = re.compile(r"^\|\s*`([\w.-]+)/`\s*\|[^|]*\|(.*)\|\s*$")
NAMED = re.compile(r"`([\w./-]+(?:\.py|/))`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues? [0-9]", re.IGNORECASE)


def layout_rows(path: Path) -> dict[str, set[str]]:
    """{root folder: the module and folder paths its row names} of the layout table(s) in `path` (rows whose first
    cell is a backticked `folder/`); the paths are relative to the row's folder."""
    rows: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.setdefault(match.group(1), set()).update(NAMED.findall(match.group(2)))
    return rows


def package_folders(root: str) -> set[str]:
    """Every package folder under `root` (one holding __init__.py), relative to it, ending in '/'."""
    base = REPO / root
    return {p.parent.relative_to(base).as_posix() + "/" for p in base.rglob("__init__.py")
            if p.parent != base and "__pycache__" not in p.parts}


TABLES = [p for p in (REPO / "docs" / "ARCHITECTURE.md", REPO / "README.md") if layout_rows(p)]


def test_the_architecture_page_has_a_layout_table():
    assert REPO / "docs" / "ARCHITECTURE.md" in TABLES


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_every_root_folder_module_and_subpackage_the_table_names_exists(table):
    rows = layout_rows(table)
    missing = [f"{root}/" for root in rows if not (REPO / root).is_dir()]
    missing += [f"{root}/{name}" for root, names in rows.items() for name in sorted(names)
                if not (REPO / root / name).exists() or (name.endswith("/") and not (REPO / root / name).is_dir())]
    assert not missing, f"{table.name}'s layout table names what the tree does not hold: {missing}"


@pytest.mark.parametrize("table", TABLES, ids=lambda p: p.name)
def test_the_table_names_every_package_folder(table):
    rows = layout_rows(table)
    absent = [f"{root}/" for root in PACKAGE_ROOTS if root not in rows]
    absent += [f"{root}/{folder}" for root in PACKAGE_ROOTS if root in rows
               for folder in sorted(package_folders(root) - rows[root])]
    assert not absent, f"{table.name}'s layout table does not name these package folders: {absent}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves_to_a_file(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)  # code blocks and spans hold code
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor of the same page
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if not path.is_file():
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links to missing files: {broken}"


def _text_files():
    for path in REPO.rglob("*"):
        rel = path.relative_to(REPO)
        if rel.parts and rel.parts[0] in SKIPPED or any(part in SKIPPED for part in rel.parts):
            continue
        if path.suffix in (".py", ".md", ".yaml", ".yml", ".toml", ".cfg") and path.is_file():
            yield path


def test_no_file_refers_to_a_numbered_issue():
    hits = [f"{path.relative_to(REPO)}:{n}: {line.strip()[:100]}" for path in _text_files()
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1)
            if ISSUE.search(line)]
    assert not hits, "say what is meant instead of an issue number:\n" + "\n".join(hits)
