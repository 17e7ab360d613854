"""HoVer-Net targets and post-processing: hand-built targets, and perfect NP/HV maps from known instances come back
as the same instances (PQ from MONAI, an independent implementation), with majority-vote types and moment centroids."""

import numpy as np
import pytest
import torch
from monai.metrics import compute_panoptic_quality
from scipy import ndimage

from histosynth.benchmark.downstream.hover_post import _sobel, hover_postprocess, min_marker_size, sobel_size
from histosynth.benchmark.downstream.hover_targets import hover_targets
from histosynth.errors import InputError

# MONAI adds smooth_numerator=1e-6 to each ratio's numerator, so a perfect match reads 1 within 1e-5
PERFECT = 1 - 1e-5


def discs(shape: tuple[int, int], centers: list[tuple[float, float]], radius: float) -> np.ndarray:
    """Instance map of discs at (x, y) centers numbered 1..n; where discs overlap a pixel goes to the nearer center."""
    rows, cols = np.indices(shape)
    labels = np.zeros(shape, dtype=np.uint16)
    nearest = np.full(shape, np.inf)
    for k, (x, y) in enumerate(centers, start=1):
        dist = np.hypot(cols - x, rows - y)
        mine = (dist <= radius) & (dist < nearest)
        labels[mine], nearest[mine] = k, dist[mine]
    return labels


def pq(pred: np.ndarray, true: np.ndarray) -> float:
    return float(
        compute_panoptic_quality(torch.from_numpy(pred.astype(np.int64)), torch.from_numpy(true.astype(np.int64)))
    )


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering: the pairs (a, b) over all pixels form a bijection of ids."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def perfect(labels: np.ndarray, mpp: float = 0.25, types: np.ndarray | None = None, nc: np.ndarray | None = None):
    t = hover_targets(labels, types)
    return t, hover_postprocess(t.np.astype(np.float32), t.hv, nc, mpp)


# --- targets -------------------------------------------------------------------------------------------------------


def test_targets_on_a_disc_are_zero_at_the_center_and_one_at_the_extremes():
    labels = discs((41, 41), [(20, 18)], 9)
    t = hover_targets(labels, np.array([3]))
    x_map, y_map = t.hv
    assert t.hv.dtype == np.float32 and t.hv.shape == (2, 41, 41)
    assert x_map[18, 20] == 0 and y_map[18, 20] == 0  # the center of mass
    assert x_map[18, 11] == -1 and x_map[18, 29] == 1  # leftmost / rightmost pixels of the disc
    assert y_map[9, 20] == -1 and y_map[27, 20] == 1  # top / bottom (rows grow downwards)
    rows, cols = np.nonzero(labels)
    assert np.array_equal(np.sign(x_map[rows, cols]), np.sign(cols - 20))
    assert np.array_equal(np.sign(y_map[rows, cols]), np.sign(rows - 18))
    assert np.abs(t.hv).max() == 1 and not t.hv[:, labels == 0].any()
    assert np.array_equal(t.np, (labels > 0).astype(np.uint8))
    assert np.array_equal(t.nc, np.where(labels > 0, 3, 0))


def test_targets_scale_each_side_separately_on_a_hand_built_shape():
    # pixels (row, col): (0,0) (0,1) (0,2) (1,0): center of mass x = 3/4, y = 1/4
    labels = np.zeros((3, 4), dtype=np.uint16)
    labels[0, :3] = 1
    labels[1, 0] = 1
    x_map, y_map = hover_targets(labels).hv
    # x distances -0.75, 0.25, 1.25, -0.75: negatives / 0.75, positives / 1.25
    np.testing.assert_allclose(x_map[0, :3], [-1, 0.2, 1], rtol=1e-6)
    assert x_map[1, 0] == -1
    # y distances -0.25 (row 0) and 0.75 (row 1)
    assert (y_map[0, :3] == -1).all() and y_map[1, 0] == 1


def test_targets_use_each_instances_own_center_and_extremes():
    labels = discs((60, 90), [(20, 30), (65.5, 30)], 12)
    labels[labels == 2] = 0
    labels[10:50, 60:80] = 2  # a 20 x 40 rectangle: center (69.5, 29.5), half-sizes 9.5 and 19.5
    x_map, y_map = hover_targets(labels).hv
    center = ndimage.center_of_mass(labels == 2)  # independent center of mass (row, col)
    np.testing.assert_allclose(center, (29.5, 69.5))
    np.testing.assert_allclose(x_map[30, 60:80], (np.arange(60, 80) - 69.5) / 9.5, rtol=1e-6)
    np.testing.assert_allclose(y_map[10:50, 70], (np.arange(10, 50) - 29.5) / 19.5, rtol=1e-6)
    first = labels == 1
    assert x_map[first].min() == -1 and x_map[first].max() == 1


def test_targets_without_types_mark_every_nucleus_type_one_and_empty_maps_are_zero():
    labels = discs((30, 30), [(8, 8), (20, 20)], 4)
    assert np.array_equal(hover_targets(labels).nc, (labels > 0).astype(np.uint8))
    empty = hover_targets(np.zeros((16, 16), dtype=np.uint16))
    assert not empty.np.any() and not empty.hv.any() and not empty.nc.any()


@pytest.mark.parametrize(
    ("labels", "types", "message"),
    [
        (np.zeros((4, 4), dtype=np.float32), None, "2-D integer"),
        (np.array([[1, 3], [0, 0]], dtype=np.uint16), None, "ids [2] have no pixels"),
        (np.array([[1, 2], [0, 0]], dtype=np.uint16), np.array([1]), "2 integer type ids"),
        (np.array([[1, 2], [0, 0]], dtype=np.uint16), np.array([1, 0]), "type ids must be 1..255"),
    ],
)
def test_targets_reject_bad_input(labels, types, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        hover_targets(labels, types)


# --- post-processing -----------------------------------------------------------------------------------------------


def test_sobel_port_matches_scipy_and_opencvs_5x5_kernel():
    image = np.random.default_rng(0).random((20, 24))
    for axis in (0, 1):  # size 3 is the classic Sobel; scipy's "mirror" border is OpenCV's reflect-101 default
        np.testing.assert_allclose(_sobel(image, axis, 3), ndimage.sobel(image, axis=axis, mode="mirror"), rtol=1e-12)
    impulse = np.zeros((11, 11))
    impulse[5, 5] = 1
    # OpenCV's documented 5 x 5 Sobel: d/dx = [-1 -2 0 2 1] along x times [1 4 6 4 1] along y; correlating an
    # impulse returns the kernel mirrored
    kernel = np.outer([1, 4, 6, 4, 1], [-1, -2, 0, 2, 1])
    np.testing.assert_array_equal(_sobel(impulse, 1, 5)[3:8, 3:8], kernel[::-1, ::-1])
    np.testing.assert_array_equal(_sobel(impulse, 0, 5)[3:8, 3:8], kernel.T[::-1, ::-1])


def test_sobel_size_and_marker_size_scale_with_magnification():
    assert [sobel_size(m) for m in (0.125, 0.25, 0.5, 1.0, 4.0)] == [41, 21, 11, 5, 3]
    assert [min_marker_size(m) for m in (0.25, 0.5, 1.0)] == [10, 3, 1]
    for bad in (0, -0.5, float("nan")):
        with pytest.raises(InputError, match="mpp must be a positive"):
            sobel_size(bad)


def test_non_touching_discs_are_recovered_exactly():
    centers = [(20, 20), (60, 22), (100, 25), (25, 70), (70, 75), (110, 100), (40, 110)]
    labels = discs((130, 130), centers, 11)
    _, pred = perfect(labels)
    assert pred.instances.dtype == np.uint16 and len(pred) == len(centers)
    assert np.array_equal(np.unique(pred.instances), np.arange(len(centers) + 1))  # numbered 1..n
    assert same_partition(pred.instances, labels)
    assert pq(pred.instances, labels) >= PERFECT


@pytest.mark.parametrize("gap", [1.6, 1.8, 2.0])  # center distance in radii: overlapping to just touching
@pytest.mark.parametrize("direction", [(1, 0), (0, 1), (0.7071, 0.7071)])
def test_touching_pairs_are_split(gap, direction):
    r = 10
    (dx, dy) = direction
    centers = [(30, 30), (30 + gap * r * dx, 30 + gap * r * dy), (85, 40), (85 + gap * r * dy, 40 + gap * r * dx)]
    labels = discs((100, 120), centers, r)
    _, pred = perfect(labels)
    assert len(pred) == 4
    assert pq(pred.instances, labels) >= 0.9


def test_small_nuclei_need_the_scaled_sobel():
    # radius 4 px is a nucleus at ~1 um/px; with the 40x settings (21 px Sobel, 10 px markers) the pairs get no markers
    centers = [(15 + 30 * i + 7 * (j % 2), 15 + 30 * j) for i in range(3) for j in range(3)]
    centers += [(x + 7, y) for x, y in centers[::3]]  # three touching pairs
    labels = discs((100, 110), centers, 4)
    _, pred = perfect(labels, mpp=1.0)
    assert len(pred) == len(centers) and pq(pred.instances, labels) >= 0.9
    _, at_40x = perfect(labels, mpp=0.25)
    paired = np.isin(labels, [1, 4, 7, 10, 11, 12])
    assert not at_40x.instances[paired].any() and pq(at_40x.instances, labels) < 0.9


def test_types_are_the_majority_vote_inside_each_instance():
    labels = discs((60, 100), [(15, 15), (45, 15), (75, 15), (15, 45), (45, 45)], 9)
    pixel_type = np.zeros(labels.shape, dtype=np.intp)
    first = np.flatnonzero(labels.ravel() == 1)
    pixel_type.flat[first] = 2
    pixel_type.flat[first[:20]] = 3  # a minority of type 3
    pixel_type[labels == 2] = 1
    second = np.flatnonzero(labels.ravel() == 3)
    pixel_type.flat[second[:10]] = 2  # background majority, one nuclear type present -> that type
    fourth = np.flatnonzero(labels.ravel() == 4)
    pixel_type.flat[fourth[: len(fourth) // 2]] = 3
    pixel_type.flat[fourth[len(fourth) // 2 : 2 * (len(fourth) // 2)]] = 1  # tie 1 vs 3 -> lower id
    if len(fourth) % 2:
        pixel_type.flat[fourth[-1]] = 0
    # instance 5 is all background: it keeps type 0
    nc = np.eye(4, dtype=np.float32)[pixel_type].transpose(2, 0, 1) * 0.7 + 0.1  # probabilities, argmax = pixel_type
    _, pred = perfect(labels, nc=nc)
    assert same_partition(pred.instances, labels)
    by_true = {int(labels[pred.instances == k][0]): int(t) for k, t in enumerate(pred.types, start=1)}
    assert by_true == {1: 2, 2: 1, 3: 2, 4: 1, 5: 0}
    assert pred.types.dtype == np.uint8


def test_without_nc_every_instance_is_type_one():
    labels = discs((40, 40), [(10, 10), (28, 28)], 6)
    _, pred = perfect(labels)
    assert pred.types.tolist() == [1, 1]


def test_centroids_are_image_moments_in_x_y():
    labels = discs((80, 90), [(20, 25), (60.5, 50)], 10)
    labels[5:15, 50:85] = 3  # an off-center rectangle
    _, pred = perfect(labels)
    assert pred.centroids.dtype == np.float32 and pred.centroids.shape == (3, 2)
    rows_cols = ndimage.center_of_mass(np.ones_like(labels), pred.instances, np.arange(1, 4))
    np.testing.assert_allclose(pred.centroids, np.array(rows_cols)[:, ::-1], rtol=1e-6)
    np.testing.assert_allclose(sorted(pred.centroids.tolist()), [[20, 25], [60.5, 50], [67, 9.5]], rtol=1e-6)


def test_an_empty_map_gives_no_instances():
    hv = np.zeros((2, 32, 32), dtype=np.float32)
    for nc in (None, np.zeros((3, 32, 32), dtype=np.float32)):
        pred = hover_postprocess(np.zeros((32, 32)), hv, nc, 0.25)
        assert len(pred) == 0 and pred.types.shape == (0,) and pred.centroids.shape == (0, 2)
        assert pred.instances.shape == (32, 32) and pred.instances.dtype == np.uint16 and not pred.instances.any()


def test_specks_below_ten_pixels_are_dropped():
    labels = discs((40, 40), [(20, 20)], 8)
    labels[2:5, 2:5] = 2  # 9 px
    _, pred = perfect(labels)
    assert len(pred) == 1 and not pred.instances[2:5, 2:5].any()


def test_post_processing_rejects_mismatched_shapes():
    with pytest.raises(InputError, match=r"HV maps must be \(2, 8, 8\)"):
        hover_postprocess(np.zeros((8, 8)), np.zeros((8, 8, 2)), None, 0.25)
    with pytest.raises(InputError, match="NC probabilities"):
        hover_postprocess(np.zeros((8, 8)), np.zeros((2, 8, 8)), np.zeros((8, 8)), 0.25)
