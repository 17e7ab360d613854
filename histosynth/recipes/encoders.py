"""The encoder a pipeline gives the pseudo-labeler, loaded once per process (the labels layer does not load
encoders: the benchmark does, and a caller passes the loaded one in)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from histosynth.benchmark.encoders import Encoder


@lru_cache(maxsize=4)
def pseudolabel_encoder(name: str) -> Encoder:
    """The registered encoder `name`, loaded once per process (`demo` and a recipe label several sets with it)."""
    from histosynth.benchmark.encoders import load_encoder

    return load_encoder(name)
