"""End to end against torch-fidelity: the same images and the same Inception weights give the same FID."""

import numpy as np
import pytest
import torch
import torch_fidelity
from numerics import fd_stats_gap, float32_rounding
from torch_fidelity.metric_fid import fid_statistics_to_metric

from histosynth.benchmark.encoders import load_encoder, preprocess
from histosynth.benchmark.features import extract_features
from histosynth.benchmark.frechet import fd_from_stats
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.sources import build_source


class UInt8Images(torch.utils.data.Dataset):
    """torch-fidelity's input contract: a Dataset of uint8 CHW tensors."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """A Kaiming-initialized Inception saved in torch-fidelity's state-dict format (the real file needs a download)."""
    path = tmp_path_factory.mktemp("weights") / "pt_inception-random.pth"
    torch.save(load_encoder("inception", pretrained=False, seed=3).backbone.state_dict(), path)
    return path


def test_fid_equals_torch_fidelity_with_the_same_weights(tmp_path, inception_weights):
    real = tmp_path / "real"
    fake = tmp_path / "fake"
    write_dataset(build_source("simulator", n=24, size=64, seed=1), real, CardInfo("r", "r"))
    write_dataset(build_source("simulator", n=20, size=64, seed=2, nuclei_density=2.0), fake, CardInfo("f", "f"))
    encoder = load_encoder("inception", weights=inception_weights)
    assert encoder.weights_fingerprint.startswith("sha256:")
    ours_real = extract_features(real, [encoder], batch_size=7, use_cache=False, progress=False).encoders["inception"]
    ours_fake = extract_features(fake, [encoder], batch_size=16, use_cache=False, progress=False).encoders["inception"]
    with pytest.warns(Warning):  # 20-24 samples of 2048-d features: rank-deficient, and we say so
        ours = fd_from_stats(ours_real.stats, ours_fake.stats)

    images = {name: np.stack([s.image for s in iter_samples(path)]) for name, path in (("real", real), ("fake", fake))}
    theirs = torch_fidelity.calculate_metrics(
        input1=UInt8Images(images["real"]), input2=UInt8Images(images["fake"]), fid=True, cuda=False, verbose=False,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(inception_weights), batch_size=10, save_cpu_ram=True,
    )["frechet_inception_distance"]
    assert ours > 0
    # Tolerance, from the data. (1) Ours keeps the 19 eigenvalues the rank allows: fd_stats_gap. (2) The peer's
    # sqrt(eigvals(Σ1Σ2)) also sums the roots of ~2000 rounding-noise eigenvalues (no a-priori bound: Σ1Σ2 is
    # singular and may be defective); measured here as its distance E from the exact low-rank value on our
    # statistics, allowed twice (ours and theirs). (3) Features from other batch sizes: each entry within
    # 3·float32_rounding (measured on 8 images), so rows move by r <= that·√d and √FD, a W2 distance, by <= 2r.
    s1, s2 = ours_real.stats, ours_fake.stats
    with pytest.warns(Warning):
        exact = fd_from_stats(s1, s2, ours_real.features, ours_fake.features)
    peer_route = fid_statistics_to_metric({"mu": s1.mean, "sigma": s1.cov}, {"mu": s2.mean, "sigma": s2.cov}, False)
    peer_error = abs(peer_route["frechet_inception_distance"] - exact)
    sample = images["real"][:8]
    r = 3 * float32_rounding(encoder, preprocess(sample, encoder.meta.preprocess)) * np.sqrt(s1.dim)
    features_gap = 2 * np.sqrt(exact) * 2 * r + (2 * r) ** 2
    ours_gap = fd_stats_gap(s1.mean, s1.cov, s2.mean, s2.cov, rank=min(s1.count, s2.count) - 1, n_samples=44)
    assert ours == pytest.approx(theirs, rel=0, abs=ours_gap + 2 * peer_error + features_gap)
