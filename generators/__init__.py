"""histosynth.generators: generators behind one contract (see base.py) and a torch-free registry.

    from histosynth.generators import GENERATORS, build_generator, generator_meta, load_generator
    gen = build_generator("htd", "tiny"); gen.train(dataset_dir, out=ckpt); gen.sample(conditions, seed=0)

`build_generator` and `load_generator` import model code (torch, diffusers) only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from histosynth.deprecated import replaced_names
from histosynth.errors import InputError
from histosynth.generators import registry
from histosynth.generators.base import Generator, GeneratorMeta, derive_seed, weights_hash
from histosynth.generators.registry import GENERATORS, generator_class, generator_meta


def build_generator(name: str, preset: str = "tiny", **overrides: Any) -> Generator:
    """An untrained registered generator from a preset (`tiny`, `demo`, `paper`)."""
    return generator_class(name).build(preset, **overrides)


def load_generator(path: Path | str, device: str | None = None) -> Generator:
    """Load a saved generator folder, whichever registered generator wrote it (read from its config.json)."""
    from histosynth.generators.base import CheckpointError, read_json_file

    config = Path(path) / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path}: no config.json; not a saved histosynth generator folder")
    name = read_json_file(config).get("generator")
    if not name:
        raise InputError(f"{config}: no 'generator' field; not written by a histosynth generator")
    return generator_class(name).load(path, device=device)


__all__ = ["GENERATORS", "Generator", "GeneratorMeta", "build_generator", "derive_seed", "generator_class",
           "generator_meta", "load_generator", "weights_hash"]

__getattr__ = replaced_names(__name__, {"GENERATOR_META": ("GENERATORS (a Registry of GeneratorMeta) or generator_meta(name)",
                                                           registry._MetaMapping)})
