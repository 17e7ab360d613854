import numpy as np
import pytest

from histosynth.schema import Nuclei, Provenance, Sample, SampleValidationError, instance_centroids

H, W = 24, 32
PROV = Provenance("test", "slide-7", x=10, y=20, level=0, mpp=0.5)


def image():
    return np.zeros((H, W, 3), np.uint8)


def instances():
    inst = np.zeros((H, W), np.uint16)
    inst[2:5, 3:9] = 1
    inst[10:14, 20:22] = 2
    return inst


def good_nuclei():
    inst = instances()
    return Nuclei("pannuke", instance_centroids(inst, 2), np.array([1, 5], np.uint8), inst)


def make(**overrides):
    fields = dict(image=image(), provenance=PROV, tissue=np.ones((H, W), np.uint8), tissue_schema="camelyon16",
                  nuclei=good_nuclei(), completion_mask=np.zeros((H, W), bool))
    fields.update(overrides)
    return Sample(**fields)


def test_valid_sample_and_unlabeled_sample():
    assert make().nuclei.as_tuples()[0] == (5.5, 3.0, 1)
    bare = Sample(image(), PROV)
    assert bare.tissue is None and bare.nuclei is None


INVALID = {
    "image float": (dict(image=np.zeros((H, W, 3), np.float32)), "image: expected dtype uint8"),
    "image gray": (dict(image=np.zeros((H, W), np.uint8)), "image: expected 3 dimensions"),
    "image rgba": (dict(image=np.zeros((H, W, 4), np.uint8)), "image: expected 3 RGB channels"),
    "image list": (dict(image=[[0]]), "image: expected a numpy array"),
    "tissue shape": (dict(tissue=np.ones((H, W + 1), np.uint8)), "tissue: shape (24, 33) does not match"),
    "tissue dtype": (dict(tissue=np.ones((H, W), np.int32)), "tissue: expected dtype uint8"),
    "tissue unknown class": (dict(tissue=np.full((H, W), 3, np.uint8)), "ids [3] are not in schema 'camelyon16'"),
    "tissue without schema": (dict(tissue_schema=None), "tissue map and its tissue_schema go together"),
    "tissue schema unknown": (dict(tissue_schema="camelyon17"), "unknown class schema 'camelyon17'"),
    "tissue schema is nuclei": (dict(tissue_schema="pannuke"), "is a nuclei schema, expected a tissue schema"),
    "mask shape": (dict(completion_mask=np.zeros((H - 1, W), bool)), "completion_mask: shape"),
    "mask dtype": (dict(completion_mask=np.zeros((H, W), np.uint8)), "completion_mask: expected dtype bool"),
    "provenance type": (dict(provenance={"source": "x"}), "provenance: expected Provenance"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_samples_name_field_and_origin(case):
    overrides, expected = INVALID[case]
    with pytest.raises(SampleValidationError) as info:
        make(**overrides)
    assert expected in str(info.value)
    if case != "provenance type":
        assert "test:slide-7:x=10,y=20" in str(info.value)


def nuclei_with(**changes):
    n = good_nuclei()
    for k, v in changes.items():
        setattr(n, k, v)
    return n


INVALID_NUCLEI = {
    "centroid outside": (dict(centroids=np.array([[5.5, 3.0], [W + 0.5, 11.5]], np.float32)), "nucleus 1 at (x, y) = [32.5, 11.5] lies outside"),
    "negative centroid": (dict(centroids=np.array([[-1.0, 3.0], [20.5, 11.5]], np.float32)), "nucleus 0"),
    "nan centroid": (dict(centroids=np.array([[np.nan, 3.0], [20.5, 11.5]], np.float32)), "non-finite coordinate"),
    "centroid dtype": (dict(centroids=np.array([[5, 3], [20, 11]], np.int64)), "nuclei.centroids: expected dtype float32"),
    "centroid shape": (dict(centroids=np.zeros((2, 3), np.float32)), "expected shape (n, 2)"),
    "count mismatch": (dict(class_ids=np.array([1], np.uint8)), "2 centroids but 1 class ids"),
    "unknown class": (dict(class_ids=np.array([1, 6], np.uint8)), "ids [6] are not nucleus classes of schema 'pannuke'"),
    "background class": (dict(class_ids=np.array([0, 1], np.uint8)), "ids [0] are not nucleus classes"),
    "schema kind": (dict(schema="camelyon16"), "is a tissue schema, expected a nuclei schema"),
    "instance dtype": (dict(instances=instances().astype(np.int32)), "nuclei.instances: expected dtype uint16"),
    "instance shape": (dict(instances=np.zeros((H, W + 2), np.uint16)), "nuclei.instances: shape"),
    "instance ids gap": (dict(instances=np.where(instances() == 2, 3, instances()).astype(np.uint16)), "instance ids must be exactly 1..2"),
}


@pytest.mark.parametrize("case", list(INVALID_NUCLEI))
def test_invalid_nuclei_are_named(case):
    changes, expected = INVALID_NUCLEI[case]
    with pytest.raises(SampleValidationError, match=None) as info:
        make(nuclei=nuclei_with(**changes))
    assert expected in str(info.value), str(info.value)


def test_centroid_on_last_pixel_is_inside():
    n = Nuclei.from_list("pannuke", [(W - 1, H - 1, 2), (0, 0, 3)])
    sample = make(nuclei=n)
    assert len(sample.nuclei) == 2 and sample.nuclei.instances is None


def test_from_instance_map_relabels_and_computes_exact_centroids():
    labels = np.zeros((H, W), np.int32)
    labels[0:3, 0:3] = 70000  # beyond uint16 originally: relabeled to 1..n
    labels[10:12, 10:16] = 5
    nuclei = Nuclei.from_instance_map("pannuke", labels, {5: 2, 70000: 4})
    assert nuclei.instances.dtype == np.uint16 and set(np.unique(nuclei.instances)) == {0, 1, 2}
    assert nuclei.as_tuples() == [(12.5, 10.5, 2), (1.0, 1.0, 4)]
    assert nuclei.class_map()[11, 12] == 2 and nuclei.class_map()[0, 0] == 4
    with pytest.raises(SampleValidationError, match="has no class"):
        Nuclei.from_instance_map("pannuke", labels, {5: 2})


def test_from_instance_map_without_background_pixels():
    labels = np.full((4, 4), 9, np.int32)
    nuclei = Nuclei.from_instance_map("pannuke", labels, {9: 1})
    assert nuclei.instances.min() == 1 and len(nuclei) == 1


def test_from_list_rejects_out_of_range_class():
    with pytest.raises(SampleValidationError, match="0..255"):
        Nuclei.from_list("pannuke", [(1, 1, 300)])


def test_equals_detects_every_difference():
    a = make()
    assert a.equals(make())
    assert not a.equals(make(tissue=np.full((H, W), 2, np.uint8)))
    assert not a.equals(make(nuclei=None))
    assert not a.equals(make(completion_mask=None))
    assert not a.equals(a.with_provenance(seed=3))
