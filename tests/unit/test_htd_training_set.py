"""Training arrays of a tissue-conditioned generator: the 20-80% rule from histosynth.labels, and memory-mapped spills that are reused or rebuilt."""

import numpy as np
import pytest

from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.generators.arrays import SPILL_MANIFEST, load_training_arrays
from histosynth.schema import Provenance, Sample
from histosynth.sources import build_source


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "sim"
    write_dataset(build_source("simulator", n=5, size=32, seed=3, mpp=4.0), out, CardInfo("sim", "test"))
    return out


def test_training_set_keeps_patches_by_the_labels_20_80_rule_on_tissue_pixels():
    image = np.full((16, 16, 3), 200, np.uint8)

    def sample(rows_of_2: int, glass_rows: int = 0) -> Sample:
        tissue = np.ones((16, 16), np.uint8)
        tissue[:rows_of_2] = 2
        tissue[16 - glass_rows :] = 0
        return Sample(image=image, provenance=Provenance("test"), tissue=tissue, tissue_schema="simulator-tissue")

    kept = load_training_arrays([sample(0), sample(5), sample(1), sample(0, glass_rows=6)], 16, ("tissue",), (0.2, 0.8))
    assert len(kept) == 1 and kept.dropped == 3  # 100/0, 69/31 kept, 94/6, and tissue + glass is one class
    assert np.array_equal(kept.tissue[0], sample(5).tissue)


def test_spilled_training_set_equals_the_in_memory_one_and_is_memory_mapped(folder, tmp_path):
    in_memory = load_training_arrays(folder, 16, ("tissue", "crops"), None)
    spilled = load_training_arrays(folder, 16, ("tissue", "crops"), None, spill_dir=tmp_path / "arrays")
    assert isinstance(spilled.images, np.memmap) and isinstance(spilled.tissue, np.memmap)
    assert np.array_equal(spilled.images, in_memory.images) and np.array_equal(spilled.tissue, in_memory.tissue)
    assert (spilled.tissue_schema, spilled.description, spilled.dropped) == (
        in_memory.tissue_schema, in_memory.description, in_memory.dropped)
    assert not spilled.images.flags.writeable


def test_a_spill_is_reused_for_the_same_data_and_rebuilt_for_other_settings(folder, tmp_path):
    spill = tmp_path / "arrays"
    load_training_arrays(folder, 16, ("tissue", "crops"), None, spill_dir=spill)
    written = (spill / SPILL_MANIFEST).stat().st_mtime_ns, (spill / "images.u8").stat().st_ino
    again = load_training_arrays(folder, 16, ("tissue", "crops"), None, spill_dir=spill)
    assert ((spill / SPILL_MANIFEST).stat().st_mtime_ns, (spill / "images.u8").stat().st_ino) == written
    assert again.images.shape == (5, 16, 16, 3)
    bigger = load_training_arrays(folder, 32, ("tissue", "crops"), None, spill_dir=spill)
    assert bigger.images.shape == (5, 32, 32, 3) and (spill / "images.u8").stat().st_size == 5 * 32 * 32 * 3


def test_a_failed_spill_leaves_nothing_behind(tmp_path):
    image = np.zeros((16, 16, 3), np.uint8)
    good = Sample(image=image, provenance=Provenance("test"), tissue=np.ones((16, 16), np.uint8),
                  tissue_schema="simulator-tissue")
    no_map = Sample(image=image, provenance=Provenance("test"))
    with pytest.raises(ValueError, match="training sample 1 .*has no tissue map"):
        load_training_arrays([good, no_map], 16, ("tissue",), None, spill_dir=tmp_path / "arrays")
    assert list(tmp_path.iterdir()) == []
