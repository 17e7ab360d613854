"""What the page and the tables say about a row beyond its numbers: generator metadata, citations and card links.

Generator metadata comes from histosynth.generators.registry (metadata only, no model code is imported); a plugin
generator that is not registered here simply has none.
"""

from __future__ import annotations

import re

from histosynth.generators.base import GeneratorMeta
from histosynth.generators.registry import GENERATORS
from histosynth.leaderboard.aggregate import Row

HUB_URL = "https://huggingface.co"
_BIBTEX_KEY = re.compile(r"@\w+\s*\{\s*([^,\s]+)\s*,")


def generator_meta(row: Row) -> GeneratorMeta | None:
    """The registry metadata of a generator row (None for datasets, real data and unregistered plugins)."""
    return GENERATORS.get(row.name) if row.kind == "generator" and row.name in GENERATORS else None


def citation(row: Row) -> str | None:
    """The BibTeX entry of a row's paper, if it has one: a submission's own, else the registered generator's."""
    if row.citation and _BIBTEX_KEY.search(row.citation):
        return row.citation.strip()
    meta = generator_meta(row)
    if meta is None or not _BIBTEX_KEY.search(meta.citation):
        return None
    return meta.citation.strip()


def citation_key(bibtex: str) -> str:
    """The key of a BibTeX entry (`@inproceedings{htd2025, ...` -> htd2025)."""
    match = _BIBTEX_KEY.search(bibtex)
    if match is None:
        raise ValueError(f"not a BibTeX entry: {bibtex[:60]!r}")
    return match.group(1)


def hub_card_url(row: Row) -> str | None:
    """The Hub dataset card of the data a row was scored on, where it came from a Hub repo."""
    if not row.repo:
        return None
    return f"{HUB_URL}/datasets/{row.repo}" + (f"/tree/{row.revision}" if row.revision else "")
