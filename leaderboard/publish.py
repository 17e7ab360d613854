"""Publish a results folder as a Hub dataset: the files as they are, one commit, tagged by the suite version
(results scored by the suite record it; the tag's major version must be it).

Every file is validated first (schema, and that the leaderboard can place every number) so nothing is uploaded
from a folder the page could not be built from. The commit and tag go through histosynth.hub.publish_checked, the
same path as dataset releases: an existing version is refused before any write, and an interrupted run resumes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from huggingface_hub import HfApi

from histosynth.benchmark.results import BenchmarkRun
from histosynth.data_cards.model import Version
from histosynth.hub import CheckedFolder, LocalFile, Log, PublishError, PublishResult, file_hashes, publish_checked
from histosynth.leaderboard.aggregate import build_leaderboard, load_results

RESULTS_DIR = "results"
CARD = "README.md"


def check_suite_version(runs: list[tuple[str, BenchmarkRun]], version: Version) -> str | None:
    """The suite version the runs were scored with (settings.suite_version, written by the suite runner), checked
    against the tag: one suite version per release, and its tag's major version is that suite version. Runs
    scored outside the suite (plain `histosynth bench`) carry none and constrain nothing. Returns "NAME vN" or
    None."""
    suites = {(str(run.settings.get("suite")), str(run.settings["suite_version"])): name
              for name, run in runs if run.settings.get("suite_version") is not None}
    if len(suites) > 1:
        found = ", ".join(f"{suite} v{v} ({name})" for (suite, v), name in sorted(suites.items()))
        raise PublishError(f"the results mix suite versions: {found}; publish each suite version as its own release")
    if not suites:
        return None
    (suite, suite_version), _ = suites.popitem()
    if str(version.major) != suite_version:
        raise PublishError(f"{version} does not match the results' suite version {suite} v{suite_version}: tag "
                           f"results of suite v{suite_version} as v{suite_version}.MINOR.PATCH")
    return f"{suite} v{suite_version}"


def results_card(repo: str, version: Version, files: list[str], tasks: list[str], suite: str | None) -> str:
    """The README.md of a results repo: what it holds and how to rebuild the page from it."""
    listing = "\n".join(f"- `{RESULTS_DIR}/{f}`" for f in files)
    return f"""---
pretty_name: histosynth-bench results {version}
tags:
- histosynth
- benchmark-results
- leaderboard
---

# histosynth-bench results {version}

{len(files)} benchmark results files (histosynth results schema v2, one JSON document per run) of the tasks
{', '.join(tasks)}{f", scored with the suite {suite}" if suite else ""}. Each file names what it scored (its `subjects`), the task and its version, the code versions
and its comparability key.

Rebuild the leaderboard page from this version:

```
hf download {repo} --repo-type dataset --revision {version} --local-dir results-{version}
histosynth leaderboard build --results results-{version}/{RESULTS_DIR} --out site/
```

{listing}
"""


def publish_results(results: Path | str, repo: str, version: str | Version, private: bool = False,
                    dry_run: bool = False, log: Log = print, api: HfApi | None = None) -> PublishResult:
    """Validate every results file under `results`, then publish them (under results/) and a README.md card to the
    dataset repo `repo` as version `version` (vX.Y.Z), in one commit and one tag."""
    version = version if isinstance(version, Version) else Version.parse(version)
    results = Path(results)
    runs = load_results(results)
    board = build_leaderboard(runs)
    suite = check_suite_version(runs, version)
    log(f"validated {len(runs)} results files in {results}: {len(board.rows)} subjects, {len(board.columns)} columns")
    names = [name for name, _ in runs]
    with tempfile.TemporaryDirectory(prefix="histosynth-results-card-") as tmp:
        card = Path(tmp) / CARD
        card.write_text(results_card(repo, version, names, board.tasks, suite), encoding="utf-8")
        sources = [(CARD, card)] + [(f"{RESULTS_DIR}/{name}", results / name) for name in names]
        files = [LocalFile(path, local, local.stat().st_size, *file_hashes(local)) for path, local in sources]
        return publish_checked(CheckedFolder(results, files, {}), repo, version, f"{len(runs)} results files",
                               private=private, dry_run=dry_run, log=log, api=api)
