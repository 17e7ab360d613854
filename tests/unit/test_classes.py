import numpy as np
import pytest

from histosynth.classes import IGNORE_ID, SCHEMAS, get_schema, remap_ids, remap_table


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_builtin_schema_is_well_formed(name):
    schema = get_schema(name)
    assert schema.classes[0].id == 0 and schema.classes[0].name == "background"
    assert [c.id for c in schema.classes] == list(range(schema.num_classes))
    assert len(set(schema.names)) == schema.num_classes
    assert all(len(c.color) == 3 and all(0 <= v <= 255 for v in c.color) for c in schema.classes)
    assert IGNORE_ID in schema.valid_ids() and IGNORE_ID not in schema.valid_ids(allow_ignore=False)


def test_pannuke_follows_npy_channel_order_not_cosyn():
    pannuke = get_schema("pannuke")
    assert pannuke.names[1:] == ["neoplastic", "inflammatory", "connective", "dead", "epithelial"]
    assert pannuke.id_of("Inflammatory") == 2  # CoSyn would say 1


def test_real_dataset_orders():
    assert get_schema("panda-radboud").names == ["background", "stroma", "benign epithelium", "gleason 3", "gleason 4", "gleason 5"]
    assert get_schema("panda-karolinska").names == ["background", "benign tissue", "cancerous tissue"]
    assert get_schema("lizard").names[1:] == ["neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"]
    assert get_schema("consep").num_classes == 8 and get_schema("consep-4").num_classes == 5
    assert get_schema("monusac").names[1:] == ["epithelial", "lymphocyte", "neutrophil", "macrophage"]
    assert get_schema("camelyon16").names == ["background", "normal", "tumor"]


@pytest.mark.parametrize("kind", ["tissue", "nuclei"])
@pytest.mark.parametrize("k", [1, 5, 100, 254])
def test_pseudo_schemas_resolve_for_any_k(kind, k):
    schema = get_schema(f"pseudo-{kind}-k{k}")
    assert schema.kind == kind and schema.num_classes == k + 1
    assert f"pseudo-{kind}-k{k}" in SCHEMAS


@pytest.mark.parametrize("bad", ["pseudo-tissue-k0", "pseudo-tissue-k255", "pseudo-tissue-k07", "pseudo-cells-k5", "pannuk"])
def test_bad_schema_names_fail_with_suggestion(bad):
    with pytest.raises(KeyError, match="unknown class schema"):
        get_schema(bad)


def test_unknown_class_lookup_names_schema():
    with pytest.raises(KeyError, match="not in schema 'camelyon16'"):
        get_schema("camelyon16")[7]
    with pytest.raises(KeyError, match="has no class 'stroma'"):
        get_schema("camelyon16").id_of("stroma")


def test_consep_merge_to_four_classes():
    ids = np.array([0, 1, 2, 3, 4, 5, 6, 7, 255], np.uint8)
    assert remap_ids(ids, "consep", "consep-4").tolist() == [0, 1, 2, 3, 3, 4, 4, 4, 255]
    with pytest.raises(KeyError, match="no id remap"):
        remap_ids(ids, "consep-4", "consep")


def test_remap_table_keeps_or_ignores_unlisted_ids_as_told():
    ids = np.array([0, 1, 2, 3, 255], np.uint8)
    assert remap_table({1: 2, 2: 1}, "keep")[ids].tolist() == [0, 2, 1, 3, 255]
    assert remap_table({1: 2, 2: 1}, "ignore")[ids].tolist() == [255, 2, 1, 255, 255]
    assert remap_table({}, "keep").tolist() == list(range(256))
    with pytest.raises(ValueError, match="kept or ignored"):
        remap_table({1: 2}, "drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0..255"):
        remap_table({256: 1}, "keep")


def test_the_remaps_built_on_it_keep_their_rules():
    from histosynth.benchmark.downstream.tissue import class_remap
    from histosynth.generators.diffusion.curriculum import Curriculum
    from histosynth.generators.diffusion.presets import CurriculumConfig
    from histosynth.labels.tissue import Hierarchy

    ids = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 255], np.uint8)
    # a registered remap applied to ids keeps what it does not list (8 is no consep class)
    assert remap_ids(ids, "consep", "consep-4").tolist() == [0, 1, 2, 3, 3, 4, 4, 4, 8, 255]
    # the benchmark's lookup table makes every id outside the source schema ignore
    assert class_remap("consep", "consep-4")[ids].tolist() == [0, 1, 2, 3, 3, 4, 4, 4, 255, 255]
    assert class_remap("camelyon16", "camelyon16")[ids].tolist() == [0, 1, 2] + [255] * 7
    # the curriculum's coarsening makes fine ids past its table ignore; the hierarchy's keeps them
    curriculum = Curriculum(CurriculumConfig(ks=(2, 4), luts={2: [0, 1, 1, 2, 2]}, warmup_steps=100))
    assert curriculum.k_at(0) == 2 and curriculum.apply(ids, 0).tolist() == [0, 1, 1, 2, 2] + [255] * 5
    hierarchy = Hierarchy(levels=(2, 4), parents={2: np.array([1, 1, 2, 2], np.uint8), 4: np.arange(1, 5, dtype=np.uint8)})
    assert hierarchy.lut(2)[ids].tolist() == [0, 1, 1, 2, 2, 5, 6, 7, 8, 255]
