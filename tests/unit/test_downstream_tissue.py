"""Downstream tissue segmentation: DeepLabv3+ presets, IoU/Dice against hand counts and MONAI, class remaps."""

import numpy as np
import pytest
import torch
from numerics import EPS64, gamma

from histosynth.benchmark.downstream.tissue import (
    SEG_PRESETS,
    build_deeplab,
    class_remap,
    get_seg_preset,
    load_resnet50_weights,
    seg_scores,
)
from histosynth.benchmark.encoders.weights import EncoderWeightsError
from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError

I = IGNORE_ID
# Reference and prediction of one 2 x 4 image, 4 classes (3 is in neither map). Rows = reference, columns = prediction:
#   ref 0: pred 0 once, pred 1 once      -> [1, 1, 0, 0]
#   ref 1: pred 1 twice                  -> [0, 2, 0, 0]
#   ref 2: pred 2 twice, pred 1 once     -> [0, 1, 2, 0]
#   ref 255: not counted (predicted 0)
REF = np.array([[0, 0, 1, 1], [2, 2, 2, I]], np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 2, 1, 0]], np.uint8)
CONFUSION = [[1, 1, 0, 0], [0, 2, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
# IoU = TP / (TP + FP + FN): 0 -> 1/2, 1 -> 2/4, 2 -> 2/3, 3 -> none. Dice = 2TP / (2TP + FP + FN): 2/3, 4/6, 4/5.
IOU = [1 / 2, 2 / 4, 2 / 3, np.nan]
DICE = [2 / 3, 4 / 6, 4 / 5, np.nan]


def test_iou_and_dice_match_a_hand_counted_confusion_matrix():
    scores = seg_scores(PRED, REF, 4)
    assert scores.confusion.tolist() == CONFUSION
    assert scores.pixels == 7 and scores.n_images == 1
    # Each score is one division of exact integer counts (and a doubling): one rounding, rel <= EPS64.
    np.testing.assert_allclose(scores.per_class_iou, IOU, rtol=EPS64)
    np.testing.assert_allclose(scores.per_class_dice, DICE, rtol=EPS64)
    # Class 3 is in neither map: NaN, and left out of the mean instead of turning it into NaN.
    assert np.isnan(scores.per_class_iou[3]) and np.isnan(scores.per_class_dice[3])
    # The foreground mean (classes 1 and 2; background 0 left out): a sum of 2 rounded terms and a division, γ_3.
    assert scores.miou == pytest.approx((1 / 2 + 2 / 3) / 2, rel=gamma(3))
    assert scores.mean_dice == pytest.approx((2 / 3 + 4 / 5) / 2, rel=gamma(3))
    # One image: pooled and per-image averages are the same numbers.
    assert scores.image_miou == pytest.approx(scores.miou, rel=gamma(3))
    # With background counted the mean changes, so the default really leaves class 0 out.
    with_background = seg_scores(PRED, REF, 4, first_foreground=0)
    assert with_background.miou == pytest.approx((1 / 2 + 2 / 4 + 2 / 3) / 3, rel=gamma(4))
    assert abs(with_background.miou - scores.miou) > 0.01


def test_ignore_pixels_are_excluded_whatever_is_predicted_there():
    base = seg_scores(PRED, REF, 4)
    for value in range(4):
        pred = PRED.copy()
        pred[REF == I] = value
        other = seg_scores(pred, REF, 4)
        assert other.confusion.tolist() == CONFUSION and other.pixels == 7
        assert other.miou == base.miou
    all_ignored = seg_scores(PRED, np.full_like(REF, I), 4)
    assert all_ignored.pixels == 0 and np.isnan(all_ignored.miou) and all_ignored.n_images_scored == 0


def test_a_class_only_predicted_scores_zero_but_stays_out_of_the_mean():
    pred = PRED.copy()
    pred[0, 1] = 3  # a background pixel predicted as class 3, which the reference does not have
    scores = seg_scores(pred, REF, 4)
    assert scores.per_class_iou[3] == 0.0 and scores.per_class_dice[3] == 0.0
    # Class 1 lost its false positive (IoU 2/3 now); the mean is still over the reference's classes 1 and 2 only.
    assert scores.per_class_iou[1] == pytest.approx(2 / 3, rel=EPS64)
    assert scores.miou == pytest.approx((2 / 3 + 2 / 3) / 2, rel=gamma(3))


def test_pooled_and_per_image_averages_differ_where_images_differ_and_agree_where_they_do_not():
    # Image A: all class 1, predicted perfectly. Image B: one class-2 pixel among fifteen class-1 pixels, predicted
    # as class 1. Pooled: class 1 TP 31 FP 1 -> 31/32, class 2 TP 0 FN 1 -> 0, mean 31/64.
    # Per image: A has only class 1 (IoU 1), B has (15/16 + 0)/2 = 15/32; mean over images (1 + 15/32)/2 = 47/64.
    ref = np.ones((2, 4, 4), np.uint8)
    ref[1, 0, 0] = 2
    pred = np.ones_like(ref)
    scores = seg_scores(pred, ref, 3)
    assert scores.miou == pytest.approx(31 / 64, rel=gamma(3))
    assert scores.image_miou == pytest.approx(47 / 64, rel=gamma(5))  # two means of <= 2 terms each
    # Dice: pooled class 1 62/63, class 2 0 -> 31/63; per image 1 and (30/31 + 0)/2 -> (1 + 15/31)/2 = 23/31.
    assert scores.mean_dice == pytest.approx(31 / 63, rel=gamma(3))
    assert scores.image_mean_dice == pytest.approx(23 / 31, rel=gamma(5))
    # The same image repeated: every image has the pooled matrix's proportions, so the two averages agree.
    repeated = seg_scores(np.repeat(PRED[None], 3, 0), np.repeat(REF[None], 3, 0), 4)
    assert repeated.image_miou == pytest.approx(repeated.miou, rel=gamma(6))
    assert repeated.n_images_scored == 3 and repeated.pixels == 21


def _one_hot(maps: np.ndarray, k: int, valid: np.ndarray) -> torch.Tensor:
    hot = (maps[:, None] == np.arange(k)[None, :, None, None]) & valid[:, None]
    return torch.from_numpy(hot.astype(np.float64))


def test_per_image_and_pooled_scores_match_monai():
    from monai.metrics import compute_dice, compute_iou

    rng = np.random.default_rng(3)
    k = 5
    ref = rng.integers(0, k, (6, 12, 10)).astype(np.uint8)
    ref[1][ref[1] == 4] = 2  # image 1 without class 4: NaN in both implementations, left out of the means
    ref[2][ref[2] == 3] = 1
    ref[rng.random(ref.shape) < 0.15] = I
    pred = np.where(rng.random(ref.shape) < 0.6, np.minimum(ref, k - 1), rng.integers(0, k, ref.shape)).astype(np.uint8)
    scores = seg_scores(pred, ref, k)
    valid = ref != I
    p, r = _one_hot(pred, k, valid), _one_hot(ref, k, valid)  # ignore pixels are zero in every channel of both

    # Per image: MONAI's IoU/Dice per (image, class) with ignore_empty (NaN for a class the reference lacks).
    # Both sides divide the same exact integer counts once, then average <= 4 classes and 6 images, all terms >= 0:
    # γ_11 each side (Higham §3.1), 2γ_11 between them.
    for ours, monai in ((scores.image_miou, compute_iou(p, r, include_background=False)),
                        (scores.image_mean_dice, compute_dice(p, r, include_background=False))):
        assert ours == pytest.approx(float(torch.nanmean(torch.nanmean(monai, dim=1))), rel=2 * gamma(11))

    # Pooled: the images side by side as one image give MONAI the summed confusion counts.
    wide_p, wide_r = torch.cat(list(p), dim=-1)[None], torch.cat(list(r), dim=-1)[None]
    monai_iou = compute_iou(wide_p, wide_r, include_background=True)[0].numpy()
    monai_dice = compute_dice(wide_p, wide_r, include_background=True)[0].numpy()
    np.testing.assert_allclose(scores.per_class_iou, monai_iou, rtol=2 * EPS64)  # one division on each side
    np.testing.assert_allclose(scores.per_class_dice, monai_dice, rtol=2 * EPS64)
    assert scores.miou == pytest.approx(float(np.mean(monai_iou[1:])), rel=2 * gamma(k))


def test_class_remap_pairs_by_name_uses_registered_remaps_and_honors_explicit_mappings():
    identity = class_remap("camelyon16", "camelyon16")
    assert identity[[0, 1, 2, I]].tolist() == [0, 1, 2, I]
    consep = class_remap("consep", "consep-4")  # histosynth.classes.REMAPS
    assert consep[list(range(8))].tolist() == [0, 1, 2, 3, 3, 4, 4, 4]
    lut = class_remap("simulator-tissue", "camelyon16",
                      {"Stroma": "normal", "epithelium": "normal", "tumor": "Tumor", "necrosis": "ignore"})
    tissue = np.array([[0, 1, 2], [3, 4, I]], np.uint8)
    assert lut[tissue].tolist() == [[0, 1, 1], [2, I, I]]


def test_an_unmappable_class_is_an_error_naming_it():
    with pytest.raises(InputError, match=r"no target for \['necrosis'\]"):
        class_remap("simulator-tissue", "camelyon16", {"stroma": "normal", "epithelium": "normal"})
    with pytest.raises(InputError, match="no target for"):
        class_remap("panda-radboud", "camelyon16")  # no class names in common but background
    with pytest.raises(InputError, match=r"target 'lymph' of 'stroma'"):
        class_remap("simulator-tissue", "camelyon16", {"stroma": "lymph"})
    with pytest.raises(InputError, match=r"\['muscle'\] not in 'simulator-tissue'"):
        class_remap("simulator-tissue", "camelyon16", {"muscle": "normal"})
    with pytest.raises(InputError, match="nuclei schema"):
        class_remap("camelyon16", "pannuke")


def _aspp_rates(model: torch.nn.Module) -> list[tuple[int, int]]:
    """Dilations of the three atrous branches of smp's ASPP (branch 0 is the 1x1 conv, 4 the image pooling)."""
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP

    aspp = next(m for m in model.modules() if isinstance(m, ASPP))
    return [next(c for c in branch.modules() if isinstance(c, torch.nn.Conv2d)).dilation for branch in aspp.convs[1:4]]


def _check_stride_16(model: torch.nn.Module, num_classes: int, size: int = 64) -> None:
    model.eval()
    with torch.no_grad():
        x = torch.zeros(1, 3, size, size)
        features = model.encoder(x)
        out = model(x)
    assert features[-1].shape[-1] == size // 16  # output stride 16: the deepest features are 1/16 of the input
    assert out.shape == (1, num_classes, size, size)


def test_tiny_preset_builds_on_the_offline_lite0_weights_with_paper_rates_at_stride_16():
    from histosynth.benchmark.encoders import ENCODERS
    from histosynth.benchmark.encoders.weights import read_state_dict, resolve_weights

    model = build_deeplab("tiny", 3)
    assert _aspp_rates(model) == [(6, 6), (12, 12), (18, 18)]
    _check_stride_16(model, 3)
    # The package file's tensors in order, minus its 8 head tensors, are the encoder's 288.
    meta = ENCODERS.get("effnet-lite0")
    raw = list(read_state_dict(resolve_weights(meta), meta).values())
    own = list(model.encoder.model.state_dict().values())
    assert len(own) == 288 and len(raw) == 296
    assert all(torch.equal(a, b) for a, b in zip(own, raw[:288], strict=True))
    assert get_seg_preset("demo").encoder == SEG_PRESETS["tiny"].encoder


def test_paper_preset_is_resnet50_with_aspp_6_12_18_and_refuses_to_download(tmp_path, monkeypatch):
    model = build_deeplab("paper", 4, pretrained=False)
    assert _aspp_rates(model) == [(6, 6), (12, 12), (18, 18)]
    assert [len(getattr(model.encoder, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]  # ResNet-50's blocks
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no cached torchvision file: refused, no download
    with pytest.raises(EncoderWeightsError, match="nothing is downloaded"):
        build_deeplab("paper", 4)


@pytest.mark.slow
def test_paper_preset_runs_at_stride_16_and_loads_torchvision_weights_strictly(tmp_path):
    from torchvision.models import resnet50

    reference = resnet50(weights=None).state_dict()  # a torchvision file with its fc, as torchvision ships it
    torch.save(reference, tmp_path / "resnet50.pth")
    model = build_deeplab("paper", 4, weights=tmp_path / "resnet50.pth")
    _check_stride_16(model, 4)  # 64 px, batch 1
    state = model.encoder.state_dict()
    assert len(state) == len(reference) - 2  # fc.weight and fc.bias dropped, everything else strictly
    assert all(torch.equal(state[name], reference[name]) for name in state)
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(EncoderWeightsError, match="wrong.pth is not a torchvision ResNet-50"):
        load_resnet50_weights(model.encoder, tmp_path / "wrong.pth")


def test_an_unknown_preset_is_refused():
    with pytest.raises(InputError, match="unknown segmentation preset 'huge'"):
        build_deeplab("huge", 3)
