"""Fuzz: bad `publish --dry-run` arguments (versions, repo ids, folders) and `pull` targets. Every case is refused
before the Hub is contacted (the suite runs offline), and the folder is left as it was."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest
from fuzzkit import Case, check_case, copy
from test_fuzz_datasets import CARD_CHANGES, SHARD, SHARD_BYTES

BAD_VERSIONS = ["1.0.0", "v1", "v1.0", "v1.0.0.0", "v01.0.0", "v1.0.0-", "v-1.0.0", "V1.0.0", "latest", "v1.0.x", "v1..0",
                "vv1.0.0", "v1.0.0+build", "v1.0.0-rc.1", "v\uff11.0.0", "v1.0.0/x", "v1.0.0;rm"]
BAD_REPOS = ["noslash", "a/b/c", "/name", "org/", "org name/x", "org/na me", "-org/x", "org/-x", "org/x?", "../x", "org/..",
             "org/\u00e4", "http://hf.co/org/x", "org//x", "org/x#y"]
BAD_TARGETS = {"org/name@": "version", "org/name@1.0.0": "'1.0.0'", "@v1.0.0": "repo", "org/name@v1.0": "'v1.0'",
               "a b@v1.0.0": "'a b'", "org/name@latest": "'latest'", "org@v1.0.0": "'org'"}


def publish_case(version: str = "v1.0.0", repo: str = "org/name", folder: Callable[[Path, SimpleNamespace], Path] | None = None,
                 named: str = ""):
    def make(tmp: Path, fx):
        path = folder(tmp, fx) if folder is not None else copy(fx.dataset, tmp / "in" / "dataset")
        return ["publish", path, f"--repo={repo}", f"--version={version}", "--dry-run"], path, [named]
    return make


def damaged(change: Callable[[Path], object]) -> Callable[[Path, SimpleNamespace], Path]:
    def make(tmp: Path, fx) -> Path:
        path = copy(fx.dataset, tmp / "in" / "dataset")
        change(path)
        return path
    return make


CASES: dict[str, Callable] = {}
CASES |= {f"version-{v}": publish_case(version=v, named=repr(v)) for v in BAD_VERSIONS}
CASES |= {"version-empty": publish_case(version="", named="version")}
CASES |= {f"repo-{r}": publish_case(repo=r, named=repr(r)) for r in BAD_REPOS}
CASES |= {"repo-empty": publish_case(repo="", named="repo")}
CASES |= {
    "folder-missing": publish_case(folder=lambda t, fx: t / "in" / "nothing", named="nothing"),
    "folder-a-file": publish_case(folder=lambda t, fx: (t / "in").mkdir() or (t / "in" / "f.txt").write_text("x") and t / "in" / "f.txt",
                                  named="f.txt"),
    "folder-empty": publish_case(folder=lambda t, fx: (t / "in" / "empty").mkdir(parents=True) or t / "in" / "empty", named="empty"),
    "folder-no-card": publish_case(folder=damaged(lambda p: (p / "README.md").unlink()), named="README.md"),
    "folder-no-shards": publish_case(folder=damaged(lambda p: (p / "data" / SHARD).unlink()), named="dataset"),
    "folder-stray-file": publish_case(folder=damaged(lambda p: (p / "notes.txt").write_text("scratch")), named="notes.txt"),
    "folder-stray-shard-name": publish_case(folder=damaged(lambda p: (p / "data" / SHARD).rename(p / "data" / "part-0.parquet")),
                                            named="splits present: ['part']"),
}
CASES |= {f"folder-{name}": publish_case(folder=damaged(change), named="README.md") for name, change in CARD_CHANGES.items()}
CASES |= {f"folder-{name}": publish_case(folder=damaged((lambda c: lambda p: c(p / "data" / SHARD))(change)), named=SHARD)
          for name, change in SHARD_BYTES.items()}
PENDING: dict[str, str] = {}  # cases waiting for a fix, as strict xfails: none left


def pull_case(target: str, named: str):
    def make(tmp: Path, fx):
        out = tmp / "work" / "OUT"
        return ["pull", target, "--out", out], out, [named]
    return make


CASES |= {f"pull-{t}": pull_case(t, named) for t, named in BAD_TARGETS.items()}


def _problem(name: str) -> str | None:
    """Version and repo errors say what the argument should look like."""
    return r"vMAJOR\.MINOR\.PATCH" if name.startswith("version-") else r"ORG/NAME" if name.startswith("repo-") else None


@pytest.mark.parametrize("case", [Case(name, make, xfail=PENDING.get(name), problem=_problem(name)).param()
                                  for name, make in CASES.items()])
def test_bad_publish_argument(case, tmp_path, capsys, valid_dataset):
    check_case(case, tmp_path, capsys, SimpleNamespace(dataset=valid_dataset), inputs=[tmp_path / "in"])
