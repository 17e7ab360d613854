"""Dataset cards: the README.md (Hub YAML metadata + prose) of every dataset histosynth writes.

The YAML carries what `datasets.load_dataset(folder)` needs (configs, dataset_info with features) and
histosynth's own block (format version, class schemas); huggingface_hub's card classes render and
validate it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from histosynth.classes import get_schema

FORMAT_VERSION = 1


@dataclass
class CardInfo:
    """What a card says about a dataset beyond its features and counts."""

    pretty_name: str
    description: str
    license: str = "other"
    source: str = ""
    source_datasets: list[str] = field(default_factory=list)
    command: str = ""
    tags: list[str] = field(default_factory=list)
    limitations: str = ""
    citation: str = ""


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _class_table(schema_name: str, counts: dict[int, int] | None, unit: str) -> str:
    schema = get_schema(schema_name)
    lines = [f"Schema `{schema.name}` ({schema.kind}): {schema.description}.", "", f"| id | class | colour | {unit} |", "|---|---|---|---|"]
    for info in schema.classes:
        count = "" if counts is None else f"{counts.get(info.id, 0):,}"
        lines.append(f"| {info.id} | {info.name} | `#{info.colour[0]:02x}{info.colour[1]:02x}{info.colour[2]:02x}` | {count} |")
    lines.append(f"| 255 | ignore | | {'' if counts is None else f'{counts.get(255, 0):,}'} |")
    return "\n".join(lines)


def render_card(
    info: CardInfo,
    features: datasets.Features,
    split_sizes: dict[str, int],
    tissue_schema: str | None,
    nuclei_schema: str | None,
    tissue_pixels: dict[int, int] | None = None,
    nuclei_counts: dict[int, int] | None = None,
) -> str:
    """The README.md text: Hub YAML front matter (validated by huggingface_hub) and the prose sections."""
    total = sum(split_sizes.values())
    card_data = DatasetCardData(
        license=info.license,
        pretty_name=info.pretty_name,
        size_categories=_size_category(total),
        source_datasets=info.source_datasets or None,
        task_categories=["image-segmentation", "image-to-image"],
        tags=["histopathology", "histosynth", *info.tags],
        histosynth={"format_version": FORMAT_VERSION, "tissue_schema": tissue_schema, "nuclei_schema": nuclei_schema},
    )
    MetadataConfigs({"default": {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in split_sizes]}}).to_dataset_card_data(card_data)
    dataset_info = DatasetInfo(features=features, splits=datasets.SplitDict({s: datasets.SplitInfo(s, num_examples=n) for s, n in split_sizes.items()}))
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(card_data)

    sections = [f"# {info.pretty_name}", "", info.description, ""]
    sections += ["## Contents", "", "| split | samples |", "|---|---|", *[f"| {s} | {n:,} |" for s, n in split_sizes.items()], ""]
    if info.source:
        sections += ["## Source and provenance", "", info.source, "", "Every row carries its provenance columns (source, slide_id, x, y, level, mpp, generator, generator_version, checkpoint_hash, seed).", ""]
    if info.command:
        sections += ["## How it was made", "", "```", info.command, "```", ""]
    sections += ["## Classes", ""]
    if tissue_schema:
        sections += [_class_table(tissue_schema, tissue_pixels, "pixels"), ""]
    if nuclei_schema:
        sections += [_class_table(nuclei_schema, nuclei_counts, "nuclei"), ""]
    if not tissue_schema and not nuclei_schema:
        sections += ["Unlabelled: patches only.", ""]
    sections += ["## Loading", "", "```python", "import datasets", "from histosynth.rows import row_to_sample",
                 "ds = datasets.load_dataset(PATH_OR_REPO, split=\"train\")", "sample = row_to_sample(ds[0])", "```", ""]
    if info.limitations:
        sections += ["## Known limitations", "", info.limitations, ""]
    sections += ["## Licence", "", f"`{info.license}`" + (" (follows the source data)." if info.source_datasets else "."), ""]
    if info.citation:
        sections += ["## Citation", "", "```bibtex", info.citation, "```", ""]
    card = DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections))
    DatasetCard(str(card))  # re-parse: raises on malformed YAML (remote validation needs a Hub: issue 6)
    return str(card)
