"""Encoder registry for the benchmark: metadata for every feature extractor, and `load_encoder`.

Importing this package does not import torch: `ENCODERS` holds `EncoderMeta` records (listing is cheap); the
network code is imported by `load_encoder`, `Encoder` and `preprocess` on first use.

    from histosynth.benchmark.encoders import ENCODERS, load_encoder, preprocess
    encoder = load_encoder("effnet-lite0")                   # real ImageNet weights, offline
    feats = encoder.encode(uint8_nhwc_batch)                 # (N, 1280) float32
    x = preprocess(batch, encoder.meta.preprocess); encoder(x)   # the same in two steps
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from histosynth.benchmark.encoders.catalog import BUILTIN_ENCODERS, DEFAULT_ENCODER
from histosynth.benchmark.encoders.meta import EncoderMeta, PreprocessSpec
from histosynth.benchmark.encoders.weights import EncoderWeightsError, resolve_weights, weights_fingerprint
from histosynth.registry import Registry

if TYPE_CHECKING:
    from histosynth.benchmark.encoders.encoder import Encoder, load_encoder
    from histosynth.benchmark.encoders.inputs import preprocess

ENCODERS: Registry[EncoderMeta] = Registry("encoder")
for _meta in BUILTIN_ENCODERS:
    ENCODERS.register(_meta.name, _meta, _meta.summary)
del _meta


def preprocess_groups(names: Iterable[str]) -> dict[PreprocessSpec, list[str]]:
    """Encoder names grouped by their input spec, in first-seen order: preprocess each group's batch once."""
    groups: dict[PreprocessSpec, list[str]] = {}
    for name in names:
        groups.setdefault(ENCODERS.get(name).preprocess, []).append(name)
    return groups


_LAZY = {
    "Encoder": "histosynth.benchmark.encoders.encoder",
    "load_encoder": "histosynth.benchmark.encoders.encoder",
    "preprocess": "histosynth.benchmark.encoders.inputs",
    "as_nchw_uint8": "histosynth.benchmark.encoders.inputs",
}


def __getattr__(name: str) -> Any:
    """Torch-backed names are imported on first access, so importing the registry stays cheap."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ENCODER",
    "ENCODERS",
    "Encoder",
    "EncoderMeta",
    "EncoderWeightsError",
    "PreprocessSpec",
    "as_nchw_uint8",
    "load_encoder",
    "preprocess",
    "preprocess_groups",
    "resolve_weights",
    "weights_fingerprint",
]
