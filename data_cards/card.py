"""Dataset cards: render the README.md (Hub YAML metadata + prose) of every dataset histosynth writes, and validate one.

The YAML is built with huggingface_hub's `DatasetCardData` and carries what `datasets.load_dataset` needs (configs,
dataset_info with features), the Hub's catalog fields (license, task_categories, size_categories,
source_datasets, tags) and histosynth's own block (format version, class schemas). The prose comes from
templates/dataset_card.md (Jinja2, as `DatasetCard.from_template` uses) and is parsed back with `DatasetCard`.
`validate_card` checks a card locally and, with `remote=True`, with the Hub's own validator (`DatasetCard.validate`).
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import jinja2
import yaml
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from histosynth.classes import get_schema
from histosynth.data_cards.model import (
    BenchmarkScore,
    CardInfo,
    Version,
    license_name,
    required_license,
    source_license,
)
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.data_cards.sets import DatasetSpec

__all__ = ["BenchmarkScore", "CardInfo", "CardValidationError", "render_card", "render_set_card", "validate_card"]

FORMAT_VERSION = 1
CONTENT_PREFIX = "content "  # the default config's description: "content sha256:<hex>" (config_description)
TEMPLATE = Path(__file__).parent / "templates" / "dataset_card.md"
REQUIRED_METADATA = ("license", "task_categories", "size_categories", "source_datasets", "configs", "tags",
                     "dataset_info", "histosynth")
REQUIRED_SECTIONS = ("Contents", "How it was made", "Classes", "Benchmark scores", "Intended use",
                     "Known limitations", "How to cite", "License")
OLD_SECTIONS = {"License": "Licence"}  # the heading's British spelling, in cards rendered before histosynth 0.2
INTENDED_USE = {
    True: "Training and evaluating tissue-segmentation and nuclei-detection models (as extra or replacement "
          "training data), studying generators, and benchmarking. Research use; not for diagnosis or any "
          "clinical decision.",
    False: "Research on histopathology image analysis: training and evaluating segmentation and detection "
           "models. Not for diagnosis or any clinical decision.",
}
LIMITATIONS = {
    True: "Generated images can contain artifacts and can under-represent rare morphologies of the training data; "
          "the labels are the conditions, so where the generator did not follow them the label is wrong for that "
          "image. Scores of models trained only on synthetic data can differ from scores on real data: evaluate "
          "on real data.",
    False: "Inherits the limitations of the source data (annotation noise, scanner and stain variation); see its "
           "documentation.",
}


class CardValidationError(InputError):
    """A dataset card is malformed or incomplete; the message lists every problem."""


def histosynth_version() -> str:
    """The installed histosynth version (recorded in every card)."""
    try:
        return metadata.version("histosynth")
    except metadata.PackageNotFoundError:
        return "unknown"


def size_category(n: int) -> str:
    """The Hub's size bucket for n samples."""
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def config_description(fingerprint: str) -> str:
    """The default config's `description`: the content fingerprint of the data files it names.

    Why it is there: for a local folder whose card has `configs`, `datasets` (5.2, load.py
    `LocalDatasetModuleFactory.get_module`) keys the cache on the folder's last path component, the config name and
    `Hasher.hash({"dataset_infos", "builder_configs"})`, where the builder configs hold the card's data_files
    patterns as written (`data/train-*`), never the files they match. Two folders with the same name, features and
    split sizes (`a/g` and `b/g`) therefore share one cache entry and the second load silently returns the first
    one's rows. `description` is a `BuilderConfig` field, so YAML puts it into the config and the hash: every
    distinct content gets its own entry, and the same content (by relative or absolute path) reuses it.
    """
    return f"{CONTENT_PREFIX}{fingerprint}"


def card_fingerprint(text: str) -> str | None:
    """The content fingerprint a card's default config declares (`config_description`), or None if it has none."""
    try:
        config = MetadataConfigs.from_dataset_card_data(DatasetCard(text).data).get("default") or {}
    except (ValueError, yaml.YAMLError):
        return None
    description = config.get("description")
    if isinstance(description, str) and description.startswith(CONTENT_PREFIX):
        return description[len(CONTENT_PREFIX):]
    return None


def _class_table(schema_name: str, counts: dict[int, int] | None, unit: str) -> dict:
    schema = get_schema(schema_name)
    classes = list(schema.classes)
    rows = []
    for info in classes:
        count = "not counted yet" if counts is None else f"{counts.get(info.id, 0):,}"
        rows.append({"id": info.id, "name": info.name, "color": "#{:02x}{:02x}{:02x}".format(*info.color), "count": count})
    if schema.kind == "tissue":  # 255 is valid in tissue maps only
        rows.append({"id": 255, "name": "ignore", "color": "-", "count": "" if counts is None else f"{counts.get(255, 0):,}"})
    return {"name": schema.name, "kind": schema.kind, "description": schema.description, "unit": unit, "rows": rows}


def _environment() -> jinja2.Environment:
    return jinja2.Environment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                              undefined=jinja2.StrictUndefined, autoescape=False)


def render_card(
    info: CardInfo,
    features: datasets.Features,
    split_sizes: dict[str, int],
    tissue_schema: str | None,
    nuclei_schema: str | None,
    tissue_pixels: dict[int, int] | None = None,
    nuclei_counts: dict[int, int] | None = None,
    fingerprint: str | None = None,
) -> str:
    """The README.md text of a dataset: Hub YAML front matter and the prose sections; validated before returning.

    Counts of None (not gathered) render as "not counted yet", e.g. for the card of a planned set. `fingerprint`
    (`histosynth.disk.content_fingerprint` of the folder's shards) goes into the default config, so that
    `datasets.load_dataset(folder)` caches each distinct content apart (see `config_description`).
    """
    if info.version:
        Version.parse(info.version)
    total = sum(split_sizes.values())
    block = {"format_version": FORMAT_VERSION, "tissue_schema": tissue_schema, "nuclei_schema": nuclei_schema,
             "histosynth_version": histosynth_version()}
    if info.version:
        block["version"] = info.version
    if info.generator:
        block["generator"] = {"name": info.generator, "version": info.generator_version or None,
                              "checkpoint_hash": info.checkpoint_hash or None}
    card_data = DatasetCardData(
        license=info.license,
        pretty_name=info.pretty_name,
        size_categories=size_category(total),
        source_datasets=info.hub_source_datasets(),
        task_categories=list(info.task_categories),
        tags=list(dict.fromkeys(["histopathology", "histosynth", *(["synthetic"] if info.synthetic else []), *info.tags])),
        histosynth=block,
    )
    config: dict = {"data_files": [{"split": s, "path": f"data/{s}-*"} for s in split_sizes]}
    if fingerprint:
        config["description"] = config_description(fingerprint)
    MetadataConfigs({"default": config}).to_dataset_card_data(card_data)
    dataset_info = DatasetInfo(features=features, splits=datasets.SplitDict({s: datasets.SplitInfo(s, num_examples=n) for s, n in split_sizes.items()}))
    DatasetInfosDict({"default": dataset_info}).to_dataset_card_data(card_data)

    tables = []
    if tissue_schema:
        tables.append(_class_table(tissue_schema, tissue_pixels, "pixels"))
    if nuclei_schema:
        tables.append(_class_table(nuclei_schema, nuclei_counts, "nuclei"))
    imposed = required_license(info.source_datasets)
    text = _environment().from_string(TEMPLATE.read_text(encoding="utf-8")).render(
        card_yaml=card_data.to_yaml(),
        info=info,
        splits=list(split_sizes.items()),
        total=total,
        tables=tables,
        measured_scores=[s for s in info.benchmark if s.measured],
        reported_scores=[s for s in info.benchmark if not s.measured],
        histosynth_version=histosynth_version(),
        default_intended_use=INTENDED_USE[info.synthetic],
        default_limitations=LIMITATIONS[info.synthetic],
        imposed=imposed,
        imposed_sources=", ".join(s for s in info.source_datasets if source_license(s) == imposed),
        license_title=license_name(info.license),
        source_licenses=", ".join(f"{s} {source_license(s)}" for s in info.source_datasets if source_license(s)),
        repo=info.repo or "ORG/NAME",
    )
    validate_card(text)
    return text


def render_set_card(spec: "DatasetSpec", version: str | None = None) -> str:
    """The card of a registered (released or planned) set at `version` (default: its latest), before counting."""
    from histosynth.rows import features_for

    entry = spec.version(version) if version else spec.latest
    info = spec.card_info(str(entry.version))
    return render_card(info, features_for(spec.tissue_schema, spec.nuclei_schema), dict(entry.samples),
                       spec.tissue_schema, spec.nuclei_schema)


def _metadata_problems(card: DatasetCard) -> list[str]:
    data = card.data.to_dict()
    problems = [f"metadata has no `{key}`" for key in REQUIRED_METADATA if not data.get(key)]
    if problems:
        return problems
    if not isinstance(data["license"], str):
        problems.append("`license` must be one Hub license id")
    block = data["histosynth"]
    if not isinstance(block, dict) or block.get("format_version") != FORMAT_VERSION:
        problems.append(f"`histosynth.format_version` must be {FORMAT_VERSION}")
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    if "default" not in configs or not configs["default"].get("data_files"):
        problems.append("`configs` needs a `default` config with data_files")
    try:
        infos = DatasetInfosDict.from_dataset_card_data(card.data)
        info = infos.get("default")
        if info is None or info.features is None:
            problems.append("`dataset_info` has no features for the default config")
        elif info.splits:
            total = sum(s.num_examples for s in info.splits.values())
            if data["size_categories"] not in (size_category(total), [size_category(total)]):
                problems.append(f"`size_categories` is {data['size_categories']} but dataset_info counts {total} samples "
                                f"({size_category(total)})")
    except (TypeError, ValueError, KeyError) as err:
        problems.append(f"`dataset_info` does not parse as datasets features ({err})")
    sources = data["source_datasets"] if isinstance(data["source_datasets"], list) else [data["source_datasets"]]
    probe = CardInfo("", "", license=data["license"] if isinstance(data["license"], str) else "",
                     source_datasets=[s for s in sources if s != "original"])
    problems += probe.license_problems()
    return problems


def validate_card(text: str, remote: bool = False) -> DatasetCard:
    """Parse and check a card: the Hub metadata fields, features that `datasets` can read, the license rule and
    the prose sections. With `remote=True` the Hub (HF_ENDPOINT) validates the YAML too. Raises
    CardValidationError listing every problem; returns the parsed `DatasetCard`."""
    try:
        card = DatasetCard(text)
    except (ValueError, yaml.YAMLError) as err:
        raise CardValidationError(f"the card's YAML front matter does not parse ({err})") from err
    if not text.lstrip().startswith("---"):
        raise CardValidationError("the card has no YAML front matter")
    problems = _metadata_problems(card)
    headings = {line[3:].strip() for line in card.text.splitlines() if line.startswith("## ")}
    problems += [f"no `## {s}` section" for s in REQUIRED_SECTIONS if s not in headings and OLD_SECTIONS.get(s) not in headings]
    if problems:
        raise CardValidationError("invalid dataset card:\n  - " + "\n  - ".join(problems))
    if remote:
        try:
            card.validate(repo_type="dataset")
        except ValueError as err:
            raise CardValidationError(f"the Hub refused the card's metadata: {err}") from err
    return card
