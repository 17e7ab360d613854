"""The label-consistency segmenter and score: weight loading, IoU against an independent count, learning."""

import numpy as np
import pytest
import torch
from numerics import EPS64, gamma

from histosynth.benchmark.label_consistency import (
    confusion_matrices,
    dataset_arrays,
    label_consistency,
    mean_iou,
    per_class_iou,
)
from histosynth.benchmark.segmenter import build_segmenter, load_encoder_weights, train_segmenter
from histosynth.classes import IGNORE_ID


def test_encoder_weights_load_288_of_288_strictly_from_the_package_file():
    from histosynth.benchmark.encoders import ENCODERS
    from histosynth.benchmark.encoders.weights import read_state_dict, resolve_weights

    model = build_segmenter(3, pretrained=False)
    target = model.encoder.model
    assert len(target.state_dict()) == 288
    assert load_encoder_weights(model) == 288
    # Independent of the loader: the package file's own tensors, in order, minus its 8 head tensors.
    meta = ENCODERS.get("effnet-lite0")
    raw = list(read_state_dict(resolve_weights(meta), meta).values())
    assert len(raw) == 296
    for mine, theirs in zip(target.state_dict().values(), raw[:288], strict=False):
        assert torch.equal(mine, theirs)


def test_confusion_and_iou_on_a_hand_counted_case():
    reference = np.array([[[0, 1, 1], [2, 2, IGNORE_ID]]], np.uint8)
    predicted = np.array([[[0, 1, 2], [2, 1, 0]]], np.uint8)
    confusion = confusion_matrices(predicted, reference, 3)[0]
    assert confusion.tolist() == [[1, 0, 0], [0, 1, 1], [0, 1, 1]]  # the ignored pixel is not counted
    # class 1: TP 1, FP 1, FN 1 -> 1/3; class 2 likewise; background 1/1.
    assert per_class_iou(confusion) == pytest.approx([1.0, 1 / 3, 1 / 3], rel=EPS64)  # one division of counts
    miou, present = mean_iou(confusion)
    assert miou == pytest.approx(1 / 3, rel=gamma(3)) and present.tolist() == [1, 2]  # a mean of 2: γ_3


def test_iou_matches_a_set_count_on_random_maps():
    rng = np.random.default_rng(0)
    k = 6
    reference = rng.integers(0, k, (7, 20, 24)).astype(np.uint8)
    reference[rng.random(reference.shape) < 0.1] = IGNORE_ID
    reference[reference == 4] = 1  # class 4 absent from the reference: left out of the mean
    predicted = rng.integers(0, k, reference.shape).astype(np.uint8)
    result = label_consistency(predicted, reference, k, bootstrap=50)
    valid = reference != IGNORE_ID
    expected = {}
    for c in range(1, k):
        if not (reference[valid] == c).any():
            continue
        inter = ((predicted == c) & (reference == c) & valid).sum()
        union = (((predicted == c) | (reference == c)) & valid).sum()
        expected[c] = inter / union
    assert sorted(result.per_class) == sorted(expected) == [1, 2, 3, 5]
    # Both sides are ratios of the same integer counts: equal up to float64 rounding of one division and a mean.
    assert result.miou == pytest.approx(np.mean(list(expected.values())), rel=2 * gamma(len(expected) + 1))
    assert result.ci_low <= result.miou <= result.ci_high
    assert result.pixels == int(valid.sum())


def test_perfect_maps_score_one_with_a_degenerate_interval():
    reference = np.random.default_rng(1).integers(0, 4, (5, 16, 16)).astype(np.uint8)
    result = label_consistency(reference.copy(), reference, 4)
    assert (result.miou, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)


def test_class_ids_beyond_the_schema_are_refused():
    maps = np.full((1, 4, 4), 3, np.uint8)
    with pytest.raises(ValueError, match="class ids reach 3"):
        confusion_matrices(maps, maps, 3)


def test_segmenter_learns_the_simulator_map_to_image_rule(tmp_path, one_thread):
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources.simulator import SimulatorSource

    # 32 px at 2 um/px: each patch shows a few tissue regions, cheap enough to train on in seconds.
    write_dataset(SimulatorSource(n=48, size=32, mpp=2.0, seed=3), tmp_path / "sim", CardInfo("sim", "test"))
    images, maps = dataset_arrays(tmp_path / "sim", 32)
    assert maps is not None and maps.max() <= 4
    train, test = slice(0, 36), slice(36, 48)
    segmenter = train_segmenter(images[train], maps[train], 5, steps=40, batch_size=8, lr=3e-3, seed=0)
    first, last = segmenter.losses[0], float(np.mean(segmenter.losses[-5:]))
    assert last < 0.7 * first, (first, last)
    predicted = segmenter.predict(images[test])
    score = label_consistency(predicted, maps[test], 5).miou
    # Chance: the same predictions scored against the maps of other patches (the map is not followed).
    chance = label_consistency(predicted, np.roll(maps[test], 1, axis=0), 5).miou
    assert score > chance, (score, chance)


def test_training_is_fixed_by_its_seed():
    """The seed fixes initial weights, batches and every dropout mask (smp's ASPP has dropout): two runs with one
    seed give bit-identical weights in one process, whatever the global RNG did in between; another seed differs."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    maps = rng.integers(0, 3, (12, 32, 32)).astype(np.uint8)
    first = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False)
    torch.rand(7)  # the global RNG moves between the runs
    again = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False)
    other = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False, seed=1)
    assert first.losses == again.losses
    states = [m.model.state_dict() for m in (first, again, other)]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert first.losses != other.losses


def test_a_cached_segmenter_is_the_one_trained_and_a_damaged_cache_is_retrained(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    maps = rng.integers(0, 3, (12, 32, 32)).astype(np.uint8)
    trained = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False, cache=tmp_path)
    (entry,) = tmp_path.iterdir()
    cached = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False, cache=tmp_path)
    assert cached.losses == trained.losses and cached.seconds == trained.seconds  # read back, not trained again
    assert np.array_equal(cached.predict(images), trained.predict(images))
    other = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False, seed=1, cache=tmp_path)
    assert len(list(tmp_path.iterdir())) == 2 and other.losses != trained.losses  # the seed is in the key
    (entry / "model.safetensors").write_bytes(b"damaged")
    again = train_segmenter(images, maps, 3, steps=3, batch_size=4, pretrained=False, cache=tmp_path)
    assert again.losses == trained.losses and np.array_equal(again.predict(images), trained.predict(images))
