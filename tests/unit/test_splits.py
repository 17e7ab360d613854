"""`data build --split-by slide|region`: no slide (or region) in both splits, every sample in exactly one."""

import numpy as np
import pytest
from helpers import labeled_sample

from histosynth.cli import main
from histosynth.data_cards.card import CardInfo
from histosynth.disk import count_samples, iter_samples, write_dataset
from histosynth.errors import InputError
from histosynth.schema import Provenance, Sample
from histosynth.splits import SplitSpec, choose_test_groups, split_groups, write_split


def _ids(folder, split):
    return sorted(s.provenance.seed for s in iter_samples(folder, split))


def test_split_by_slide_keeps_each_slide_on_one_side_and_every_sample_once(tmp_path):
    # 12 samples on slides slide-0, slide-1, slide-2 (i % 3), 4 each.
    write_dataset([labeled_sample(i) for i in range(12)], tmp_path / "all", CardInfo("all", "a"))
    spec = SplitSpec("slide", 0.34, seed=5)
    summary = write_split(tmp_path / "all", tmp_path / "split", CardInfo("s", "s"), spec)
    train, test = split_groups(tmp_path / "split", spec, "train"), split_groups(tmp_path / "split", spec, "test")
    assert train.isdisjoint(test) and len(train | test) == 3
    assert len(test) == 1  # 4 of 12 is the count closest to 0.34 * 12 = 4.08
    assert summary.split_sizes == {"train": 8, "test": 4}
    assert (count_samples(tmp_path / "split", "train"), count_samples(tmp_path / "split", "test")) == (8, 4)
    assert sorted(_ids(tmp_path / "split", "train") + _ids(tmp_path / "split", "test")) == list(range(12))


def test_choose_test_groups_takes_the_prefix_closest_to_the_fraction_and_leaves_train_a_group():
    keys = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    for seed in range(6):
        test = choose_test_groups(keys, SplitSpec("slide", 0.3, seed))
        n_test = sum(k in test for k in keys)
        assert 0 < len(test) < 3 and n_test < len(keys)
        assert choose_test_groups(keys, SplitSpec("slide", 0.3, seed)) == test  # the seed fixes it
    assert len(choose_test_groups(keys, SplitSpec("slide", 0.99, 0))) == 2  # all but one group


def test_simulator_has_one_slide_so_a_slide_split_is_refused_and_a_region_split_works(tmp_path, capsys):
    base = ["data", "build", "--source", "simulator", "--n", "12", "--size", "32", "--seed", "4"]
    assert main([*base, "--split-by", "slide", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "needs at least 2 slides, the data has one: simulator:sim-4" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".s*"))  # nothing half-written
    # Regions of 128 level-0 px hold 4 tiles of 32 px (x = 32 i): 3 regions, test takes 1 of them.
    assert main([*base, "--split-by", "region", "--region-size", "128", "--test-fraction", "0.3",
                 "--out", str(tmp_path / "r")]) == 0
    assert "train: 8 samples" in capsys.readouterr().out
    spec = SplitSpec("region", 0.3, region_size=128)
    train, test = split_groups(tmp_path / "r", spec, "train"), split_groups(tmp_path / "r", spec, "test")
    assert train.isdisjoint(test) and len(test) == 1 and len(train) == 2
    xs = {split: [s.provenance.x for s in iter_samples(tmp_path / "r", split)] for split in ("train", "test")}
    assert np.unique(np.array(xs["test"]) // 128).size == 1
    assert sorted(xs["train"] + xs["test"]) == [32 * i for i in range(12)]
    assert "split by region" in (tmp_path / "r" / "README.md").read_text()
    assert not list(tmp_path.glob(".r-unsplit*"))


def test_bad_split_options_are_one_line_errors(tmp_path, capsys):
    base = ["data", "build", "--source", "simulator", "--n", "4", "--size", "32", "--out", str(tmp_path / "x")]
    assert main([*base, "--split-by", "region", "--test-fraction", "1.5"]) == 2
    assert "argument --test-fraction: must be a finite number in [0.01, 0.99], got '1.5'" in capsys.readouterr().err
    assert main([*base, "--test-fraction", "0.2"]) == 2
    assert "--test-fraction needs --split-by" in capsys.readouterr().err
    write_dataset([Sample(image=labeled_sample(0).image, provenance=Provenance("test"))], tmp_path / "noslide",
                  CardInfo("n", "n"))
    with pytest.raises(InputError, match="noslide.*row 0 has no slide id"):
        write_split(tmp_path / "noslide", tmp_path / "out", CardInfo("o", "o"), SplitSpec("slide", 0.5))
    assert not (tmp_path / "out").exists()
