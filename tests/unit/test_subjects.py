"""A results file names what made each scored set, read from the rows' provenance (benchmark/subjects.py)."""

from dataclasses import replace

import pytest

from histosynth.benchmark.lpips_masked import MODES
from histosynth.benchmark.metric_registry import LPIPS_MODES, metric_spec
from histosynth.benchmark.results import DataRef
from histosynth.benchmark.subjects import subject_of
from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.errors import UnknownNameError
from histosynth.sources import build_source


def generated(sample, checkpoint="sha256:11"):
    prov = replace(sample.provenance, source="htd", generator="htd", generator_version="0.1.0",
                   checkpoint_hash=checkpoint, seed=1)
    return replace(sample, provenance=prov)


@pytest.fixture(scope="module")
def real():
    return list(build_source("simulator", n=4, size=32, seed=0, mpp=4.0))


@pytest.mark.parametrize("make,kind,name,checkpoint", [
    (lambda s: s, "real", "simulator", None),
    (lambda s: [generated(x) for x in s], "generator", "htd", "sha256:11"),
    (lambda s: [generated(x, f"sha256:{i}") for i, x in enumerate(s)], "dataset", "set", None),
    (lambda s: [*s[:2], *[generated(x) for x in s[2:]]], "dataset", "set", None),
])
def test_subject_from_provenance(tmp_path, real, make, kind, name, checkpoint):
    write_dataset(make(real), tmp_path / "set", CardInfo("t", "t"))
    ref = DataRef("set", str(tmp_path / "set"), "sha256:abc", 4)
    subject = subject_of(tmp_path / "set", "train", ref)
    assert (subject.kind, subject.name, subject.checkpoint_hash) == (kind, name, checkpoint)
    assert subject.content_hash == "sha256:abc"


def test_metric_registry():
    assert LPIPS_MODES == MODES  # every masked-LPIPS mode has a registry entry
    assert metric_spec("fd").higher_is_better is False and metric_spec("miou").higher_is_better is True
    assert metric_spec("miou_ratio_to_real").higher_is_better is True and metric_spec("iou/stroma").high == 1.0
    with pytest.raises(UnknownNameError, match="unknown metric 'fid'"):
        metric_spec("fid")
