"""What is already on a leaderboard folder, for the scorer's identity checks: the subjects' row ids and the
checkpoint hashes of every generator there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from histosynth.errors import InputError
from histosynth.leaderboard.identity import Identity


@dataclass(frozen=True)
class Board:
    """Row ids and generator checkpoint hashes on the board, with where each was found."""

    row_ids: dict[str, str]  # row id -> results file
    checkpoints: dict[str, str]  # checkpoint hash -> row id

    def refuse_known(self, identity: Identity) -> None:
        """InputError if the identity's row is already on the board (a subject is never added to)."""
        row = identity_row_id(identity)
        if row in self.row_ids:
            raise InputError(f"{identity.folder} is already on the board ({self.row_ids[row]}); a scored subject is "
                             "never added to or rescored")

    def refuse_claims(self, identity: Identity, claims: dict[str, dict[str, Any]]) -> None:
        """InputError if the rows claim a checkpoint hash of a subject already on the board, or disagree among the
        outputs (a generator's syntheses and completions name one checkpoint)."""
        hashes = {claim.get("checkpoint_hash") for claim in claims.values()}
        versions = {claim.get("version") for claim in claims.values()}
        if len(hashes) > 1 or len(versions) > 1:
            raise InputError(f"the outputs' rows name different checkpoints or versions: {sorted(map(str, hashes))}")
        for claimed in hashes:
            if claimed in self.checkpoints:
                raise InputError(f"the rows claim checkpoint {str(claimed)[:19]}..., which belongs to "
                                 f"{self.checkpoints[claimed]} on the board; a submission is scored as "
                                 f"{identity.folder}, never as another subject")


def identity_row_id(identity: Identity) -> str:
    """The leaderboard row id the scorer's identity maps to (histosynth.leaderboard.aggregate.row_of)."""
    from histosynth.benchmark.results import Subject
    from histosynth.leaderboard.aggregate import row_of

    if identity.kind == "generator":
        return row_of(Subject("generator", identity.name, "", checkpoint_hash=identity.checkpoint_hash)).id
    return f"dataset:{identity.name}@sha256:{identity.sha256}"


def board_subjects(results: Path) -> Board:
    """The Board of results folder `results` (an empty board if it holds no results files yet)."""
    from histosynth.leaderboard.aggregate import load_results, row_of

    try:
        runs = load_results(results)
    except InputError:
        return Board({}, {})
    rows: dict[str, str] = {}
    checkpoints: dict[str, str] = {}
    for path, run in runs:
        submitted = run.settings.get("submission") or {}
        for subject in run.subjects.values():
            row = row_of(subject).id
            rows.setdefault(row, path)
            if subject.kind == "dataset" and submitted.get("sha256"):
                rows.setdefault(f"dataset:{subject.name}@sha256:{submitted['sha256']}", path)
            if subject.checkpoint_hash:
                checkpoints.setdefault(subject.checkpoint_hash, row)
        for claim in (submitted.get("claims") or {}).values():
            if isinstance(claim, dict) and claim.get("checkpoint_hash"):
                checkpoints.setdefault(claim["checkpoint_hash"], f"generator:{submitted.get('name')}@{submitted.get('sha256')}")
    return Board(rows, checkpoints)
