"""Sources of patches: real slides and datasets, the embedded CC0 sample and the simulator.

Entries are lazy so that `histosynth ls sources` imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from histosynth.registry import Registry
from histosynth.sources.base import Source, construct

SOURCES: Registry[type[Source]] = Registry("source")
SOURCES.register("embedded", "histosynth.sources.embedded:EmbeddedSource",
                 "CMU-1-Small-Region, a real CC0 H&E region shipped with histosynth (20x, ~0.5 um/px)")
SOURCES.register("simulator", "histosynth.sources.simulator:SimulatorSource",
                 "procedural H&E-like tissue with exact tissue maps, nuclei instances and classed centroids")


def build_source(name: str, **options: Any) -> Source:
    """Instantiate the registered source `name` with the options its constructor accepts."""
    return construct(SOURCES.get(name), options)
