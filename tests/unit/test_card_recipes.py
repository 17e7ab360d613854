"""The release recipes in data_cards/cards must be commands today's CLI accepts, so they cannot drift from it."""

from __future__ import annotations

import shlex

import pytest

from histosynth.cli import build_parser
from histosynth.data_cards.sets import load_specs


def recipe_commands(command_block: str) -> list[str]:
    """The `histosynth ...` lines of a card's command block (comments and blank lines dropped)."""
    return [line.strip() for line in command_block.splitlines() if line.strip().startswith("histosynth ")]


SPECS = load_specs()


def test_every_card_has_a_recipe():
    assert SPECS, "no dataset cards found in data_cards/cards"
    for spec in SPECS:
        assert recipe_commands(spec.card_info().command), f"{spec.path}: card.command has no `histosynth` line"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_recipe_lines_parse_with_the_real_cli(spec, capsys):
    parser = build_parser()
    for line in recipe_commands(spec.card_info().command):
        try:
            args = parser.parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"{spec.path}: `{line}` does not parse: {capsys.readouterr().err.strip()}")
        assert callable(args.handler), line


def test_a_drifted_recipe_is_caught(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(shlex.split("histosynth train htd --data . --out o --weights /w")[1:])
    assert "--weights" in capsys.readouterr().err
