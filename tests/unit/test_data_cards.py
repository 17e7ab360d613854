"""Dataset cards (rendering, local validation, license rule), the registry of released/planned sets, versions,
and the offline parts of histosynth.hub (folder validation, hashes, targets). The Hub-facing parts are in
tests/hub/test_publish.py."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets.info import DatasetInfosDict
from helpers import labeled_sample
from huggingface_hub import DatasetCard

from histosynth.cli import build_parser
from histosynth.data_cards.card import CardValidationError, render_card, render_set_card, validate_card
from histosynth.data_cards.model import (
    SHARE_ALIKE,
    SOURCE_LICENSES,
    BenchmarkScore,
    CardInfo,
    Version,
    default_license,
    required_license,
)
from histosynth.data_cards.sets import DATASETS, SpecError, get_set, load_spec
from histosynth.disk import DatasetFormatError, write_dataset
from histosynth.hub import file_hashes, parse_target, validate_folder
from histosynth.rows import features_for
from histosynth.sources import SOURCES

SYNTHETIC = CardInfo(
    pretty_name="Synthetic PanNuke-like nuclei",
    description="Test set.",
    license="cc-by-nc-sa-4.0",
    source_datasets=["pannuke"],
    command="histosynth generate x --n 3 --out DIR\nhistosynth publish DIR --repo org/set --version v1.2.3",
    generator="dual-lora",
    generator_version="0.3.1",
    checkpoint_hash="sha256:abc123",
    conditioning_source="PanNuke fold 3 centroids",
    seeds="base seed 7",
    benchmark=[BenchmarkScore("FD", 12.5, encoder="effnet-lite0", ci="[11.9, 13.1]", reference="histosynth bench 0.1.0")],
    version="v1.2.3",
    repo="org/set",
)


def render(info: CardInfo, tissue: str | None = "camelyon16", nuclei: str | None = "pannuke", **counts) -> str:
    return render_card(info, features_for(tissue, nuclei), {"train": 3, "test": 1}, tissue, nuclei, **counts)


def yaml_of(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def test_synthetic_card_has_hub_metadata_and_every_section() -> None:
    text = render(SYNTHETIC, tissue_pixels={0: 10, 1: 1234, 2: 5, 255: 2}, nuclei_counts={1: 4, 5: 2})
    meta = yaml_of(text)
    assert meta["license"] == "cc-by-nc-sa-4.0" and meta["source_datasets"] == ["extended|pannuke"]
    assert meta["size_categories"] == "n<1K" and meta["task_categories"] == ["image-segmentation", "image-to-image"]
    assert {"histopathology", "histosynth", "synthetic"} <= set(meta["tags"])
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"},
                                                                          {"split": "test", "path": "data/test-*"}]}]
    assert meta["histosynth"]["generator"] == {"name": "dual-lora", "version": "0.3.1", "checkpoint_hash": "sha256:abc123"}
    card = validate_card(text)
    features = DatasetInfosDict.from_dataset_card_data(card.data)["default"].features
    assert features == features_for("camelyon16", "pannuke")
    for needle in (
        "| generator | `dual-lora` 0.3.1 |", "| checkpoint hash | sha256:abc123 |",
        "| conditioning source | PanNuke fold 3 centroids |", "| seeds | base seed 7 |",
        "histosynth publish DIR --repo org/set --version v1.2.3", "| 1 | normal | `#3ca03c` | 1,234 |",
        "| 255 | ignore | `-` | 2 |", "| 5 | epithelial | `#ffa500` | 2 |", "| 4 | dead | `#ffff00` | 0 |",
        "| FD | effnet-lite0 | 12.5 | [11.9, 13.1] | histosynth bench 0.1.0 |",
        "distributed under the same license, CC BY-NC-SA 4.0", 'revision="v1.2.3"', "**Synthetic data.**",
        "not for diagnosis",
    ):
        assert needle in text, needle
    assert "Not measured on this set yet" not in text


def test_real_data_card_without_generator_or_labels() -> None:
    info = CardInfo("Camelyon16 patches", "Tiles.", license="cc0-1.0", source_datasets=["camelyon16"])
    text = render(info, tissue=None, nuclei=None)
    assert "| generator | none: patches of the source data |" in text and "Unlabeled: patches only." in text
    assert "Not measured on this set yet." in text and "The command that produced this set was not recorded." in text
    assert "`cc0-1.0`: CC0 1.0" in text and "Source data: camelyon16 cc0-1.0." in text
    assert yaml_of(text)["source_datasets"] == ["extended|camelyon16"]
    assert yaml_of(render(CardInfo("s", "d"), None, None))["source_datasets"] == ["original"]


def test_license_follows_share_alike_sources() -> None:
    assert default_license(["panda"]) == default_license(["extended|pannuke", "camelyon16"]) == "cc-by-nc-sa-4.0"
    assert default_license(["camelyon16"]) == "cc0-1.0" and default_license(["camelyon16", "consep"]) == "other"
    assert required_license(["camelyon16", "unknown-set"]) is None
    wrong = CardInfo("x", "y", license="cc0-1.0", source_datasets=["panda"])
    assert "must be licensed 'cc-by-nc-sa-4.0'" in wrong.license_problems()[0]
    with pytest.raises(CardValidationError, match="share-alike"):
        render(wrong)


def test_source_license_table_matches_the_readers() -> None:
    for name in SOURCES:
        license = SOURCES.get(name).meta.license.lower()
        if name in SOURCE_LICENSES:
            assert SOURCE_LICENSES[name] == license, name
        else:
            assert license not in SHARE_ALIKE, f"add {name} ({license}) to SOURCE_LICENSES: derivatives must inherit it"


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t.replace("license: cc0-1.0\n", ""), "metadata has no `license`"),
    (lambda t: t.replace("size_categories: n<1K", "size_categories: 1K<n<10K"), "`size_categories` is 1K<n<10K"),
    (lambda t: t.replace("format_version: 1", "format_version: 9"), "`histosynth.format_version` must be 1"),
    (lambda t: t.replace("## Known limitations", "## Caveats"), "no `## Known limitations` section"),
    (lambda t: t.replace("dtype: int64", "dtype: not-a-type", 1), "does not parse as datasets features"),
    (lambda t: t.replace("license: cc0-1.0", "license: [unclosed"), "does not parse"),
])
def test_validate_card_names_each_problem(edit, problem) -> None:
    text = render(CardInfo("t", "d", license="cc0-1.0"))
    validate_card(text)
    with pytest.raises(CardValidationError, match=re.escape(problem)):
        validate_card(edit(text))


def test_versions_are_strict_semver() -> None:
    assert str(Version.parse("v1.10.0")) == "v1.10.0"
    assert Version.parse("v1.2.3") < Version.parse("v1.10.0") < Version.parse("v2.0.0")
    for bad in ("1.0.0", "v1.0", "v1.0.0-rc1", "v01.0.0", "version1", ""):
        with pytest.raises(ValueError, match="vMAJOR.MINOR.PATCH"):
            Version.parse(bad)
    with pytest.raises(ValueError, match="vMAJOR"):
        render(CardInfo("t", "d", version="1.0"))


def test_registry_lists_the_planned_htd_sets() -> None:
    assert list(DATASETS) == ["htd-camelyon16", "htd-panda-karolinska", "htd-panda-radboud"]
    camelyon, panda = get_set("htd-camelyon16"), get_set("htd-panda-karolinska")
    assert camelyon.status == panda.status == "planned" and str(camelyon.latest.version) == "v1.0.0"
    assert camelyon.card["license"] == "cc0-1.0" and panda.card["license"] == "cc-by-nc-sa-4.0"
    assert (camelyon.tissue_schema, panda.tissue_schema) == ("camelyon16", "panda-karolinska")
    for spec in (camelyon, panda):
        info = spec.card_info()
        assert info.generator == "htd" and info.version == "v1.0.0" and info.repo == spec.repo
        assert f"histosynth recipe run data_cards/cards/{spec.name}.yaml --scale full" in info.command
    with pytest.raises(KeyError, match="no version v2.0.0"):
        camelyon.version("v2.0.0")
    with pytest.raises(KeyError, match="did you mean 'htd-camelyon16'"):
        get_set("htd-camelyon")


@pytest.mark.parametrize("name", ["htd-camelyon16", "htd-panda-karolinska", "htd-panda-radboud"])
def test_every_registered_set_renders_a_valid_card(name: str) -> None:
    spec = get_set(name)
    text = render_set_card(spec)
    card = validate_card(text)
    assert isinstance(card, DatasetCard) and card.data.license == spec.card["license"]
    assert f"Schema `{spec.tissue_schema}` (tissue)" in text and "not counted yet" in text
    reported = any(not score.get("measured", True) for score in spec.card.get("benchmark", []))
    assert ("reference figure, not measured on this set" in text) == reported and "Not measured on this set yet" in text
    assert spec.card["command"].strip() in text and "arXiv" in text
    if spec.card["license"] == "cc-by-nc-sa-4.0":
        assert "The source data (panda) is licensed CC BY-NC-SA 4.0. This dataset is derived from it" in text


def write_spec(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load(get_set("htd-panda-karolinska").path.read_text())
    path = tmp_path / f"{raw['name']}.yaml"
    for key, value in changes.items():
        if key.startswith("card."):
            raw["card"][key[5:]] = value
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, problem", [
    ({"card.license": "cc0-1.0"}, "must be licensed 'cc-by-nc-sa-4.0'"),
    ({"versions": [{"version": "1.0", "status": "planned", "samples": {"train": 1}}]}, "vMAJOR.MINOR.PATCH"),
    ({"versions": [{"version": "v1.0.0", "status": "released", "samples": {"train": 1}}]}, "needs the 40-hex `commit`"),
    ({"card.command": "histosynth generate htd --out x"}, "must show the `histosynth recipe run`"),
    ({"card.command": "histosynth generate htd --out x", "recipe": None}, "must end with the `histosynth publish"),
    ({"card.color": "red"}, "unknown card fields ['color']"),
    ({"status": "released"}, "unknown fields ['status']"),
    ({"name": "other"}, "must equal the file name"),
])
def test_malformed_specs_are_refused(tmp_path: Path, changes: dict, problem: str) -> None:
    load_spec(write_spec(tmp_path))
    with pytest.raises(SpecError, match=re.escape(problem)):
        load_spec(write_spec(tmp_path, **changes))


def test_ls_datasets_lists_versions_without_heavy_imports() -> None:
    code = ("import sys, io, contextlib, json\nfrom histosynth.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    main(['ls', 'datasets'])\n"
            "print(json.dumps({'out': buf.getvalue(), 'heavy': [m for m in ('torch', 'datasets', 'huggingface_hub', "
            "'jinja2') if m in sys.modules]}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["heavy"] == []
    assert "htd-camelyon16        v1.0.0 planned | histosynth/htd-camelyon16 | cc0-1.0 |" in data["out"]
    assert "htd-panda-karolinska  v1.0.0 planned | histosynth/htd-panda-karolinska | cc-by-nc-sa-4.0 |" in data["out"]


@pytest.mark.parametrize("verb", [["publish"], ["pull"]])
def test_hub_verbs_have_help(verb, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*verb, "--help"])
    assert info.value.code == 0 and "usage: histosynth" in capsys.readouterr().out


def test_parse_target() -> None:
    assert parse_target("org/name@v1.2.3") == ("org/name", Version(1, 2, 3))
    assert parse_target("org/name") == ("org/name", None)
    for bad in ("name@v1.0.0", "org/name@1.0", "a/b/c@v1.0.0"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_validate_folder_counts_rows_and_hashes_files(tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    write_dataset({"train": [labeled_sample(i) for i in range(5)], "test": [labeled_sample(9)]}, folder,
                  CardInfo("t", "d", license="cc0-1.0"), "camelyon16", "pannuke", max_shard_bytes=5_000)
    checked = validate_folder(folder, progress=False)
    assert checked.split_sizes == {"train": 5, "test": 1}
    assert [f.path for f in checked.files][0] == "README.md" and len(checked.files) > 3
    shard = next(f for f in checked.files if f.path.endswith(".parquet"))
    data = shard.local.read_bytes()
    assert (shard.sha256, shard.git_sha1) == (hashlib.sha256(data).hexdigest(),
                                              hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
    assert file_hashes(shard.local) == (shard.sha256, shard.git_sha1)
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("num_examples: 5", "num_examples: 6"))
    with pytest.raises(DatasetFormatError, match="declares 6 train samples but the shards hold 5"):
        validate_folder(folder, progress=False)


def test_a_planned_set_is_refused_by_pull_and_load_samples_with_the_command_that_builds_it(tmp_path, network_attempts):
    from histosynth.hub import PublishError, load_samples, pull

    for call in (lambda: pull("histosynth/htd-camelyon16", "v1.0.0", tmp_path / "out"),
                 lambda: next(load_samples("histosynth/htd-camelyon16", "v1.0.0"))):
        with pytest.raises(PublishError, match="is planned, not published yet") as caught:
            call()
        assert "histosynth recipe run data_cards/cards/htd-camelyon16.yaml" in str(caught.value)
    assert not (tmp_path / "out").exists() and network_attempts == []
