"""panda reader on slide + mask pyramids (labels in the red channel) and a train.csv, written with tifffile."""

import numpy as np
import pytest
from format_writers import tissue_slide, write_panda, write_pyramid

from histosynth.sources import build_source
from histosynth.sources.folder import FormatError
from histosynth.sources.panda import PandaSource

SIZE = 128


def labels_for(provider: str) -> np.ndarray:
    """Vertical bands of every id of the provider's schema over the tissue (x >= 32), 0 on the glass."""
    top = 5 if provider == "radboud" else 2
    labels = np.zeros((SIZE, SIZE), np.uint8)
    for i, x in enumerate(range(32, SIZE, 16)):
        labels[:, x : x + 16] = 1 + i % top
    return labels


def make(root, rng, entries=(("r1", "radboud"), ("k1", "karolinska"))):
    out = {}
    for image_id, provider in entries:
        image = tissue_slide(SIZE, SIZE, (32, 0, SIZE, SIZE), seed=len(out))
        labels = labels_for(provider)
        write_panda(root, image_id, image, labels, provider, rng)
        out[image_id] = (image, labels)
    return out


def test_red_channel_labels_with_the_providers_schema(tmp_path):
    truth = make(tmp_path, np.random.default_rng(0))
    samples = list(PandaSource(tmp_path, size=16, mpp=1.0, provider="radboud"))
    samples += list(PandaSource(tmp_path, size=16, mpp=1.0, provider="karolinska"))
    assert {s.provenance.slide_id for s in samples} == {"k1", "r1"}
    for sample in samples:
        image, labels = truth[sample.provenance.slide_id]
        x, y = sample.provenance.x, sample.provenance.y
        assert (sample.provenance.level, sample.provenance.mpp) == (1, 1.0)
        assert np.array_equal(sample.image, image[y : y + 32 : 2, x : x + 32 : 2])
        assert np.array_equal(sample.tissue, labels[y : y + 32 : 2, x : x + 32 : 2]), (sample.provenance.slide_id, x, y)
        expected_schema = "panda-radboud" if sample.provenance.slide_id == "r1" else "panda-karolinska"
        assert sample.tissue_schema == expected_schema
    radboud = np.unique(np.concatenate([s.tissue.ravel() for s in samples if s.provenance.slide_id == "r1"]))
    assert radboud.tolist() == [1, 2, 3, 4, 5]  # glass tiles (x < 32) dropped by min_tissue


def test_provider_filter_fixes_the_schema_and_slides_without_masks(tmp_path):
    rng = np.random.default_rng(1)
    make(tmp_path, rng)
    write_panda(tmp_path, "k2", tissue_slide(SIZE, SIZE, (0, 0, SIZE, SIZE)), None, "karolinska", rng)
    source = build_source("panda", path=tmp_path, provider="karolinska", size=32, mpp=0.5, n=None)
    assert source.meta.tissue_schema == "panda-karolinska" and source.meta.license == "CC-BY-NC-SA-4.0"
    samples = list(source)
    assert {s.provenance.slide_id for s in samples} == {"k1", "k2"}
    assert all(s.tissue is None for s in samples if s.provenance.slide_id == "k2")
    assert all(s.tissue_schema == "panda-karolinska" for s in samples if s.provenance.slide_id == "k1")
    with pytest.raises(ValueError, match=r"holds slides of karolinska and radboud, whose label schemas differ; pass provider="):
        PandaSource(tmp_path)


def test_resampled_masks_use_nearest_neighbor(tmp_path):
    truth = make(tmp_path, np.random.default_rng(2), entries=(("k1", "karolinska"),))
    for sample in PandaSource(tmp_path, size=24, mpp=0.8, min_tissue=0.0):
        assert sample.provenance.mpp == 0.8
        assert set(np.unique(sample.tissue).tolist()) <= set(np.unique(truth["k1"][1]).tolist())


def test_labels_outside_the_schema_name_the_mask(tmp_path):
    rng = np.random.default_rng(3)
    image = tissue_slide(SIZE, SIZE, (0, 0, SIZE, SIZE))
    labels = np.ones((SIZE, SIZE), np.uint8)
    labels[40:50, 40:50] = 3
    write_panda(tmp_path, "k9", image, labels, "karolinska", rng)
    assert PandaSource(tmp_path).meta.tissue_schema == "panda-karolinska"  # one provider present: chosen without asking
    with pytest.raises(FormatError, match=r"k9_mask\.tiff: red-channel values \[3\] in the tile at x=32, y=32 are not ids of schema "
                                          r"'panda-karolinska' \(valid: \[0, 1, 2\]\)"):
        list(PandaSource(tmp_path, size=32, mpp=0.5))


def test_csv_and_mask_problems_name_the_file(tmp_path):
    rng = np.random.default_rng(4)
    make(tmp_path, rng)
    csv = tmp_path / "train.csv"
    text = csv.read_text()
    csv.write_text(text.replace("data_provider", "provider"))
    with pytest.raises(FormatError, match=r"train\.csv: missing column\(s\) \['data_provider'\]"):
        PandaSource(tmp_path)
    csv.write_text(text.replace("karolinska", "utrecht"))
    with pytest.raises(FormatError, match=r"train\.csv: line 3: unknown data_provider 'utrecht'"):
        PandaSource(tmp_path)
    csv.write_text(text.replace("k1,", "k7,"))
    with pytest.raises(FormatError, match=r"train\.csv: no row for image 'k1'"):
        PandaSource(tmp_path)
    csv.write_text(text)
    write_pyramid(tmp_path / "train_label_masks" / "k1_mask.tiff", np.zeros((SIZE // 2, SIZE, 3), np.uint8), mpp=0.5)
    with pytest.raises(FormatError, match=r"k1_mask\.tiff: mask is 128x64 but slide k1\.tiff is 128x128"):
        list(PandaSource(tmp_path, provider="karolinska"))
    with pytest.raises(ValueError, match="provider must be one of"):
        PandaSource(tmp_path, provider="utrecht")
