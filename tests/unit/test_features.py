import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from numerics import EPS32, float32_rounding, moment_errors
from torch import nn

from histosynth.benchmark.encoders import ENCODERS, Encoder, load_encoder, preprocess
from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.features import extract_features, scan_rows
from histosynth.benchmark.stats import StreamingStats
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.sources import build_source

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "ds"
    write_dataset(build_source("simulator", n=16, size=64, seed=5), path, CardInfo("sim", "sim"), max_shard_bytes=60_000)
    return path


@pytest.fixture(scope="module")
def effnet():
    return load_encoder("effnet-lite0")


def test_one_pass_equals_encoding_every_image(sim_dataset, effnet, tmp_path):
    images = np.stack([s.image for s in iter_samples(sim_dataset)])
    expected = effnet.encode(images, batch_size=16).numpy()
    inception = load_encoder("inception", pretrained=False)
    run = extract_features(sim_dataset, [effnet, inception], batch_size=5, cache_dir=tmp_path, progress=False)
    got = run.encoders["effnet-lite0"]
    assert got.stats.count == 16 and run.data.n == 16
    # batch size 5 vs 16: two float32 summation orders, each within the network's measured float32 rounding
    spec = effnet.meta.preprocess
    tol = 3 * float32_rounding(effnet, preprocess(images, spec))
    np.testing.assert_allclose(got.features, expected, rtol=0, atol=tol)
    reference = StreamingStats.from_features(got.features)
    mean_tol, cov_tol = (2 * e for e in moment_errors(got.features))  # streamed vs whole: two summation orders
    assert np.abs(got.stats.mean - reference.mean).max() <= mean_tol * np.abs(reference.mean).max()
    assert np.abs(got.stats.cov - reference.cov).max() <= cov_tol * np.abs(reference.cov).max()
    inc = run.encoders["inception"]
    assert inc.features.shape == (16, 2048) and inc.features.std(axis=0).mean() > 1e-4
    tol = 3 * float32_rounding(inception, preprocess(images, inception.meta.preprocess))
    np.testing.assert_allclose(inc.features, inception.encode(images).numpy(), rtol=0, atol=tol)


def test_keep_caps_kept_features_but_not_statistics(sim_dataset, effnet, tmp_path):
    run = extract_features(sim_dataset, [effnet], batch_size=4, keep=6, cache_dir=tmp_path, progress=False)
    result = run.encoders["effnet-lite0"]
    assert result.features.shape == (6, 1280) and result.stats.count == 16


def test_cache_hit_by_content_hash(sim_dataset, effnet, tmp_path):
    first = extract_features(sim_dataset, [effnet], cache_dir=tmp_path, progress=False).encoders["effnet-lite0"]
    second = extract_features(sim_dataset, [effnet], cache_dir=tmp_path, progress=False).encoders["effnet-lite0"]
    assert not first.from_cache and second.from_cache
    assert second.stats == first.stats and np.array_equal(second.features, first.features)  # exact: the saved state
    other = tmp_path / "other"
    write_dataset(build_source("simulator", n=16, size=64, seed=6), other, CardInfo("o", "o"))
    assert not extract_features(other, [effnet], cache_dir=tmp_path, progress=False).encoders["effnet-lite0"].from_cache
    random_net = load_encoder("effnet-lite0", pretrained=False)
    for _ in range(2):
        assert not extract_features(sim_dataset, [random_net], cache_dir=tmp_path, progress=False).encoders["effnet-lite0"].from_cache


def test_content_hash_ignores_labels_and_sees_pixels(sim_dataset, tmp_path):
    samples = list(iter_samples(sim_dataset))
    unlabeled = [type(s)(s.image, s.provenance) for s in samples]
    write_dataset(unlabeled, tmp_path / "u", CardInfo("u", "u"))
    assert scan_rows(tmp_path / "u").content_hash == scan_rows(sim_dataset).content_hash
    changed = unlabeled[:]
    image = changed[3].image.copy()
    image[0, 0, 0] ^= 1
    changed[3] = type(changed[3])(image, changed[3].provenance)
    write_dataset(changed, tmp_path / "c", CardInfo("c", "c"))
    assert scan_rows(tmp_path / "c").content_hash != scan_rows(sim_dataset).content_hash


class NaNOnBrightImages(nn.Module):
    """A feature network that fails (NaN) on one particular input, to check the error names that sample."""

    def __init__(self, dim: int, bad_mean: float, tolerance: float) -> None:
        super().__init__()
        self.dim, self.bad_mean, self.tolerance = dim, bad_mean, tolerance
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        features = x.mean(dim=(2, 3)).repeat(1, self.dim // 3 + 1)[:, : self.dim] * self.scale
        bad = (x.mean(dim=(1, 2, 3)) - self.bad_mean).abs() < self.tolerance
        features[bad] = float("nan")
        return features


def test_nan_features_name_the_sample(sim_dataset, tmp_path):
    meta = ENCODERS.get("effnet-lite0")
    samples = list(iter_samples(sim_dataset))
    x = preprocess(np.stack([s.image for s in samples]), meta.preprocess)
    means = x.double().mean(dim=(1, 2, 3)).numpy()
    bad_mean = float(means[9])
    # Half the gap to the nearest other image's mean picks out sample 9 alone, if it exceeds the float32 mean's
    # rounding: λ√n·u·max|x| with λ = 8 (Higham & Mary 2019, Thm 3.1; fails with probability < 1e-8).
    gap = float(np.delete(np.abs(means - bad_mean), 9).min())
    assert gap / 2 > 8 * np.sqrt(x[0].numel()) * EPS32 / 2 * float(x.abs().max())
    encoder = Encoder(meta, NaNOnBrightImages(meta.feature_dim, bad_mean, gap / 2))
    with pytest.raises(MetricInputError, match=r"train-00\d\d\d-of-\d+\.parquet row \d+ \(simulator:sim-5:x=576,y=0\)"):
        extract_features(sim_dataset, [encoder], batch_size=4, cache_dir=tmp_path, progress=False)


def test_unknown_encoder_and_empty_inputs(sim_dataset, tmp_path):
    with pytest.raises(KeyError, match="unknown encoder 'efnet-lite0'; did you mean 'effnet-lite0'"):
        extract_features(sim_dataset, ["efnet-lite0"], cache_dir=tmp_path)
    write_dataset([], tmp_path / "empty", CardInfo("e", "e"))
    with pytest.raises(MetricInputError, match="has no rows"):
        extract_features(tmp_path / "empty", ["effnet-lite0"], cache_dir=tmp_path)


def test_two_processes_give_the_statistics_of_one(sim_dataset, tmp_path, run_in_group):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HISTOSYNTH_CACHE": str(tmp_path / "cache")}
    worker = str(HERE / "dist_features_worker.py")
    code, _, err = run_in_group([sys.executable, worker, str(sim_dataset), str(tmp_path / "one"), "0"], env)
    assert code == 0, err
    code, _, err = run_in_group([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", worker,
                           str(sim_dataset), str(tmp_path / "two"), "1"], env)
    assert code == 0, err[-3000:]
    one = StreamingStats.load(tmp_path / "one.stats.npz")
    two = StreamingStats.load(tmp_path / "two.stats.npz")
    assert one.count == two.count == 16
    mean_tol, cov_tol = (2 * e for e in moment_errors(np.load(tmp_path / "one.features.npy")))  # merge vs stream
    assert np.abs(two.mean - one.mean).max() <= mean_tol * np.abs(one.mean).max()
    assert np.abs(two.cov - one.cov).max() <= cov_tol * np.abs(one.cov).max()
    assert np.array_equal(np.load(tmp_path / "one.features.npy"), np.load(tmp_path / "two.features.npy"))
