import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import labeled_sample

from histosynth.data_cards.card import CardInfo, card_fingerprint
from histosynth.disk import (
    DatasetFormatError,
    content_fingerprint,
    count_samples,
    iter_samples,
    publish_shards,
    read_metadata,
    shard_paths,
    write_dataset,
    write_shard,
)
from histosynth.rows import features_for, row_to_sample, sample_to_row
from histosynth.schema import Nuclei, Provenance, Sample, SampleValidationError
from histosynth.sources import build_source

CARD = CardInfo("test set", "hand-made samples", license="cc0-1.0")


def varied_samples(n=12):
    out = []
    for i in range(n):
        out.append(labeled_sample(i, nuclei=i % 3 != 1, tissue=i % 4 != 2, mask=i % 2 == 0))
    # labeled with zero nuclei is not the same as unlabeled
    out.append(Sample(np.zeros((32, 32, 3), np.uint8), Provenance("test"), nuclei=Nuclei.from_list("pannuke", [], np.zeros((32, 32), np.uint16))))
    return out


def test_row_round_trip_is_exact_for_encoded_and_decoded_rows():
    features = features_for("camelyon16", "pannuke")
    for sample in varied_samples():
        row = sample_to_row(sample)
        assert row_to_sample(row).equals(sample)
        decoded = features.decode_example(features.encode_example(row))
        assert row_to_sample(decoded).equals(sample)


def test_instance_ids_above_255_survive_16_bit_png():
    labels = np.arange(1, 40 * 40 + 1, dtype=np.int32).reshape(40, 40)  # 1600 instances: ids need 16 bits
    nuclei = Nuclei.from_instance_map("pannuke", labels, np.ones(1601, np.int64))
    sample = Sample(np.zeros((40, 40, 3), np.uint8), Provenance("test"), nuclei=nuclei)
    back = row_to_sample(sample_to_row(sample))
    assert back.nuclei.instances.dtype == np.uint16 and back.nuclei.instances.max() == 1600
    assert back.equals(sample)


def test_write_then_load_dataset_keeps_features_and_samples(tmp_path):
    samples = varied_samples()
    summary = write_dataset(samples, tmp_path / "ds", CARD, "camelyon16", "pannuke", max_shard_bytes=20_000)
    assert summary.split_sizes == {"train": len(samples)}
    shards = shard_paths(tmp_path / "ds")
    assert len(shards) > 1 and all(p.name.endswith(f"-of-{len(shards):05d}.parquet") for p in shards)
    assert count_samples(tmp_path / "ds") == len(samples)

    loaded = datasets.load_dataset(str(tmp_path / "ds"), split="train")
    assert loaded.features == features_for("camelyon16", "pannuke")
    assert loaded.features["nuclei"].feature["class_id"].names[1] == "neoplastic"
    assert [row_to_sample(r).equals(s) for r, s in zip(loaded, samples, strict=False)] == [True] * len(samples)
    assert all(a.equals(b) for a, b in zip(iter_samples(tmp_path / "ds"), samples, strict=False))
    meta = read_metadata(tmp_path / "ds")
    assert meta["histosynth"]["tissue_schema"] == "camelyon16" and meta["license"] == "cc0-1.0"


def test_multiple_splits(tmp_path):
    write_dataset({"train": varied_samples(4), "test": varied_samples(2)}, tmp_path / "ds", CARD)
    assert count_samples(tmp_path / "ds", "test") == 3 and count_samples(tmp_path / "ds", "train") == 5
    loaded = datasets.load_dataset(str(tmp_path / "ds"))
    assert set(loaded) == {"train", "test"} and len(loaded["test"]) == 3
    with pytest.raises(DatasetFormatError, match="no shards for split 'val'"):
        list(iter_samples(tmp_path / "ds", "val"))


def test_schema_is_inferred_and_mixing_schemas_is_refused(tmp_path):
    summary = write_dataset(varied_samples(3), tmp_path / "a", CARD)
    assert (summary.tissue_schema, summary.nuclei_schema) == ("camelyon16", "pannuke")
    other = labeled_sample(9)
    other = Sample(other.image, other.provenance, other.tissue, "simulator-tissue", other.nuclei)
    with pytest.raises(SampleValidationError, match="uses tissue schema 'simulator-tissue' but the dataset uses 'camelyon16'"):
        write_dataset([labeled_sample(0), other], tmp_path / "b", CARD)
    assert not (tmp_path / "b").exists()


def test_unlabeled_dataset_has_null_labels(tmp_path):
    write_dataset([labeled_sample(0, nuclei=False, tissue=False)], tmp_path / "ds", CARD)
    row = datasets.load_dataset(str(tmp_path / "ds"), split="train")[0]
    assert row["tissue"] is None and row["nuclei"] is None and row["nuclei_instances"] is None


def test_corrupt_files_give_errors_naming_the_file(tmp_path):
    write_dataset(varied_samples(3), tmp_path / "ds", CARD)
    shard = shard_paths(tmp_path / "ds")[0]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DatasetFormatError, match=str(shard.name)):
        list(iter_samples(tmp_path / "ds"))
    (tmp_path / "ds" / "README.md").write_text("---\nlicense: [unclosed\n---\n")
    with pytest.raises(DatasetFormatError, match="README.md: invalid YAML"):
        read_metadata(tmp_path / "ds")
    with pytest.raises(DatasetFormatError, match="not a histosynth dataset"):
        read_metadata(tmp_path / "missing")


def test_corrupt_image_cell_names_the_row():
    row = sample_to_row(labeled_sample(1))
    row["tissue"] = {"bytes": row["tissue"]["bytes"][:30], "path": None}
    with pytest.raises(SampleValidationError, match=r"row test:slide-1:x=32,y=7 seed=1|tissue: cannot decode"):
        row_to_sample(row)


def test_parquet_carries_datasets_feature_metadata(tmp_path):
    write_dataset(varied_samples(2), tmp_path / "ds", CARD)
    schema = pq.read_schema(shard_paths(tmp_path / "ds")[0])
    assert b"huggingface" in schema.metadata
    assert datasets.Features.from_arrow_schema(schema) == features_for("camelyon16", "pannuke")


def test_a_corrupt_row_names_the_shard_and_its_row(tmp_path):
    write_dataset(varied_samples(4), tmp_path / "ds", CARD, max_shard_bytes=1)  # one row per shard
    shard = shard_paths(tmp_path / "ds")[2]
    table = pq.read_table(shard)
    rows = table.to_pylist()
    rows[0]["image"] = {"bytes": rows[0]["image"]["bytes"][:30], "path": None}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), shard)
    with pytest.raises(DatasetFormatError, match=f"^{shard}: row 0: row .*image: cannot decode"):
        list(iter_samples(tmp_path / "ds"))


def test_a_truncated_shard_is_named_when_counting(tmp_path):
    write_dataset(varied_samples(2), tmp_path / "ds", CARD)
    shard = shard_paths(tmp_path / "ds")[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DatasetFormatError, match=f"^{shard}: unreadable parquet shard"):
        count_samples(tmp_path / "ds")


def _write_simulated(folder, seed, how):
    """Four simulator samples written to `folder` the way `data build` (write_dataset) or `generate`
    (write_shard + publish_shards) writes them; returns the samples."""
    samples = list(build_source("simulator", n=4, size=32, seed=seed))
    if how == "write_dataset":
        write_dataset(samples, folder, CARD)
    else:
        shard = folder.parent / f".chunk-{seed}.parquet"
        summary = write_shard(samples, shard)
        publish_shards({"train": [shard]}, folder, CARD, summary)
        shard.unlink()
    return samples


@pytest.mark.parametrize("how", ["write_dataset", "publish_shards"])
def test_same_named_folders_load_as_themselves_through_one_datasets_cache(tmp_path, monkeypatch, how):
    """Folders with the same name, features and split sizes but other rows must not share a datasets cache
    entry, by relative or absolute path, nor a folder rewritten in place with other rows."""
    cache = str(tmp_path / "hf-cache")  # one cache for every load, as the default cache is
    monkeypatch.chdir(tmp_path)
    expected = {"a/g": _write_simulated(tmp_path / "a" / "g", 1, how),
                "b/g": _write_simulated(tmp_path / "b" / "g", 2, how)}
    assert card_fingerprint((tmp_path / "a/g/README.md").read_text()) == content_fingerprint(tmp_path / "a/g")

    def loads_as(path, samples):
        rows = datasets.load_dataset(path, split="train", cache_dir=cache)
        return [row_to_sample(r).equals(s) for r, s in zip(rows, samples, strict=True)] == [True] * len(samples)

    for name in ("a/g", "b/g"):
        assert loads_as(name, expected[name]), f"{name} by relative path"
        assert loads_as(str(tmp_path / name), expected[name]), f"{name} by absolute path"
    expected["a/g"] = _write_simulated(tmp_path / "a" / "g", 3, how)  # rewritten in place
    assert loads_as("a/g", expected["a/g"]) and loads_as(str(tmp_path / "b/g"), expected["b/g"])
