"""lizard reader on PNG + .mat files written with scipy.io.savemat like the release."""

import numpy as np
import pytest
from format_writers import lizard_fields, write_lizard

from histosynth.sources.folder import FormatError
from histosynth.sources.lizard import LizardSource

H, W = 40, 48


def instance_map() -> tuple[np.ndarray, dict[int, int]]:
    """Three nuclei with non-consecutive values and asymmetric shapes (x and y extents differ)."""
    inst = np.zeros((H, W), np.int32)
    inst[2:5, 30:40] = 7  # wide: x 30..39, y 2..4
    inst[20:32, 4:7] = 3  # tall
    inst[36:40, 44:48] = 12  # at the corner
    return inst, {7: 5, 3: 2, 12: 6}  # eosinophil, epithelial, connective


@pytest.fixture()
def image():
    return np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_classes_come_through_id_and_centroids_are_exact(tmp_path, image):
    inst, classes = instance_map()
    fields = lizard_fields(inst, classes)
    order = [2, 0, 1]  # rows in a different order than the instance values: the reader must go through `id`
    fields = {k: (v[order] if k != "inst_map" else v) for k, v in fields.items()}
    write_lizard(tmp_path, "consep_1", image, fields)
    (sample,) = list(LizardSource(tmp_path, size=None))
    assert np.array_equal(sample.image, image)
    # relabeled in order of the original value: 3 -> 1, 7 -> 2, 12 -> 3
    assert sample.nuclei.class_ids.tolist() == [2, 5, 6]
    assert sample.nuclei.centroids.tolist() == [[5.0, 25.5], [34.5, 3.0], [45.5, 37.5]]
    assert np.array_equal(sample.nuclei.instances, np.select([inst == 3, inst == 7, inst == 12], [1, 2, 3], 0).astype(np.uint16))
    assert (sample.provenance.slide_id, sample.provenance.mpp) == ("consep_1", 0.5)


def test_tiles_recompute_centroids_of_cut_nuclei(tmp_path, image):
    inst, classes = instance_map()
    write_lizard(tmp_path, "crag_2", image, lizard_fields(inst, classes))
    source = LizardSource(tmp_path, size=24)
    samples = list(source)
    assert len(source) == len(samples) == 4  # tops 0, 16; lefts 0, 24
    assert [(s.provenance.x, s.provenance.y) for s in samples] == [(0, 0), (24, 0), (0, 16), (24, 16)]
    top_right = samples[1]  # columns 24..47, rows 0..23: the wide nucleus whole (x 30..39 -> 6..15)
    assert top_right.nuclei.centroids.tolist() == [[10.5, 3.0]] and top_right.nuclei.class_ids.tolist() == [5]
    bottom_left = samples[2]  # rows 16..39: the tall nucleus rows 20..31 -> 4..15
    assert bottom_left.nuclei.centroids.tolist() == [[5.0, 9.5]]
    assert np.array_equal(samples[3].image, image[16:40, 24:48])


def _write(tmp_path, image, **changes):
    inst, classes = instance_map()
    fields = lizard_fields(inst, classes) | changes
    for key in [k for k, v in changes.items() if v is None]:
        del fields[key]
    _, label = write_lizard(tmp_path, "img", image, fields)
    return label


@pytest.mark.parametrize("changes,match", [
    ({"class": None}, r"img\.mat: missing key\(s\) \['class'\]"),
    ({"centroid": np.zeros((3, 3))}, r"img\.mat: centroid: expected shape \(3, 2\) ordered \(x, y\)"),
    ({"class": np.array([[2], [9], [1]])}, r"img\.mat: class: values \[9\] outside the Lizard classes 1\.\.6"),
    ({"id": np.array([[3], [7], [13]])}, r"img\.mat: inst_map values \[12\] are not listed in id"),
    ({"inst_map": np.zeros((H, W, 2))}, r"img\.mat: inst_map: expected 2 dimensions"),
])
def test_malformed_labels_name_the_file(tmp_path, image, changes, match):
    _write(tmp_path, image, **changes)
    with pytest.raises(FormatError, match=match):
        list(LizardSource(tmp_path, size=None))


def test_centroids_in_y_x_order_are_caught(tmp_path, image):
    inst, classes = instance_map()
    fields = lizard_fields(inst, classes)
    _write(tmp_path, image, centroid=fields["centroid"][:, ::-1].copy())
    with pytest.raises(FormatError, match=r"img\.mat: centroid of instance 3 is \(x, y\) = \[25\.5, 5\.0\] in the file but \[5\.0, 25\.5\]"):
        list(LizardSource(tmp_path))


def test_bbox_in_x_y_order_is_caught(tmp_path, image):
    inst, classes = instance_map()
    bbox = lizard_fields(inst, classes)["bbox"]
    _write(tmp_path, image, bbox=bbox[:, [2, 3, 0, 1]].copy())  # (x1, x2, y1, y2)
    with pytest.raises(FormatError, match=r"img\.mat: bbox of instance 3 is \(y1, y2, x1, x2\)"):
        list(LizardSource(tmp_path))


def test_half_pixel_centroid_offsets_are_tolerated(tmp_path, image):
    inst, classes = instance_map()
    fields = lizard_fields(inst, classes)
    _write(tmp_path, image, centroid=fields["centroid"] + 0.9)
    assert len(list(LizardSource(tmp_path, size=None))) == 1


def test_not_a_mat_file_and_missing_images(tmp_path, image):
    label = _write(tmp_path, image)
    label.write_bytes(b"MATLAB 5.0 MAT-file garbage" + bytes(50))
    with pytest.raises(FormatError, match=r"img\.mat: cannot read the \.mat file"):
        list(LizardSource(tmp_path))
    (tmp_path / "Lizard_Images1" / "img.png").unlink()
    with pytest.raises(FormatError, match=r"img\.mat: no image img\.png"):
        LizardSource(tmp_path)


def test_image_and_map_sizes_must_agree(tmp_path, image):
    _write(tmp_path, image[:, :40])
    with pytest.raises(FormatError, match=r"img\.mat: instance map shape \(40, 48\) does not match image img\.png \(40, 40\)"):
        list(LizardSource(tmp_path))


def test_images_smaller_than_the_default_tile_give_a_clear_error(tmp_path, image, capsys):
    from histosynth.cli import main

    inst, classes = instance_map()
    write_lizard(tmp_path / "lizard", "a", image, lizard_fields(inst, classes))
    write_lizard(tmp_path / "lizard", "b", image, lizard_fields(inst, classes))
    assert main(["data", "build", "--source", "lizard", "--path", str(tmp_path / "lizard"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err == f"error: --path {tmp_path / 'lizard'}: 0 samples from source 'lizard': 2 image(s) smaller than the 256 px tile size (--size)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lizard"]
