"""Pseudo-labeling jobs: cache reuse, resume after a crash, the sidecar, and the `data pseudolabel|sample` CLI."""

import json

import numpy as np
import pytest
from PIL import Image

from histosynth.cli import main
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, read_metadata
from histosynth.labels.cache import ArrayCache, content_key
from histosynth.labels.heterogeneity import composition, is_heterogeneous
from histosynth.labels.pipeline import (
    PseudolabelConfig,
    fit_pseudolabeler,
    load_hierarchy,
    load_sidecar,
    write_pseudolabeled,
)
from histosynth.recipes.encoders import pseudolabel_encoder
from histosynth.sources.simulator import SimulatorSource

FAST = dict(cell=32, input_size=64, ks=(3, 6), nuclei_k=3)  # 64 px encoder inputs: caching is under test, not quality


class CountingEncoder:
    """The real encoder, counting the cells it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.cells = 0

    def encode(self, images, *args, **kwargs):
        self.cells += len(images)
        return self.inner.encode(images, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def encoder():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a busy 2-core machine ran ~10x slower
    yield pseudolabel_encoder("effnet-lite0")
    torch.set_num_threads(before)


def samples(n: int = 6):
    return list(SimulatorSource(n=n, size=64, seed=11, nuclei_density=1.5))


def card() -> CardInfo:
    return CardInfo(pretty_name="test pseudo labels", description="test", license="cc0-1.0")


def test_cache_avoids_recomputation_and_keys_follow_the_settings(encoder, tmp_path):
    counting = CountingEncoder(encoder)
    data = samples()
    first = fit_pseudolabeler(data, PseudolabelConfig(**FAST), tmp_path, encoder=counting, progress=False)
    cells = counting.cells
    assert cells == first.report["tissue_cells"] > 0 and first.report["encoded_patches"] == 6
    again = fit_pseudolabeler(data, PseudolabelConfig(**FAST), tmp_path, encoder=counting, progress=False)
    assert counting.cells == cells and again.report["encoded_patches"] == 0  # everything came from the cache
    assert np.array_equal(again.tissue.centroids, first.tissue.centroids)
    assert all(again.label(s).equals(first.label(s)) for s in data)
    assert counting.cells == cells  # labeling reads the cache too
    fit_pseudolabeler(data, PseudolabelConfig(**(FAST | {"cell": 16})), tmp_path, encoder=counting, progress=False)
    assert counting.cells == cells + 6 * 16  # another cell size: new keys, 16 cells per 64 px patch


def test_unreadable_cache_entries_are_recomputed(tmp_path):
    cache = ArrayCache(tmp_path)
    key = content_key("x", np.arange(3))
    cache.put(key, {"a": np.arange(5)})
    cache.path(key).write_bytes(cache.path(key).read_bytes()[:20])  # a truncated file
    calls = []
    out = cache.get_or_compute(key, lambda: calls.append(1) or {"a": np.arange(5)})
    assert calls == [1] and out["a"].tolist() == [0, 1, 2, 3, 4]
    assert content_key("ab", "c") != content_key("a", "bc") and content_key(np.zeros(2)) != content_key(np.zeros((1, 2)))


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_reuses_the_cache_and_gives_the_same_output(encoder, tmp_path):
    data = samples()
    config = PseudolabelConfig(**FAST)

    def crashing():
        for i, sample in enumerate(data):
            if i == 4:
                raise Crash("killed mid-way")
            yield sample

    counting = CountingEncoder(encoder)
    with pytest.raises(Crash):
        write_pseudolabeled(lambda: {"train": crashing()}, tmp_path / "out", card(), config, tmp_path / "cache",
                             encoder=counting, progress=False)
    assert not (tmp_path / "out").exists()
    done = counting.cells
    labeler, _, _ = write_pseudolabeled(lambda: {"train": iter(data)}, tmp_path / "out", card(), config,
                                          tmp_path / "cache", encoder=counting, progress=False)
    assert labeler.report["encoded_patches"] == 2  # only the two patches the crashed run never reached
    assert counting.cells == labeler.report["tissue_cells"] and done < counting.cells

    write_pseudolabeled(lambda: {"train": iter(data)}, tmp_path / "clean", card(), config, tmp_path / "fresh",
                         encoder=encoder, progress=False)
    resumed, clean = list(iter_samples(tmp_path / "out")), list(iter_samples(tmp_path / "clean"))
    assert len(resumed) == 6 and all(a.equals(b) for a, b in zip(resumed, clean, strict=False))
    assert load_sidecar(tmp_path / "out")["tissue"] == load_sidecar(tmp_path / "clean")["tissue"]


@pytest.mark.parametrize("ks", ["3,6,400", "0,5", "255"])
def test_cli_pseudolabel_refuses_a_k_no_pseudo_schema_holds(ks, tmp_path, capsys):
    # a pseudo tissue schema has ids 1..254 (0 background, 255 ignore): k = 400 is refused, not skipped
    assert main(["data", "pseudolabel", str(tmp_path), "--out", str(tmp_path / "out"), "--k", ks]) == 2
    error = capsys.readouterr().err
    assert "out of range" in error and "[1, 254]" in error and not (tmp_path / "out").exists()


def test_cli_pseudolabel_then_show_then_sample(encoder, tmp_path, capsys):
    src, out = tmp_path / "sim", tmp_path / "pseudo"
    assert main(["data", "build", "--source", "simulator", "--n", "6", "--size", "64", "--seed", "2", "--out", str(src)]) == 0
    assert main(["data", "pseudolabel", str(src), "--out", str(out), "--k", "3,6,200", "--cell", "32",
                 "--input-size", "64", "--nuclei-k", "3", "--cache", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "skipped k=[200]" in printed and "pseudo-tissue-k6" in printed and "% of patches in 20-80%" in printed
    meta = read_metadata(out)
    assert meta["histosynth"]["tissue_schema"] == "pseudo-tissue-k6"
    assert meta["histosynth"]["nuclei_schema"] == "pseudo-nuclei-k3" and meta["license"] == "cc0-1.0"
    labeled = list(iter_samples(out))
    originals = list(iter_samples(src))
    assert len(labeled) == 6 and all(np.array_equal(a.image, b.image) for a, b in zip(labeled, originals, strict=False))
    assert all(s.tissue is not None and s.nuclei is not None for s in labeled)
    assert sum(len(s.nuclei) for s in labeled) > 10
    sidecar = json.loads((out / "pseudolabels.json").read_text())
    assert sidecar["tissue"]["levels"] == [3, 6] and sidecar["tissue"]["skipped"] == [200]
    hierarchy = load_hierarchy(out)
    coarse = hierarchy.coarsen(labeled[0].tissue, 3)
    assert set(np.unique(coarse).tolist()) <= {0, 1, 2, 3}

    assert main(["data", "show", str(out), "--out", str(tmp_path / "grid.png"), "--n", "4"]) == 0
    assert np.asarray(Image.open(tmp_path / "grid.png")).std() > 10

    # heterogeneous sampling of the annotated simulator set: the CLI's counts equal the rule applied here
    expected = [is_heterogeneous(composition(s.tissue)) for s in originals]
    assert main(["data", "sample", str(src), "--out", str(tmp_path / "het")]) == 0
    printed = capsys.readouterr().out
    share = 100 * sum(expected) / len(expected)
    assert "input patches: 6; in 20-80%" in printed and f"{sum(expected)} ({share:.1f}%)" in printed
    kept = list(iter_samples(tmp_path / "het"))
    assert len(kept) == sum(expected) and all(is_heterogeneous(composition(s.tissue)) for s in kept)
    assert (tmp_path / "het-composition.png").is_file()

    # entropy sampling of the pseudo-labeled set
    assert main(["data", "sample", str(out), "--out", str(tmp_path / "ent"), "--by-entropy", "3"]) == 0
    assert "sampled patches: 3" in capsys.readouterr().out
    assert len(list(iter_samples(tmp_path / "ent"))) == 3


def test_cli_sample_refuses_a_dataset_without_tissue_maps(tmp_path, capsys):
    main(["data", "build", "--source", "embedded", "--out", str(tmp_path / "e"), "--size", "64", "--n", "2", "--no-pseudolabel"])
    assert main(["data", "sample", str(tmp_path / "e"), "--out", str(tmp_path / "s")]) == 2
    assert "has no tissue maps" in capsys.readouterr().err


def test_a_split_folder_is_fitted_on_its_train_split_only(encoder, tmp_path):
    """Held-out patches never shape the clusters their labels come from: fitting on train only gives the same
    labeler as fitting on the train split alone, and the test split is still labeled."""
    from histosynth.disk import write_dataset
    from histosynth.labels.pipeline import pseudolabel_dataset

    data = samples(8)
    write_dataset({"train": data[:5], "test": data[5:]}, tmp_path / "split", card())
    config = PseudolabelConfig(**FAST)
    labeler, summary, _ = pseudolabel_dataset(tmp_path / "split", tmp_path / "out", config, tmp_path / "cache",
                                               encoder=encoder, progress=False)
    alone, _, _ = write_pseudolabeled(lambda: {"train": iter(data[:5])}, tmp_path / "alone", card(), config,
                                       tmp_path / "cache", encoder=encoder, progress=False)
    assert labeler.report["fitted_on_splits"] == ["train"]
    assert load_sidecar(tmp_path / "out")["tissue"] == load_sidecar(tmp_path / "alone")["tissue"]
    assert len(list(iter_samples(tmp_path / "out", "test"))) == 3
    assert all(s.tissue is not None for s in iter_samples(tmp_path / "out", "test"))
