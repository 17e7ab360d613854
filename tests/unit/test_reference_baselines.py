"""The reference rows: real-heldout passes real patches through, copy-nearest copies the
training patch whose map matches best, and the memorization score catches the copies end to end.

Data: simulator slides split by slide (training sim-0, sim-1; held out sim-100), 32 px at 4 um/px, the tiny
presets' resolution, so every array comparison below is exact (no resizing anywhere).
"""

import json
from pathlib import Path

import numpy as np
import pytest

import histosynth.cli as cli
from histosynth.benchmark.memorization import memorization_ratios
from histosynth.benchmark.results import BenchmarkRun
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.generators import load_generator
from histosynth.schema import Sample
from histosynth.sources import build_source

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    train = [s for seed in (0, 1) for s in build_source("simulator", n=8, size=SIZE, seed=seed, mpp=4.0)]
    write_dataset(train, root / "train", CardInfo("train", "simulator slides sim-0 and sim-1"))
    write_dataset(build_source("simulator", n=8, size=SIZE, seed=100, mpp=4.0), root / "held-out",
                  CardInfo("held-out", "simulator slide sim-100"))
    return root


@pytest.fixture(scope="module")
def generated(data, tmp_path_factory) -> dict[str, Path]:
    """Each reference row trained (tiny) and run on the held-out conditions through the CLI."""
    root, out = tmp_path_factory.mktemp("generated"), {}
    for name in ("real-heldout", "copy-nearest"):
        assert cli.main(["train", name, "--data", str(data / "train"), "--preset", "tiny",
                         "--out", str(root / f"model-{name}")]) == 0
        assert cli.main(["generate", name, "--checkpoint", str(root / f"model-{name}"), "--conditions",
                         str(data / "held-out"), "--n", "8", "--out", str(root / name)]) == 0
        out[name] = root / name
    return out


def pixels(samples: list[Sample]) -> np.ndarray:
    return np.stack([s.image.reshape(-1) for s in samples]).astype(np.float64)


def test_real_heldout_returns_each_conditions_real_patch_and_map(data, generated):
    conditions, outputs = list(iter_samples(data / "held-out")), list(iter_samples(generated["real-heldout"]))
    assert len(outputs) == len(conditions) == 8
    for cond, out in zip(conditions, outputs, strict=True):
        assert np.array_equal(out.image, cond.image) and np.array_equal(out.tissue, cond.tissue)
        prov = out.provenance  # real data passed through: its real origin beside the generator's name
        assert (prov.source, prov.slide_id, prov.x, prov.y) == (cond.provenance.source, cond.provenance.slide_id,
                                                                cond.provenance.x, cond.provenance.y)
        assert prov.generator == "real-heldout" and prov.checkpoint_hash.startswith("sha256:")
    training = json.loads((generated["real-heldout"].parent / "model-real-heldout" / "config.json").read_text())["training"]
    assert training["data"]["patches"] == 16 and training["final_loss"] == 0.0  # a pass-through reproduces its input


def test_copy_nearest_copies_the_training_patch_with_the_most_agreeing_map(data, generated):
    train = list(iter_samples(data / "train"))
    conditions, outputs = list(iter_samples(data / "held-out")), list(iter_samples(generated["copy-nearest"]))
    train_maps = np.stack([s.tissue for s in train])
    for cond, out in zip(conditions, outputs, strict=True):
        agreement = (train_maps == cond.tissue).mean(axis=(1, 2))  # no ignore pixels in the simulator's maps
        copied = [i for i, s in enumerate(train) if np.array_equal(s.image, out.image)]
        assert copied and agreement[copied[0]] == agreement.max()
        assert np.array_equal(out.tissue, cond.tissue)  # the condition's labels, not the copied patch's
    gen = load_generator(generated["copy-nearest"].parent / "model-copy-nearest")
    again = gen.sample(train, seed=0)  # a training map's best match is the patch itself
    assert all(np.array_equal(a.image, t.image) for a, t in zip(again, train, strict=True))


def test_copy_nearest_without_a_map_draws_a_training_patch_from_the_seed(data, generated):
    gen = load_generator(generated["copy-nearest"].parent / "model-copy-nearest")
    cond = next(iter(iter_samples(data / "held-out")))
    bare = Sample(image=cond.image, provenance=cond.provenance)
    train_images = {s.image.tobytes() for s in iter_samples(data / "train")}
    draws = gen.sample([bare] * 6, seed=list(range(6)))
    assert all(d.image.tobytes() in train_images for d in draws)
    assert len({d.image.tobytes() for d in draws}) > 1  # 6 draws from 16 patches all equal: probability 16^-5
    assert all(a.equals(b) for a, b in zip(draws, gen.sample([bare] * 6, seed=list(range(6))), strict=True))


def test_memorization_flags_every_copy_and_no_real_heldout_patch(data, generated):
    """Pixel space: a copy is at distance 0 from its training patch, ratio 0 < 1/3, so all 8 are flagged; the
    held-out real patches are new slides, none 3x closer to one training patch than to the next."""
    train = pixels(list(iter_samples(data / "train")))
    copies = memorization_ratios(pixels(list(iter_samples(generated["copy-nearest"]))), train)
    assert copies.fraction == 1.0 and np.all(copies.nearest_distance == 0)
    real = memorization_ratios(pixels(list(iter_samples(generated["real-heldout"]))), train)
    assert real.fraction == 0.0 and real.ratios.min() > real.threshold


@pytest.mark.filterwarnings("ignore::histosynth.benchmark.errors.SmallSampleWarning")  # 8 vs 8: FD itself is not tested here
def test_bench_fd_reports_the_copy_baselines_memorization(data, generated, tmp_path, monkeypatch):
    """Through `histosynth bench fd --train` (effnet-lite0 features): identical images give identical features."""
    monkeypatch.setenv("HISTOSYNTH_CACHE", str(tmp_path / "cache"))
    fractions = {}
    for name, fake in generated.items():
        out = tmp_path / f"{name}.json"
        assert cli.main(["bench", "fd", "--real", str(data / "held-out"), "--fake", str(fake), "--train",
                         str(data / "train"), "--encoders", "effnet-lite0", "--metrics", "fd", "--bootstrap", "0",
                         "--out", str(out)]) == 0
        fractions[name] = next(r.value for r in BenchmarkRun.load(out).results if r.metric == "memorization")
    assert fractions == {"real-heldout": 0.0, "copy-nearest": 1.0}
