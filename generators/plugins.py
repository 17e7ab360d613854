"""Generators from outside the repository: packages that declare an entry point in the `histosynth.generators` group.

A plugin package declares, in its pyproject.toml,

    [project.entry-points."histosynth.generators"]
    my-gan = "my_package.meta:META"      # a GeneratorMeta whose target is "my_package.model:MyGAN"

and `histosynth train|generate|ls` find it once it is installed (or once a folder holding the package and its
.dist-info is on PYTHONPATH, which is how the leaderboard runs a submitted folder). Loading a plugin imports its
code, so only those commands call `load_plugins`; the leaderboard's scorer never does (it runs submissions in
a sandboxed child process: histosynth.leaderboard.sandbox).

`python -m histosynth.generators.plugins NAME` prints a registered generator's metadata as JSON (the scorer asks
the sandboxed child this way, without importing the plugin itself).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from importlib.metadata import entry_points

from histosynth.errors import InputError
from histosynth.generators.base import GeneratorMeta
from histosynth.generators.registry import GENERATORS, generator_meta, register_generator

ENTRY_POINT_GROUP = "histosynth.generators"


def load_plugins() -> list[str]:
    """Register every installed plugin generator not registered yet; returns the names added.

    An entry point must resolve to a GeneratorMeta whose name is the entry point's name; a broken plugin raises
    InputError naming its entry point and distribution.
    """
    added = []
    for point in entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {point.name!r} = {point.value!r} ({point.dist.name if point.dist else 'unknown package'})"
        if point.name in GENERATORS:
            continue
        try:
            meta = point.load()
        except Exception as err:  # any import error of foreign code is reported, not raised raw
            raise InputError(f"generator plugin {where} failed to load: {type(err).__name__}: {err}") from err
        if not isinstance(meta, GeneratorMeta):
            raise InputError(f"generator plugin {where} is a {type(meta).__name__}, not a GeneratorMeta")
        if meta.name != point.name:
            raise InputError(f"generator plugin {where} names its generator {meta.name!r}; they must agree")
        register_generator(meta)
        added.append(meta.name)
    return added


def main(argv: list[str]) -> int:
    """Print the metadata of generator argv[0] (plugins included) as JSON."""
    load_plugins()
    print(json.dumps(asdict(generator_meta(argv[0]))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
