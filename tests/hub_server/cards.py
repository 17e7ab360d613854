"""Model and dataset cards on the test Hub: a README's YAML front matter, checked the way the Hub checks the basics."""

from __future__ import annotations

import re
from typing import Any

import yaml

YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")  # same as huggingface_hub.repocard
CARD_LIST_FIELDS = ("tags", "task_categories", "task_ids", "language", "size_categories", "annotations_creators")


def parse_card(content: str) -> tuple[dict[str, Any] | None, list[str], list[str]]:
    """(metadata, errors, warnings) of a README's YAML front matter, checked the way the Hub checks the basics."""
    match = YAML_BLOCK.search(content)
    if match is None:
        return None, [], ["Empty or missing yaml metadata in repo card"]
    try:
        data = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        return None, [f"Invalid YAML in README.md metadata: {exc}"], []
    if data is None:
        return None, [], ["Empty or missing yaml metadata in repo card"]
    if not isinstance(data, dict):
        return None, ["YAML metadata must be a mapping"], []
    errors = []
    if "license" in data and not (
        isinstance(data["license"], str)
        or (isinstance(data["license"], list) and all(isinstance(x, str) for x in data["license"]))
    ):
        errors.append('"license" must be a string or a list of strings')
    for field in CARD_LIST_FIELDS:
        value = data.get(field)
        if value is not None and not (isinstance(value, str) or (
                isinstance(value, list) and all(isinstance(x, str) for x in value))):
            errors.append(f'"{field}" must be a string or a list of strings')
    configs = data.get("configs")
    if configs is not None and not (
        isinstance(configs, list)
        and all(isinstance(c, dict) and isinstance(c.get("config_name"), str) for c in configs)
    ):
        errors.append('"configs" must be a list of mappings, each with a string "config_name"')
    return (None if errors else data), errors, []
