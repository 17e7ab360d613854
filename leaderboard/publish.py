"""Publish a results folder as a Hub dataset: the files as they are, one commit, tagged by the suite version.

Every file is validated first (schema, and that the leaderboard can place every number) so nothing is uploaded
from a folder the page could not be built from. The commit and tag go through histosynth.hub.publish_checked, the
same path as dataset releases: an existing version is refused before any write, and an interrupted run resumes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from histosynth.data_cards.model import Version
from histosynth.hub import CheckedFolder, LocalFile, Log, PublishResult, file_hashes, publish_checked
from histosynth.leaderboard.aggregate import build_leaderboard, load_results

RESULTS_DIR = "results"
CARD = "README.md"


def results_card(repo: str, version: Version, files: list[str], tasks: list[str]) -> str:
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
{', '.join(tasks)}. Each file names what it scored (its `subjects`), the task and its version, the code versions
and its comparability key.

Rebuild the leaderboard page from this version:

```
hf download {repo} --repo-type dataset --revision {version} --local-dir results-{version}
histosynth leaderboard build --results results-{version}/{RESULTS_DIR} --out site/
```

{listing}
"""


def publish_results(results: Path | str, repo: str, version: str | Version, private: bool = False,
                    dry_run: bool = False, log: Log = print, api=None) -> PublishResult:
    """Validate every results file under `results`, then publish them (under results/) and a README.md card to the
    dataset repo `repo` as version `version` (vX.Y.Z), in one commit and one tag."""
    version = version if isinstance(version, Version) else Version.parse(version)
    results = Path(results)
    runs = load_results(results)
    board = build_leaderboard(runs)
    log(f"validated {len(runs)} results files in {results}: {len(board.rows)} subjects, {len(board.columns)} columns")
    names = [name for name, _ in runs]
    with tempfile.TemporaryDirectory(prefix="histosynth-results-card-") as tmp:
        card = Path(tmp) / CARD
        card.write_text(results_card(repo, version, names, board.tasks), encoding="utf-8")
        sources = [(CARD, card)] + [(f"{RESULTS_DIR}/{name}", results / name) for name in names]
        files = [LocalFile(path, local, local.stat().st_size, *file_hashes(local)) for path, local in sources]
        return publish_checked(CheckedFolder(results, files, {}), repo, version, f"{len(runs)} results files",
                               private=private, dry_run=dry_run, log=log, api=api)
