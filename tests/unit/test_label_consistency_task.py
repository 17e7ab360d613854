"""The label-consistency task (histosynth.benchmark.tasks.label_consistency) rewards images that follow their maps."""

from dataclasses import replace

import pytest

from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.tasks.label_consistency import METRIC, score_label_consistency
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.errors import InputError
from histosynth.sources import build_source


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lc")
    write_dataset(build_source("simulator", n=24, size=32, seed=1, mpp=4.0), root / "train", CardInfo("train", "t"))
    test = list(build_source("simulator", n=12, size=32, seed=2, mpp=4.0))
    write_dataset(test, root / "test", CardInfo("test", "t"))
    # the same images with each map moved to another image: a generator that ignores its condition
    shuffled = [replace(s, tissue=test[(i + 5) % len(test)].tissue) for i, s in enumerate(test)]
    write_dataset(shuffled, root / "shuffled", CardInfo("shuffled", "t"))
    return root


def test_images_that_follow_their_maps_score_higher(sets, tmp_path):
    run = score_label_consistency(sets / "train", sets / "shuffled", real_test=sets / "test", resolution=32,
                                  steps=40, bootstrap=50)
    ignores, follows = (next(r for r in run.results if r.subject == role) for role in ("fake", "real-test"))
    assert follows.metric == ignores.metric == METRIC and follows.ci_low <= follows.value <= follows.ci_high
    assert follows.value > ignores.ci_high  # shuffled maps disagree with what the images show
    assert run.subjects["real-test"].kind == "real" and run.data["real"].n == 24
    back = BenchmarkRun.load(run.save(tmp_path / "lc.json"))
    assert back.comparability_key == run.comparability_key


def test_needs_tissue_maps(sets, tmp_path):
    plain = [replace(s, tissue=None, tissue_schema=None) for s in build_source("simulator", n=4, size=32, seed=3)]
    write_dataset(plain, tmp_path / "plain", CardInfo("plain", "t"))
    with pytest.raises(InputError, match="no tissue"):
        score_label_consistency(sets / "train", tmp_path / "plain", resolution=32, steps=2)
