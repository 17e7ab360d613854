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
SOURCES.register("pannuke", "histosynth.sources.pannuke:PanNukeSource",
                 "PanNuke .npy folds: 256 px patches with classed nuclei instances (CC BY-NC-SA 4.0)")
SOURCES.register("lizard", "histosynth.sources.lizard:LizardSource",
                 "Lizard colon images + .mat instance labels, 6 nuclei classes, 20x (CC BY-NC-SA 4.0)")
SOURCES.register("consep", "histosynth.sources.consep:ConsepSource",
                 "CoNSeP 1000 px tiles + .mat labels, 7 or 4 (classes=consep-4) nuclei classes, 40x")
SOURCES.register("monusac", "histosynth.sources.monusac:MonusacSource",
                 "MoNuSAC images + Aperio XML polygons, 4 nuclei classes, 40x (CC BY-NC-SA 4.0)")
SOURCES.register("camelyon16", "histosynth.sources.camelyon16:Camelyon16Source",
                 "Camelyon16 WSIs + ASAP XML tiled at an mpp: normal/tumor/ignore tissue maps (CC0)")
SOURCES.register("panda", "histosynth.sources.panda:PandaSource",
                 "PANDA WSIs + red-channel label masks tiled at an mpp, Radboud/Karolinska schemas (CC BY-NC-SA 4.0)")
SOURCES.register("folder", "histosynth.sources.folder:FolderSource",
                 "a folder of png/jpg/tif images, optionally with uint8 tissue-id masks of a chosen schema")
