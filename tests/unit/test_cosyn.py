"""CoSyn-style joint image + label synthesis: schedules, targets, decoding, class remap, learning to follow
the centroid condition, dataset round trip and the CLI. The registry-wide contract runs in test_generators_contract.py
(`-k cosyn`)."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

import histosynth.cli as cli
from histosynth.benchmark.downstream.hover_targets import hover_targets
from histosynth.classes import get_schema, remap_ids
from histosynth.data_cards.card import CardInfo
from histosynth.disk import iter_samples, write_dataset
from histosynth.generators import build_generator, load_generator
from histosynth.generators.arrays import rotate_flip_centroids
from histosynth.generators.cosyn.context import NULL_CONTEXT, context_ids
from histosynth.generators.cosyn.data import augment_pairs, joint_labels, layout_of, rotate_flip
from histosynth.generators.cosyn.decode import consistency, consistency_of, decode_nuclei
from histosynth.generators.cosyn.schedules import GroupedScheduler, image_scheduler, label_scheduler
from histosynth.generators.diffusion.sampling import denoise, make_sampler
from histosynth.rows import row_to_sample
from histosynth.schema import Nuclei, Sample
from histosynth.sources import build_source

MPP = 0.5  # HoVer-Net's watershed is made for 0.25-0.5 um/px: its fixed 5x5 marker opening erases most nuclei at 1


@pytest.fixture(scope="module")
def data():
    """Simulator patches at 32 px and 0.5 um/px, three times the default nucleus density (~4 nuclei a patch)."""
    return list(build_source("simulator", n=48, size=32, seed=0, mpp=MPP, nuclei_density=3.0))


@pytest.fixture(scope="module")
def held_out():
    return list(build_source("simulator", n=12, size=32, seed=1, mpp=MPP, nuclei_density=3.0))


# ---------------------------------------------------------------------------------------------- schedules


def test_label_schedule_is_the_image_cosine_with_snr_scaled_by_shift_squared():
    image = image_scheduler(1000, "epsilon")
    a = image.alphas_cumprod.double()
    assert torch.allclose(label_scheduler(image, 1.0).alphas_cumprod.double(), a, rtol=1e-5)
    labels = label_scheduler(image, 0.5).alphas_cumprod.double()
    inside = (a > 1e-3) & (a < 1 - 1e-3)  # away from 0 and 1, where SNR's float32 rounding blows up
    ratio = (labels / (1 - labels) / (a / (1 - a)))[inside]
    # alphas are float32 cumulative products of 1000 factors: relative error <= 1000 * 2^-24 ~ 6e-5 each
    assert torch.allclose(ratio, torch.full_like(ratio, 0.25), rtol=1e-3)
    assert bool((labels <= a + 1e-7).all())  # labels are never less noisy than the image at the same t


def test_grouped_scheduler_with_equal_schedules_is_the_plain_sampler():
    image = image_scheduler(1000, "sample")
    same = label_scheduler(image, 1.0)
    noise = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0))

    def model(x, t):  # any deterministic function of (x, t) serves
        return torch.tanh(x * 0.5) * (1 + t.float() / 1000)

    plain = denoise(model, noise, make_sampler("ddim", image.config), steps=5)
    grouped = denoise(model, noise, GroupedScheduler("ddim", [image, same], [3, 2]), steps=5)
    assert torch.allclose(plain, grouped, atol=1e-5)  # same formula per channel; label betas pass through float64
    assert isinstance(make_sampler("ddim", image.config), DDIMScheduler)


# ---------------------------------------------------------------------------------------------- targets and decoding


def _discs(size: int, centers: list[tuple[int, int]], radius: int) -> np.ndarray:
    rows, cols = np.indices((size, size))
    instances = np.zeros((size, size), np.uint16)
    for k, (x, y) in enumerate(centers, start=1):
        instances[(rows - y) ** 2 + (cols - x) ** 2 <= radius**2] = k
    return instances


def test_joint_labels_are_the_class_one_hot_and_hover_maps():
    instances = _discs(32, [(8, 8), (22, 20)], 4)
    classes = np.array([2, 5], np.uint8)
    labels = joint_labels(instances, classes, 6)
    assert labels.shape == (8, 32, 32) and labels.min() >= -1 and labels.max() <= 1
    onehot = (labels[:6] + 1) / 2
    assert np.array_equal(onehot.argmax(0), np.array([0, 2, 5])[instances]) and np.allclose(onehot.sum(0), 1)
    assert np.array_equal(labels[6:], hover_targets(instances, np.ones(2, np.uint8)).hv)


def test_decode_recovers_known_instances_and_classes_from_perfect_maps():
    centers = [(10, 10), (30, 12), (50, 9), (12, 40), (34, 36), (52, 52), (20, 56)]
    instances = _discs(64, centers, 5)
    classes = np.array([1, 2, 3, 4, 5, 1, 3], np.uint8)
    decoded = decode_nuclei(joint_labels(instances, classes, 6), "pannuke", MPP)
    decoded.validate("decoded", 64, 64)
    # the watershed numbers nuclei in its own (marker scan) order: match each decoded id to the true id it covers
    truth_of = np.zeros(len(decoded) + 1, np.int64)
    truth_of[decoded.instances.ravel()] = instances.ravel()
    assert sorted(truth_of[1:]) == list(range(1, 8))  # one decoded nucleus per true one
    assert np.array_equal(truth_of[decoded.instances], instances)  # pixel for pixel
    assert np.array_equal(decoded.class_ids, classes[truth_of[1:] - 1])
    assert np.allclose(decoded.centroids, np.array(centers, np.float32)[truth_of[1:] - 1])  # discs: centroid = center


def test_decoded_simulator_nuclei_are_each_exactly_one_true_nucleus():
    """On perfect maps the watershed may miss a nucleus (a thin one whose marker the fixed 5x5 opening erases), but
    every nucleus it returns is one true nucleus, pixel for pixel, with its class: no merges, splits or inventions."""
    found = 0
    for sample in build_source("simulator", n=4, size=96, seed=2, mpp=MPP):
        truth = sample.nuclei
        decoded = decode_nuclei(joint_labels(truth.instances, truth.class_ids, 6), "pannuke", MPP)
        for k in range(1, len(decoded) + 1):
            mask = decoded.instances == k
            ids = np.unique(truth.instances[mask])
            assert len(ids) == 1 and ids[0] > 0 and np.array_equal(truth.instances == ids[0], mask)
            assert decoded.class_ids[k - 1] == truth.class_ids[ids[0] - 1]
        found += len(decoded)
    assert found > 0


def test_consistency_counts_honored_centroids_classes_and_spurious_nuclei():
    instances = _discs(32, [(8, 8), (22, 20)], 3)
    generated = Nuclei("pannuke", np.array([[8, 8], [22, 20]], np.float32), np.array([1, 2], np.uint8), instances)
    # centroid 0 inside nucleus 1 (right class), centroid 1 2 px off nucleus 2's edge (wrong class), 2 nowhere near
    condition = Nuclei("pannuke", np.array([[8, 9], [26, 22], [30, 2]], np.float32), np.array([1, 3, 4], np.uint8))
    strict = consistency(condition, generated, 32, 32, tolerance_px=0)
    assert (strict.centroids, strict.honored, strict.same_class, strict.generated, strict.spurious) == (3, 1, 1, 2, 1)
    loose = consistency(condition, generated, 32, 32, tolerance_px=2)
    assert (loose.honored, loose.same_class, loose.spurious) == (2, 1, 0)
    assert loose.share == pytest.approx(2 / 3) and loose.class_share == pytest.approx(1 / 3)


def test_augmentation_moves_image_instances_and_centroids_together(data):
    images = np.stack([s.image for s in data[:8]])
    instances = np.stack([s.nuclei.instances for s in data[:8]])
    turned, moved = augment_pairs(images, instances, np.random.default_rng(3))
    for j in range(8):
        k, flip = next((k, f) for k in range(4) for f in (False, True)
                       if np.array_equal(moved[j], rotate_flip(instances[j], k, f)))
        assert np.array_equal(turned[j], rotate_flip(images[j], k, flip))
        # the condition's centroids are those of the moved map: the original centroids under the same transform
        expected = rotate_flip_centroids(data[j].nuclei.centroids, k, flip, 32)
        assert np.allclose(layout_of(moved[j], data[j].nuclei.class_ids).centroids, expected, atol=1e-4)


# ---------------------------------------------------------------------------------------------- class schemas


def test_cosyn_and_pannuke_ids_remap_by_class_name_both_ways():
    cosyn, pannuke = get_schema("cosyn-pannuke"), get_schema("pannuke")
    ids = np.arange(6, dtype=np.uint8)
    there = remap_ids(ids, "cosyn-pannuke", "pannuke")
    assert [pannuke.names[i] for i in there] == cosyn.names  # same class, whatever the number
    assert np.array_equal(remap_ids(there, "pannuke", "cosyn-pannuke"), ids)
    assert remap_ids(np.array([255], np.uint8), "cosyn-pannuke", "pannuke")[0] == 255


# ---------------------------------------------------------------------------------------------- the generator


def test_context_comes_from_the_tissue_name_and_unknown_is_null(data):
    named = [replace(s, provenance=replace(s.provenance, slide_id=name)) for s, name in
             zip(data[:3], ["Breast/fold1/0", "Colon/fold2/5", "Moon/fold1/1"], strict=True)]
    assert context_ids(named, ("Breast", "Colon")).tolist() == [1, 2, NULL_CONTEXT]


def test_context_guidance_changes_samples_and_guidance_one_is_the_conditional_model(data):
    named = [replace(s, provenance=replace(s.provenance, slide_id=["Breast/f/0", "Colon/f/1"][i % 2]))
             for i, s in enumerate(data[:8])]
    gen = build_generator("cosyn", "tiny", contexts=("Breast", "Colon"))
    gen.train(named, {"steps": 2})
    assert gen.unet.class_embedding.num_embeddings == 3
    guided = gen.sample(named[:2], seed=0, guidance=2.0)
    plain = gen.sample(named[:2], seed=0, guidance=1.0)
    assert not np.array_equal(guided[0].image, plain[0].image)
    unknown = [replace(s, provenance=replace(s.provenance, slide_id=None)) for s in named[:2]]
    # a null context makes the conditional and the unconditional branch the same: guidance has nothing to add
    a, b = gen.sample(unknown, seed=0, guidance=2.0), gen.sample(unknown, seed=0, guidance=1.0)
    assert np.abs(a[0].image.astype(int) - b[0].image.astype(int)).max() <= 1  # float order of uncond + w (c - u)


def test_conditions_in_another_schema_are_refused_until_remapped(data):
    gen = build_generator("cosyn", "tiny")
    gen.train(data[:4], {"steps": 1})
    cosyn_ids = [replace(s, nuclei=Nuclei("cosyn-pannuke", s.nuclei.centroids,
                                          remap_ids(s.nuclei.class_ids, "pannuke", "cosyn-pannuke")))
                 for s in data[:2]]
    with pytest.raises(ValueError, match="remap"):
        gen.sample(cosyn_ids, seed=0)
    back = [replace(s, nuclei=Nuclei("pannuke", s.nuclei.centroids,
                                     remap_ids(s.nuclei.class_ids, "cosyn-pannuke", "pannuke"))) for s in cosyn_ids]
    assert len(gen.sample(back, seed=0)) == 2


def test_training_needs_instance_maps(data):
    centroids_only = [replace(s, nuclei=Nuclei(s.nuclei.schema, s.nuclei.centroids, s.nuclei.class_ids))
                      for s in data[:2]]
    with pytest.raises(ValueError, match="no nuclei instance map"):
        build_generator("cosyn", "tiny").train(centroids_only, {"steps": 1})


def _shuffled(samples: list[Sample], seed: int) -> list[Sample]:
    """The same classes at uniformly random places: a layout the outputs were not made for."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        xy = rng.uniform(0, s.width - 1, size=s.nuclei.centroids.shape).astype(np.float32)
        out.append(replace(s, nuclei=Nuclei(s.nuclei.schema, xy, s.nuclei.class_ids)))
    return out


@pytest.mark.slow  # 150 steps of 8 patches: ~170 s of CPU time on the 2-core machine (pytest --durations)
def test_short_training_learns_to_place_nuclei_at_the_conditioning_centroids(data, held_out):
    untrained = build_generator("cosyn", "tiny", block_out_channels=(16, 32), num_classes=6, nuclei_schema="pannuke")
    before = untrained.sample(held_out, seed=0, steps=10)
    gen = build_generator("cosyn", "tiny", block_out_channels=(16, 32))
    gen.train(data, {"steps": 150, "batch_size": 8, "lr": 2e-3, "ema_decay": None})
    after = gen.sample(held_out, seed=0, steps=10)
    trained = gen.last_consistency
    random_places = consistency_of(_shuffled(held_out, 0), after, gen.preset.model.consistency_tolerance_px)
    untrained_share = consistency_of(held_out, before, gen.preset.model.consistency_tolerance_px).share
    assert trained.centroids == random_places.centroids > 20
    assert trained.share > max(random_places.share, untrained_share if np.isfinite(untrained_share) else 0.0)


# ---------------------------------------------------------------------------------------------- datasets and CLI


def test_cli_trains_and_generates_rows_that_round_trip_through_load_dataset(data, tmp_path, capsys):
    folder, ckpt, out = tmp_path / "data", tmp_path / "ckpt", tmp_path / "generated"
    write_dataset(data[:6], folder, CardInfo("simulator", "six simulator patches with nuclei instances"))
    assert cli.main(["train", "cosyn", "--data", str(folder), "--preset", "tiny", "--out", str(ckpt),
                     "--steps", "2", "--batch-size", "2"]) == 0
    gen = load_generator(ckpt)
    assert "HoVer-Net's marker-controlled watershed" in (ckpt / "README.md").read_text()
    assert cli.main(["generate", "cosyn", "--checkpoint", str(ckpt), "--conditions", str(folder), "--n", "4",
                     "--chunk-size", "2", "--out", str(out)]) == 0
    written = list(iter_samples(out))
    rows = [row_to_sample(r) for r in datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-datasets"))]
    assert len(written) == len(rows) == 4 and all(a.equals(b) for a, b in zip(rows, written, strict=True))
    # the same batches as the job's chunks of 2: a batch of 4 may round one pixel differently (oneDNN picks its
    # convolution algorithm by batch size; the float sums differ by ulps)
    direct = gen.sample(data[:4], seed=[s.provenance.seed for s in written], batch_size=2)
    for row, same in zip(rows, direct, strict=True):
        assert row.nuclei is not None and row.nuclei.instances is not None and row.tissue is None
        assert row.provenance.generator == "cosyn" and row.provenance.checkpoint_hash == gen.checkpoint_hash
        assert row.equals(same)  # the dataset holds exactly what the model makes for that seed


@pytest.mark.slow  # ~160 s of CPU time on the 2-core machine (a 256 px UNet of widths 128-512, one step + 2 sampler steps)
def test_paper_preset_builds_at_cosyn_sizes_trains_a_step_and_samples_at_batch_one():
    patches = list(build_source("simulator", n=2, size=256, seed=0, mpp=MPP))
    gen = build_generator("cosyn", "paper")
    model = gen.preset.model
    assert (model.resolution, model.num_classes, gen.preset.train.batch_size, gen.preset.train.steps) == (256, 6, 7, 300_000)
    assert gen.default_options().steps == 1000 and gen.default_options().guidance == 2.0
    assert gen.unet.config.in_channels == 3 + 6 + 2 + 6 and gen.unet.config.out_channels == 11
    # fp16 (the preset's, as CoSyn trains) needs CUDA; on the CPU, and in a process whose accelerate state an earlier
    # test fixed at "no", the step runs in full precision
    report = gen.train(patches, {"steps": 1, "batch_size": 1, "progress": False, "mixed_precision": "no"})
    assert np.isfinite(report.losses).all()
    out = gen.sample(patches[:1], seed=0, steps=2, batch_size=1)[0]
    out.validate()
    assert out.image.shape == (256, 256, 3) and out.nuclei is not None


@pytest.mark.slow
def test_cli_compile_option_trains_through_torch_compile_and_records_it(data, tmp_path):
    folder, ckpt = tmp_path / "data", tmp_path / "ckpt"
    write_dataset(data[:6], folder, CardInfo("simulator", "six simulator patches with nuclei instances"))
    command = [str(Path(sys.executable).parent / "histosynth"), "train", "cosyn", "--data", str(folder), "--preset",
               "tiny", "--out", str(ckpt), "--steps", "3", "--batch-size", "2", "--compile"]
    # its own process, as a user's run is (inductor's setuptools import fails in a process where other tests left the
    # standard library's distutils imported)
    done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    speed = json.loads((ckpt / "config.json").read_text())["training"]["extra"]["speed"]
    assert speed["compiled"] is True
    assert load_generator(ckpt).sample(data[:1], seed=[0])[0].image.shape == data[0].image.shape  # samples eager
