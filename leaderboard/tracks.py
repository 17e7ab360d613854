"""Named benchmark tracks: fixed reference data, suite variant and thread count, built once, scored against by name.

A track is a recipe shipped with histosynth (leaderboard/track_recipes/NAME.yaml) that makes its three reference sets
(train, test, conditions) and scores the reference rows (real-heldout, the real-data ceiling; copy-nearest, the copy
baseline) with the suite. `histosynth bench track build NAME` runs it into the track folder with the track's thread
count and the folder's own reference cache, so the real-data rows every submission is compared with (the
label-consistency segmenter, the real TSTR rows) are computed there, once; `submit --track NAME` scores against the
folder, with the same thread count and a copy of that cache, so the real rows are never recomputed and never differ.

What the data must be: the sets' bytes (recipes' dataset_hash) are written down. For the synthetic and shipped-sample
tracks they are recorded below and a build that makes other bytes is refused; for the real-data tracks they are
recorded in the folder at the first build (hashes.json) and every rebuild, on any machine, is compared with them.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from histosynth.errors import InputError, MissingInputError
from histosynth.registry import Registry

RECIPES = Path(__file__).with_name("track_recipes")
HASHES = "hashes.json"
TRACK_CACHE = "cache"  # the track folder's HISTOSYNTH_CACHE: its reference cache lives in TRACK_CACHE/references


@dataclass(frozen=True)
class Track:
    """A benchmark track: the recipe that builds it, the scale it is built at, where its three reference sets and
    its reference results are in the built folder, the suite variant, the thread count, and the data's bytes."""

    name: str
    summary: str
    recipe: str  # file name under track_recipes/
    sets: Mapping[str, str]  # train, test, conditions -> path in the track folder
    scale: str = "demo"
    variant: str = "demo"
    threads: int = 1
    hashes: Mapping[str, str] = field(default_factory=dict)  # set -> dataset_hash at `scale` ({}: recorded at build)
    inputs: tuple[str, ...] = ()  # recipe inputs the user binds (real data)
    references: str = "results"  # folder of the reference rows' results files

    @property
    def recipe_path(self) -> Path:
        return RECIPES / self.recipe

    def folder(self, root: Path | None = None) -> Path:
        """The track's folder: `root` if given, else tracks/NAME-SCALE under histosynth's cache root."""
        from histosynth.cache_dirs import cache_dir

        return Path(root) if root is not None else cache_dir("tracks") / f"{self.name}-{self.scale}"


SIM = {"train": "data/sim-train", "test": "data/sim-test", "conditions": "data/sim-conditions"}
EMBEDDED = {"train": "data/embedded-train", "test": "data/embedded-test", "conditions": "data/embedded-conditions"}
REAL = {"train": "data/train", "test": "data/test", "conditions": "data/conditions"}

TRACKS: Registry[Track] = Registry("track")
for _track in (
    Track("sim-v1", "the simulator (exact labels), split by slide; 256 / 96 / 64 patches of 64 px", "sim-v1.yaml", SIM,
          hashes={"train": "c0daaf6cb09686cc71200587bf1090908468fcf2dafbb8294ad3f23b2c8d847a",
                  "test": "bafdabfa019384a568c40b9253ad036737e690593ba7fbc33b31d91b7abe3583",
                  "conditions": "803e08985f77e2f5aee9e1190991923f6cdb7e10e2e8ab799b23ff1f6edf841f"}),
    Track("embedded-v1", "the shipped CC0 H&E region (pseudo labels), split by region", "embedded-v1.yaml", EMBEDDED,
          hashes={"train": "e6947d0b68d0fc9d2987c50086373fdebb8ab31d1d13b93cfbb3b702242433a7",
                  "test": "56060e8c5752fcddb4932a6a7364ba96f84f737671e5f00a2d24bae8b85856f9",
                  "conditions": "dd5689ff6ac3bf75c3e0947b632d2315695cbeb18bbe778904d1a8243dc9b1af"}),
    Track("camelyon16-v1", "Camelyon16 training slides (your copy), split by slide", "camelyon16-v1.yaml", REAL,
          inputs=("camelyon16",)),
    Track("panda-v1", "PANDA Karolinska slides (your copy), split by slide", "panda-v1.yaml", REAL, inputs=("panda",)),
):
    TRACKS.register(_track.name, _track, _track.summary)


def get_track(name: str, scale: str | None = None) -> Track:
    """The registered track `name` (unknown names suggest the closest), at `scale` if given: another scale has
    other data, so its recorded hashes do not apply and are recorded in its folder instead."""
    from dataclasses import replace

    track = TRACKS.get(name)
    if scale is not None and scale != track.scale:
        track = replace(track, scale=scale, variant=scale, hashes={})  # each scale scores with its own suite variant
    return track


@contextmanager
def track_settings(track: Track, folder: Path) -> Iterator[None]:
    """The track's thread count and its folder's cache, for the duration of a build (restored after)."""
    import torch

    saved = {k: os.environ.get(k) for k in ("HISTOSYNTH_CACHE", "OMP_NUM_THREADS")}
    threads = torch.get_num_threads()
    os.environ.update(HISTOSYNTH_CACHE=str(folder / TRACK_CACHE), OMP_NUM_THREADS=str(track.threads))
    torch.set_num_threads(track.threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def build_track(track: Track, folder: Path, handlers: Mapping[str, Callable] | None = None,
                inputs: Mapping[str, Path] | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """Build (or finish building) `track` in `folder` and check its data's bytes; returns set -> dataset_hash.
    `handlers` replaces the step functions of some kinds (tests); by default each kind runs its own."""
    from histosynth.recipes.runner import run_recipe
    from histosynth.recipes.spec import load_recipe

    missing = [name for name in track.inputs if name not in (inputs or {})]
    if missing:
        raise InputError(f"track {track.name} is built from your copy of the data: give --input "
                         + " ".join(f"{name}=PATH" for name in missing))
    recipe = load_recipe(track.recipe_path, track.scale, dict(inputs or {}))
    folder.mkdir(parents=True, exist_ok=True)
    with track_settings(track, folder):
        run_recipe(recipe, folder, handlers, log=log)
    return check_hashes(track, folder)


def set_hashes(track: Track, folder: Path) -> dict[str, str]:
    """dataset_hash of each of the track's sets in `folder`."""
    from histosynth.recipes.steps import dataset_hash

    return {name: dataset_hash(folder / path) for name, path in track.sets.items()}


def check_hashes(track: Track, folder: Path) -> dict[str, str]:
    """The sets' hashes, refused when they differ from the recorded ones (the track's, else the folder's first)."""
    found = set_hashes(track, folder)
    recorded = dict(track.hashes)
    record_file = folder / HASHES
    if not recorded and record_file.is_file():
        recorded = json.loads(record_file.read_text(encoding="utf-8"))
    if not recorded:
        from histosynth.atomic import write_text_atomic

        write_text_atomic(record_file, json.dumps(found, indent=1, sort_keys=True) + "\n")
        return found
    wrong = [name for name in found if recorded.get(name) != found[name]]
    if wrong:
        details = "; ".join(f"{name}: {found[name][:12]} (recorded {str(recorded.get(name))[:12]})" for name in wrong)
        raise InputError(f"track {track.name} in {folder}: the data is not the track's ({details}); the sets must be "
                         "byte-identical for results to share columns (another data version, source code or input?)")
    return found


@dataclass(frozen=True)
class BuiltTrack:
    """A built track's folders: the three reference sets, the reference results and the reference cache."""

    track: Track
    folder: Path

    @property
    def train(self) -> Path:
        return self.folder / self.track.sets["train"]

    @property
    def test(self) -> Path:
        return self.folder / self.track.sets["test"]

    @property
    def conditions(self) -> Path:
        return self.folder / self.track.sets["conditions"]

    @property
    def reference_cache(self) -> Path:
        return self.folder / TRACK_CACHE / "references"

    @property
    def references(self) -> Path:
        return self.folder / self.track.references


def open_track(track: Track, folder: Path | None = None) -> BuiltTrack:
    """The built track in `folder` (default: its cache folder), checked; a missing one says how to build it."""
    root = track.folder(folder)
    done = all((root / path).is_dir() for path in track.sets.values()) and (root / track.references).is_dir()
    if not done:
        inputs = " ".join(f"--input {name}=PATH" for name in track.inputs)
        raise MissingInputError(f"track {track.name} is not built in {root}: build it first with `histosynth bench "
                                f"track build {track.name}{' ' + inputs if inputs else ''}"
                                f"{'' if folder is None else f' --out {root}'}` (minutes; once per machine)")
    check_hashes(track, root)
    return BuiltTrack(track, root)


def describe(track: Track) -> dict[str, Any]:
    """What `histosynth ls tracks` and the docs say of a track."""
    return {"name": track.name, "summary": track.summary, "scale": track.scale, "variant": track.variant,
            "threads": track.threads, "inputs": list(track.inputs), "hashes": dict(track.hashes) or "recorded at build"}
