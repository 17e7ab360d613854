"""The segmenters' precision option: the downstream models (TrainConfig.mixed_precision) and the label-consistency
segmenter (train_segmenter(mixed_precision=...)) train in bf16 autocast when asked; fp32 stays the default, and its
checkpoint keys, cache keys and results settings are the ones written before the option existed."""

import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from histosynth.errors import InputError


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Bytes depend on the thread count: every run here uses one."""


@pytest.fixture(scope="module")
def simulator(tmp_path_factory):
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    root = tmp_path_factory.mktemp("precision")
    write_dataset(build_source("simulator", n=3, size=64, seed=4, mpp=0.5), root / "sim", CardInfo("sim", "s"))
    return root / "sim"


def _old_fingerprint(kind, data, preset, config, num_classes, seed, weights) -> str:
    """The key as it was computed before TrainConfig had a precision (asdict of the other fields)."""
    fields = {k: v for k, v in asdict(config).items() if k != "mixed_precision"}
    key = {"model": kind.model, "data": data.ref.content_hash, "schema": data.schema, "preset": preset,
           "config": fields, "classes": num_classes, "seed": seed, "weights": weights}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def test_fp32_is_the_default_and_keeps_the_downstream_keys_and_results_settings(simulator):
    from histosynth.benchmark.downstream.data import load_set
    from histosynth.benchmark.downstream.kinds import kind_of, train_config
    from histosynth.benchmark.downstream.training import _fingerprint
    from histosynth.classes import get_schema

    data = load_set(simulator, "train", "tissue")
    kind, k = kind_of("deeplabv3plus"), get_schema(data.schema).num_classes
    fp32 = train_config("tiny", steps=2)
    bf16 = train_config("tiny", steps=2, mixed_precision="bf16")
    assert fp32.mixed_precision == "no" and "mixed_precision" not in fp32.record()
    assert bf16.record() == fp32.record() | {"mixed_precision": "bf16"}
    assert _fingerprint(kind, data, "tiny", fp32, k, 0, None) == _old_fingerprint(kind, data, "tiny", fp32, k, 0, None)
    assert _fingerprint(kind, data, "tiny", bf16, k, 0, None) != _fingerprint(kind, data, "tiny", fp32, k, 0, None)
    with pytest.raises(InputError, match="--mixed-precision must be one of auto, no, bf16, fp16, got 'fp8'"):
        train_config("tiny", mixed_precision="fp8").check()


@pytest.mark.parametrize("model", ["deeplabv3plus", "hovernet"])
def test_a_downstream_model_trains_in_bf16_when_asked_and_in_fp32_by_default(simulator, model):
    from histosynth.benchmark.downstream.data import load_set
    from histosynth.benchmark.downstream.kinds import kind_of
    from histosynth.benchmark.downstream.training import train_model
    from histosynth.classes import get_schema

    kind = kind_of(model)
    data = load_set(simulator, "train", kind.label)
    k = get_schema(data.schema).num_classes
    config = kind.config("tiny", steps=2, batch_size=2)
    fp32 = train_model(kind, data, k, "tiny", config, seed=0)
    bf16 = train_model(kind, data, k, "tiny", kind.config("tiny", steps=2, batch_size=2, mixed_precision="bf16"), 0)
    assert (fp32.precision, bf16.precision) == ("no", "bf16")
    assert len(bf16.losses) == 2 and all(np.isfinite(bf16.losses)) and len(bf16.step_seconds) == 2
    assert bf16.losses[0] != fp32.losses[0]  # the forward ran in bf16
    assert abs(bf16.losses[0] - fp32.losses[0]) < 0.05 * abs(fp32.losses[0])  # ... on the same batch and weights
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # autocast: the weights stay fp32


def test_the_label_consistency_segmenter_trains_in_bf16_under_its_own_cache_key(tmp_path):
    from histosynth.benchmark.segmenter import _cache_key, train_segmenter

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    maps = rng.integers(0, 3, (8, 32, 32)).astype(np.uint8)
    options = dict(steps=2, batch_size=2, pretrained=False)
    fp32 = train_segmenter(images, maps, 3, **options, cache=tmp_path)
    bf16 = train_segmenter(images, maps, 3, **options, cache=tmp_path, mixed_precision="bf16")
    assert (fp32.precision, bf16.precision) == ("no", "bf16")
    assert all(np.isfinite(bf16.losses)) and bf16.losses != fp32.losses
    old_settings = {"num_classes": 3, "steps": 2, "batch_size": 2, "lr": 1e-3, "seed": 0, "pretrained": False,
                    "weights": None, "augment": True}  # the cache key's settings before the option existed
    fp32_key = _cache_key(images, maps, old_settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32_key, _cache_key(images, maps, old_settings | {
        "mixed_precision": "bf16"})])
    with pytest.raises(ValueError, match="unknown mixed_precision 'half'"):
        train_segmenter(images, maps, 3, **options, mixed_precision="half")
