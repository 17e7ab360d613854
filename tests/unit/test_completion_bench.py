"""The completion benchmark (histosynth.benchmark.tasks.completion, `histosynth bench completion`): PSNR / SSIM / masked LPIPS inside
the masks of row-paired real and completed patches, bootstrap intervals, the mask-set record and the results file."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

import histosynth.cli as cli
from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.tasks.completion import PSNR_CAP_DB, masked_psnr, masked_ssim, mean_interval, score_completion
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.masks import heldout_set, with_heldout_masks
from histosynth.sources import build_source

N = 8


@pytest.fixture(scope="module")
def real():
    return list(build_source("simulator", n=N, size=32, seed=3, mpp=2.0))


def _noisy_fill(samples, seed=0):
    """Completions that keep the known pixels and put seeded noise of growing strength into each hole."""
    rng = np.random.default_rng(seed)
    out = []
    for j, s in enumerate(with_heldout_masks(samples)):
        image = s.image.astype(np.int64)
        noise = rng.integers(-8 * (j + 1), 8 * (j + 1) + 1, image.shape)
        image[s.completion_mask] = np.clip(image + noise, 0, 255)[s.completion_mask]
        out.append(replace(s, image=image.astype(np.uint8)))
    return out


@pytest.fixture(scope="module")
def folders(real, tmp_path_factory):
    root = tmp_path_factory.mktemp("completion")
    write_dataset(real, root / "real", CardInfo("real", "simulator patches"))
    write_dataset(list(with_heldout_masks(real)), root / "same", CardInfo("same", "unchanged, with held-out masks"))
    write_dataset(_noisy_fill(real), root / "noisy", CardInfo("noisy", "noise in the holes"))
    return root


def test_masked_psnr_matches_a_hand_computation_and_ignores_known_pixels():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 40, 40, 3), dtype=np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[5:20, 8:30] = True
    mse = np.mean((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2)
    # both are float64 evaluations of the same formula: they agree to rounding (1e-12 of ~8 dB is generous)
    assert masked_psnr(a, b, mask) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-12)
    c = b.copy()
    c[~mask] = 255 - c[~mask]
    assert masked_psnr(a, c, mask) == masked_psnr(a, b, mask)
    c[mask] = 255 - c[mask]
    assert masked_psnr(a, c, mask) != masked_psnr(a, b, mask)


def test_identical_inside_the_mask_scores_psnr_cap_and_ssim_one():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), bool)
    mask[4:12, 4:12] = True
    assert masked_psnr(a, a, mask) == PSNR_CAP_DB == pytest.approx(10 * math.log10(255**2 * 12))
    assert masked_ssim(a, a, mask) == pytest.approx(1.0, abs=1e-12)  # SSIM(x, x) = 1 up to float rounding
    b = a.copy()
    b[mask] = 255 - b[mask]
    assert masked_ssim(a, b, mask) < 0.5


def test_mean_interval_is_a_seeded_percentile_bootstrap_around_the_mean():
    values = np.random.default_rng(2).normal(3.0, 1.0, 50)
    mean, low, high = mean_interval(values, 2000, seed=4)
    assert mean == pytest.approx(values.mean())
    assert values.min() < low < mean < high < values.max()
    # the bootstrap interval of a mean approaches mean +- 1.96 s / sqrt(n); with 2000 resamples its ends move by
    # ~2% of the half-width between seeds, and the bootstrap SE is the plug-in SD (ddof 0): allow 15%
    half = 1.96 * values.std(ddof=0) / math.sqrt(len(values))
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert mean_interval(values, 2000, seed=4) == (mean, low, high)
    assert mean_interval(values[:1], 2000, seed=4)[1:] == (None, None)
    assert mean_interval(np.ones(5), 2000, seed=4) == (1.0, 1.0, 1.0)


def test_identical_completions_score_zero_lpips_capped_psnr_unit_ssim(folders):
    run = score_completion(folders / "real", folders / "same", pnet_rand=True, bootstrap=200)
    values = {r.metric: r for r in run.results}
    assert set(values) == {"lpips-spatial-mean", "lpips-layer-masked", "lpips-bbox-crop", "psnr-masked", "ssim-masked"}
    for mode in ("spatial-mean", "layer-masked", "bbox-crop"):
        assert values[f"lpips-{mode}"].value == 0.0 and values[f"lpips-{mode}"].higher_is_better is False
    assert values["psnr-masked"].value == pytest.approx(PSNR_CAP_DB) and values["psnr-masked"].extra["capped"] == N
    assert values["ssim-masked"].value == pytest.approx(1.0, abs=1e-9)
    assert run.settings["masks"] == heldout_set("v1").record()
    assert run.settings["rows_with_changed_known_pixels"] == 0


def test_noisier_holes_score_worse_with_intervals_and_a_valid_results_file(folders, tmp_path):
    run = score_completion(folders / "real", folders / "noisy", pnet_rand=True, bootstrap=500, seed=1)
    values = {r.metric: r for r in run.results}
    psnr = np.array(values["psnr-masked"].extra["per_sample"])
    assert psnr[0] > psnr[-1] + 10  # noise amplitude 8 levels in row 0, 64 in the last: MSE ~64x, ~18 dB
    for r in run.results:
        per = np.array(r.extra["per_sample"])
        assert r.n_real == r.n_fake == N and r.ci_level == 0.95
        assert per.min() <= r.ci_low <= r.value <= r.ci_high <= per.max()
        assert r.value == pytest.approx(per.mean(), abs=1e-6)  # per_sample is rounded to 6 decimals
    assert values["lpips-layer-masked"].value > 0 and values["ssim-masked"].value < 1
    path = run.save(tmp_path / "run.json")
    loaded = BenchmarkRun.load(path)
    assert loaded.task == "completion" and loaded.data["fake"].n == N
    assert {r.metric: r.higher_is_better for r in loaded.results}["psnr-masked"] is True


def test_masks_that_are_not_the_heldout_set_are_recorded_as_custom(real, folders, tmp_path):
    shifted = [replace(s, completion_mask=np.roll(s.completion_mask, 3, axis=1)) for s in with_heldout_masks(real)]
    write_dataset(shifted, tmp_path / "custom", CardInfo("custom", "rolled masks"))
    run = score_completion(folders / "real", tmp_path / "custom", modes=("layer-masked",), pnet_rand=True, bootstrap=0)
    assert run.settings["masks"]["mask_set"] == "custom" and len(run.settings["masks"]["sha256"]) == 64
    assert all(r.ci_low is None for r in run.results)


def test_rows_without_masks_or_counts_that_differ_are_refused(real, folders, tmp_path):
    with pytest.raises(MetricInputError, match="row 0 .*has no completion_mask"):
        score_completion(folders / "real", folders / "real", pnet_rand=True)
    write_dataset(list(with_heldout_masks(real[:3])), tmp_path / "short", CardInfo("short", "3 rows"))
    with pytest.raises(MetricInputError, match="3 rows, but .* has 8"):
        score_completion(folders / "real", tmp_path / "short", pnet_rand=True)


def test_a_completed_set_that_cycles_its_conditions_is_scored_on_one_round(real, folders, tmp_path):
    # generate_dataset completes condition i mod M, so n > M rows repeat; only the first M pair with the real rows
    cycled = _noisy_fill(real)
    write_dataset(cycled + cycled[:5], tmp_path / "cycled", CardInfo("cycled", "13 rows of 8 conditions"))
    once = score_completion(folders / "real", folders / "noisy", modes=(), bootstrap=50)
    again = score_completion(folders / "real", tmp_path / "cycled", modes=(), bootstrap=50)
    assert {r.metric for r in once.results} == {"psnr-masked", "ssim-masked"}
    assert [(r.metric, r.value, r.n_fake) for r in again.results] == [(r.metric, r.value, r.n_fake) for r in once.results]


def test_cli_bench_complete_writes_a_valid_run(folders, tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)  # a random AlexNet backbone, saved as lpips reads it (torchvision's features.* keys)
    features = {k: v for k, v in torchvision.models.alexnet().state_dict().items() if k.startswith("features.")}
    torch.save(features, tmp_path / "alexnet.pth")
    out = tmp_path / "run.json"
    args = ["bench", "completion", "--real", str(folders / "real"), "--completed", str(folders / "noisy"),
            "--backbone", str(tmp_path / "alexnet.pth"), "--bootstrap", "100", "--out", str(out)]
    assert cli.main(args) == 0
    run = json.loads(out.read_text())
    assert BenchmarkRun.from_dict(run).task == "completion" and run["settings"]["pairing"] == "row index"
    assert "psnr-masked" in capsys.readouterr().out
    assert cli.main([*args[:-2], "--modes", "layer-masked,nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "--modes: unknown mode(s) ['nope']" in capsys.readouterr().err
