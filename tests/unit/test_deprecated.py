"""The British spellings of public names still work for one release, each with a DeprecationWarning naming the new
name: a plugin's GeneratorMeta(licence=...), a submission's `licence:` field, a saved model folder's training data,
the renamed functions of histosynth.labels and histosynth.data_cards."""

from __future__ import annotations

import json

import pytest

from histosynth.classes import ClassInfo
from histosynth.generators.base import GeneratorMeta, TrainingData, TrainReport
from histosynth.sources.base import SourceMeta


def meta(**fields) -> GeneratorMeta:
    common = dict(name="toy", version="0.1.0", summary="s", paper="p", citation="c", conditioning=(),
                  outputs=("image",), label_policy="none", family="toy", target="x:Y")
    return GeneratorMeta(**common, **fields)


def test_generator_meta_takes_and_gives_licence_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'licence' is deprecated.*use 'license'"):
        old = meta(licence="MIT")
    assert old == meta(license="MIT") and old.license == "MIT"
    with pytest.warns(DeprecationWarning, match="'licence'"):
        assert old.licence == "MIT"
    with pytest.raises(TypeError, match="not both"):
        meta(license="MIT", licence="MIT")


@pytest.mark.parametrize("cls,fields,old,new", [
    (TrainingData, {}, "licence", "license"),
    (SourceMeta, {"name": "s", "description": "d"}, "licence", "license"),
    (ClassInfo, {"id": 1, "name": "tumor"}, "colour", "color"),
])
def test_renamed_dataclass_fields(cls, fields, old, new):
    value = (1, 2, 3) if new == "color" else "cc0-1.0"
    with pytest.warns(DeprecationWarning, match=f"'{old}'"):
        item = cls(**fields, **{old: value})
    assert getattr(item, new) == value
    with pytest.warns(DeprecationWarning):
        assert getattr(item, old) == value


def test_a_saved_training_report_with_licence_loads():
    saved = {"generator": "htd", "steps": 2, "data": {"description": "d", "licence": "cc0-1.0", "patches": 3}}
    report = TrainReport.from_json(json.loads(json.dumps(saved)))
    assert report.data.license == "cc0-1.0" and report.data.patches == 3


def test_renamed_module_names_resolve_with_a_warning():
    import histosynth.data_cards.model as cards
    import histosynth.labels as labels

    with pytest.warns(DeprecationWarning, match="'PseudoLabeller'.*'PseudoLabeler'"):
        assert labels.PseudoLabeller is labels.PseudoLabeler
    import histosynth.benchmark.downstream.data as downstream_data

    with pytest.warns(DeprecationWarning, match="'LabelledSet'.*'LabeledSet'"):
        assert downstream_data.LabelledSet is downstream_data.LabeledSet
    with pytest.warns(DeprecationWarning):
        from histosynth.labels.pipeline import fit_pseudolabeller
    assert fit_pseudolabeller is labels.fit_pseudolabeler
    with pytest.warns(DeprecationWarning):
        assert cards.default_licence(["panda"]) == cards.default_license(["panda"]) == "cc-by-nc-sa-4.0"
    with pytest.raises(AttributeError):
        labels.NoSuchName  # noqa: B018


def test_a_submission_with_licence_loads(tmp_path):
    from histosynth.leaderboard.submission import SubmissionError, load_submission

    (tmp_path / "set").mkdir()
    path = tmp_path / "submission.yaml"
    path.write_text("kind: dataset\nname: my-set\ndataset: set\nlicence: cc-by-4.0\n")
    with pytest.warns(DeprecationWarning, match="'licence'.*'license'"):
        submission = load_submission(path)
    assert submission.license == "cc-by-4.0"
    path.write_text("kind: dataset\nname: my-set\ndataset: set\nlicence: cc-by-4.0\nlicense: cc-by-4.0\n")
    with pytest.raises(SubmissionError, match="give `license:` only"):
        load_submission(path)


def test_renamed_benchmark_names_resolve_with_a_warning():
    import histosynth.benchmark.prdc as prdc
    import histosynth.benchmark.suite as suite
    from histosynth.benchmark.encoders import ENCODERS

    with pytest.warns(DeprecationWarning, match="'MEMORISATION_LIMIT'"):
        assert suite.MEMORISATION_LIMIT == suite.MEMORIZATION_LIMIT
    with pytest.warns(DeprecationWarning, match="'DegenerateNeighbourhoods'"):
        assert prdc.DegenerateNeighbourhoods is prdc.DegenerateNeighborhoods
    meta = ENCODERS.get("effnet-lite0")
    with pytest.warns(DeprecationWarning, match="'licence'"):
        assert meta.licence == meta.license


def test_the_generator_registry_holds_metadata_and_old_uses_still_work():
    from histosynth.generators import GENERATORS, generator_class, generator_meta

    assert GENERATORS.get("htd") is generator_meta("htd") and generator_class("htd").meta is generator_meta("htd")
    with pytest.warns(DeprecationWarning, match="'GENERATORS.get\\(name\\).presets'.*'generator_class\\(name\\).presets'"):
        assert GENERATORS.get("htd").presets() == generator_class("htd").presets()
    with pytest.warns(DeprecationWarning, match="'GENERATOR_META' is deprecated"):
        from histosynth.generators.registry import GENERATOR_META
    assert GENERATOR_META["htd"] is generator_meta("htd") and GENERATOR_META.get("nope") is None
    assert sorted(GENERATOR_META) == list(GENERATORS)
    with pytest.warns(DeprecationWarning, match="'GENERATOR_META'"):
        from histosynth.generators import GENERATOR_META as again
    assert dict(again.items()) == dict(GENERATOR_META.items())
    with pytest.raises(AttributeError):
        GENERATORS.get("htd").no_such_attribute  # noqa: B018
