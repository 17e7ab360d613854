"""pannuke reader on .npy folds written like the release (float64 images and masks)."""

import numpy as np
import pytest
from format_writers import write_pannuke_fold

from histosynth.classes import get_schema
from histosynth.sources import build_source
from histosynth.sources.folder import FormatError
from histosynth.sources.pannuke import PanNukeSource

H = W = 32


def fold_arrays(n: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, H, W, 3)).astype(np.float64)
    masks = np.zeros((n, H, W, 6), dtype=np.float64)
    masks[..., 5] = 1.0  # background channel
    # patch 0: neoplastic instance 1 (channel 0), inflammatory instance 1 (channel 1: same id, different nucleus),
    # epithelial instance 4 (channel 4)
    masks[0, 2:6, 3:9, 0] = 1
    masks[0, 10:13, 20:22, 1] = 1
    masks[0, 25:31, 0:2, 4] = 4
    # patch 1: nothing
    return images, masks


def test_channels_map_to_classes_with_exact_centroids(tmp_path):
    images, masks = fold_arrays()
    write_pannuke_fold(tmp_path, images, masks, ["Breast", "Colon"])
    samples = list(PanNukeSource(tmp_path))
    assert len(samples) == 2
    first = samples[0]
    assert np.array_equal(first.image, images[0].astype(np.uint8))
    schema = get_schema("pannuke")
    assert [schema[c].name for c in first.nuclei.class_ids] == ["neoplastic", "inflammatory", "epithelial"]
    assert first.nuclei.class_ids.tolist() == [1, 2, 5]
    assert first.nuclei.centroids.tolist() == [[5.5, 3.5], [20.5, 11.0], [0.5, 27.5]]
    expected = np.zeros((H, W), np.uint16)
    expected[2:6, 3:9], expected[10:13, 20:22], expected[25:31, 0:2] = 1, 2, 3
    assert np.array_equal(first.nuclei.instances, expected)
    assert first.tissue is None
    assert first.provenance.slide_id == "Breast/" + tmp_path.name + "/0" and first.provenance.mpp == 0.25
    assert len(samples[1].nuclei) == 0 and samples[1].provenance.slide_id.startswith("Colon/")


def test_overlapping_channels_keep_the_lowest(tmp_path):
    images, masks = fold_arrays(1)
    masks[0, 4:8, 3:9, 3] = 2  # a dead nucleus overlapping the neoplastic one on rows 4..5
    write_pannuke_fold(tmp_path, images, masks, ["Liver"])
    nuclei = next(iter(PanNukeSource(tmp_path))).nuclei
    assert nuclei.class_ids.tolist() == [1, 2, 4, 5]
    assert (nuclei.instances[2:6, 3:9] == 1).all() and (nuclei.instances[6:8, 3:9] == 3).all()


def test_nested_release_layout_with_several_folds(tmp_path):
    for k in (1, 2):
        images, masks = fold_arrays(k, seed=k)
        write_pannuke_fold(tmp_path, images, masks, ["Kidney"] * k, nested=str(k))
    source = build_source("pannuke", path=tmp_path, n=None)
    assert len(source) == 3
    assert [s.provenance.slide_id for s in source] == ["Kidney/fold1/0", "Kidney/fold2/0", "Kidney/fold2/1"]
    assert len(PanNukeSource(tmp_path, n=2)) == 2 and len(list(PanNukeSource(tmp_path, n=2))) == 2


def test_uint8_images_are_accepted(tmp_path):
    images, masks = fold_arrays(1)
    write_pannuke_fold(tmp_path, images.astype(np.uint8), masks.astype(np.int32), ["Skin"])
    assert np.array_equal(next(iter(PanNukeSource(tmp_path))).image, images[0].astype(np.uint8))


def _expect(tmp_path, match, **arrays):
    images, masks = fold_arrays()
    paths = write_pannuke_fold(tmp_path, arrays.get("images", images), arrays.get("masks", masks), arrays.get("types", ["A", "B"]))
    with pytest.raises(FormatError, match=match):
        list(PanNukeSource(tmp_path))
    return paths


def test_truncated_npy_names_the_file(tmp_path):
    images, masks = fold_arrays()
    paths = write_pannuke_fold(tmp_path, images, masks, ["A", "B"])
    data = paths["masks.npy"].read_bytes()
    paths["masks.npy"].write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match=r"masks\.npy: not a readable \.npy array, truncated"):
        list(PanNukeSource(tmp_path))


def test_wrong_shapes_and_values_name_the_file(tmp_path):
    images, masks = fold_arrays()
    _expect(tmp_path / "a", r"masks\.npy: expected shape \(N, H, W, 6\)", masks=masks[..., :5])
    _expect(tmp_path / "b", r"images\.npy: expected shape \(N, H, W, 3\)", images=images[..., :2])
    _expect(tmp_path / "c", r"types\.npy: expected one tissue name per patch", types=["A"])
    bad = images.copy()
    bad[1, 0, 0, 0] = 300.0
    _expect(tmp_path / "d", r"images\.npy: patch 1: pixel values 0\.\.300 lie outside 0\.\.255", images=bad)
    frac = masks.copy()
    frac[0, 0, 0, 2] = 0.5
    _expect(tmp_path / "e", r"masks\.npy: patch 0, channel 2: instance ids must be whole numbers", masks=frac)
    _expect(tmp_path / "f", r"masks\.npy: shape .* does not match images\.npy", masks=masks[:, :16])


def test_missing_files_and_pickles(tmp_path):
    images, masks = fold_arrays()
    paths = write_pannuke_fold(tmp_path, images, masks, ["A", "B"])
    np.save(paths["types.npy"], np.array(["A", None], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match=r"types\.npy: holds pickled Python objects"):
        list(PanNukeSource(tmp_path))
    paths["types.npy"].unlink()
    with pytest.raises(FormatError, match=r"lacks \['types\.npy'\]"):
        PanNukeSource(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FormatError, match="empty: no PanNuke fold found"):
        PanNukeSource(empty)
    with pytest.raises(ValueError, match="does not resample"):
        PanNukeSource(tmp_path, mpp=0.5)


def test_images_on_a_0_to_1_scale_are_refused_not_rounded_to_black(tmp_path):
    images, masks = fold_arrays()
    paths = _expect(tmp_path, r"images\.npy: patch 0: pixel values 0\.\.1 lie within 0\.\.1; PanNuke images hold 0\.\.255",
                    images=images / 255.0)
    assert paths["images.npy"].is_file()
    # an all-black uint8 patch is refused too: rounding a 0..1 scale to uint8 gives exactly that
    _expect(tmp_path / "u8", r"images\.npy: patch 0: pixel values 0\.\.0 lie within 0\.\.1", images=np.zeros_like(images, dtype=np.uint8))


def binary_class_masks():
    """Patch 0: three separate inflammatory nuclei and two epithelial ones, written as binary per-class channels."""
    images, masks = fold_arrays(1)
    masks[0, ..., :5] = 0
    for r, c in ((2, 2), (2, 20), (20, 10)):
        masks[0, r : r + 4, c : c + 4, 1] = 1
    for r, c in ((12, 2), (28, 28)):
        masks[0, r : r + 3, c : c + 3, 4] = 1
    return images, masks


def test_binary_per_class_masks_are_refused(tmp_path):
    images, masks = binary_class_masks()
    write_pannuke_fold(tmp_path, images, masks, ["Colon"])
    with pytest.raises(FormatError, match=r"masks\.npy: patch 0, channel 1: instance id\(s\) \[1\] each cover several "
                                          r"separate blobs.*--label-components"):
        list(PanNukeSource(tmp_path))


def test_label_components_makes_each_blob_a_nucleus(tmp_path):
    images, masks = binary_class_masks()
    write_pannuke_fold(tmp_path, images, masks, ["Colon"])
    nuclei = next(iter(build_source("pannuke", path=tmp_path, label_components=True))).nuclei
    assert nuclei.class_ids.tolist() == [2, 2, 2, 5, 5]
    assert nuclei.centroids.tolist() == [[3.5, 3.5], [21.5, 3.5], [11.5, 21.5], [3.0, 13.0], [29.0, 29.0]]  # (x, y), raster order


def test_touching_ids_and_diagonal_pixels_are_one_nucleus_each(tmp_path):
    images, masks = fold_arrays(1)
    masks[0, 16:18, 16:18, 2] = 7
    masks[0, 18, 18, 2] = 7  # touches the block only at a corner: still one 8-connected nucleus
    masks[0, 16:18, 19:21, 2] = 8  # a second id touching nothing
    write_pannuke_fold(tmp_path, images, masks, ["Lung"])
    nuclei = next(iter(PanNukeSource(tmp_path))).nuclei
    assert nuclei.class_ids.tolist() == [1, 2, 3, 3, 5]
    with_option = next(iter(PanNukeSource(tmp_path, label_components=True))).nuclei
    assert with_option.equals(nuclei)


def test_data_build_refuses_binary_masks_and_takes_label_components(tmp_path, capsys):
    from histosynth.cli import main
    from histosynth.disk import iter_samples

    images, masks = binary_class_masks()
    write_pannuke_fold(tmp_path / "fold", images, masks, ["Colon"])
    base = ["data", "build", "--source", "pannuke", "--path", str(tmp_path / "fold"), "--out", str(tmp_path / "out")]
    assert main(base) == 2
    err = capsys.readouterr().err.splitlines()[-1]  # after tqdm's progress line
    assert err.startswith("error: ") and "masks.npy: patch 0, channel 1" in err and "--label-components" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold"]
    assert main([*base, "--label-components"]) == 0
    assert len(next(iter_samples(tmp_path / "out")).nuclei) == 5
    assert main(["data", "build", "--source", "simulator", "--n", "1", "--label-components", "--out", str(tmp_path / "s")]) == 2
    assert "does not take --label-components" in capsys.readouterr().err
