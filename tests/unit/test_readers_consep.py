"""consep reader on Images/*.png + Labels/*.mat written like the release (doubles)."""

import numpy as np
import pytest
from format_writers import write_consep, write_png

from histosynth.sources import build_source
from histosynth.sources.consep import ConsepSource
from histosynth.sources.folder import FormatError

SIZE = 80


def labeled(seed: int = 0):
    image = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    inst = np.zeros((SIZE, SIZE), np.int64)
    inst[2:6, 2:8] = 1  # type 1 other
    inst[10:14, 40:44] = 2  # type 4 malignant epithelial
    inst[60:64, 70:76] = 3  # type 6 muscle
    inst[28:36, 30:34] = 4  # type 3 healthy epithelial, cut by the tile border at row 32 (tiles at 0, 32, 48)
    return image, inst, [1, 4, 6, 3]


def test_seven_classes_whole_images(tmp_path):
    image, inst, types = labeled()
    write_consep(tmp_path / "Train", "train_1", image, inst, types)
    write_png(tmp_path / "Train" / "Overlay" / "train_1.png", np.zeros((5, 5, 3), np.uint8))  # never read
    (sample,) = list(ConsepSource(tmp_path, size=None))
    assert np.array_equal(sample.image, image)
    assert sample.nuclei.schema == "consep" and sample.nuclei.class_ids.tolist() == [1, 4, 6, 3]
    assert sample.nuclei.centroids.tolist() == [[4.5, 3.5], [41.5, 11.5], [72.5, 61.5], [31.5, 31.5]]
    assert np.array_equal(sample.nuclei.instances, inst.astype(np.uint16))


def test_merged_four_classes_and_covering_tiles(tmp_path):
    image, inst, types = labeled()
    write_consep(tmp_path / "Test", "test_1", image, inst, types)
    source = build_source("consep", path=tmp_path, size=32, classes="consep-4")
    assert source.meta.nuclei_schema == "consep-4"
    samples = list(source)
    assert len(source) == len(samples) == 9
    assert sorted({(s.provenance.x, s.provenance.y) for s in samples}) == [(x, y) for x in (0, 32, 48) for y in (0, 32, 48)]
    by_origin = {(s.provenance.x, s.provenance.y): s for s in samples}
    assert by_origin[(0, 0)].nuclei.class_ids.tolist() == [1, 3]  # other; healthy epithelial 3 -> epithelial 3 (rows 28..31)
    assert by_origin[(32, 0)].nuclei.class_ids.tolist() == [3, 3]  # malignant 4 and (cut) healthy 3 -> epithelial 3
    assert by_origin[(48, 48)].nuclei.class_ids.tolist() == [4]  # muscle 6 -> spindle-shaped 4
    assert by_origin[(48, 48)].nuclei.centroids.tolist() == [[24.5, 13.5]]
    cut = by_origin[(0, 32)]  # the healthy epithelial nucleus: rows 32..35, columns 30..31 only
    assert cut.nuclei.class_ids.tolist() == [3] and cut.nuclei.centroids.tolist() == [[30.5, 1.5]]
    assert all(s.nuclei.schema == "consep-4" for s in samples)


@pytest.mark.parametrize("override,match", [
    ({"inst_type": np.array([[1.0], [8.0], [6.0], [3.0]])}, r"train_1\.mat: inst_type: values \[8\] outside the CoNSeP classes 1\.\.7"),
    ({"inst_type": np.array([[1.0], [4.0], [6.0]]), "inst_centroid": np.zeros((3, 2))}, r"train_1\.mat: inst_map has instance value 4 but inst_type lists only 3"),
    ({"inst_centroid": np.zeros((4, 3))}, r"train_1\.mat: inst_centroid: expected shape \(4, 2\)"),
    ({"type_map": np.zeros((3, 3))}, r"train_1\.mat: type_map shape \(3, 3\) differs"),
    ({"inst_map": np.full((SIZE, SIZE), 0.5)}, r"train_1\.mat: inst_map: expected whole numbers"),
])
def test_malformed_labels_name_the_file(tmp_path, override, match):
    image, inst, types = labeled()
    write_consep(tmp_path / "Train", "train_1", image, inst, types, override)
    with pytest.raises(FormatError, match=match):
        list(ConsepSource(tmp_path))


def test_missing_key_image_and_bad_options(tmp_path):
    from scipy.io import loadmat, savemat

    image, inst, types = labeled()
    label = write_consep(tmp_path / "Train", "train_1", image, inst, types)
    fields = {k: v for k, v in loadmat(label).items() if not k.startswith("__") and k != "inst_map"}
    savemat(label, fields)
    with pytest.raises(FormatError, match=r"train_1\.mat: missing key\(s\) \['inst_map'\]"):
        list(ConsepSource(tmp_path))
    (tmp_path / "Train" / "Images" / "train_1.png").unlink()
    with pytest.raises(FormatError, match=r"train_1\.mat: no matching image .*train_1\.png"):
        ConsepSource(tmp_path)
    with pytest.raises(ValueError, match="classes must be one of"):
        ConsepSource(tmp_path, classes="consep-5")
