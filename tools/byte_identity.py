"""Fingerprints of what a refactor must not change: every registered generator's tiny train + load + sample, and
every suite task's results on tiny data. Run it on two trees and compare the JSON files:

    python tools/byte_identity.py --out before.json          # on the old tree
    python tools/byte_identity.py --out after.json           # on the new tree
    python tools/byte_identity.py --compare before.json after.json

Weights are hashed as the saved model folder's checkpoint hash, samples as the SHA-256 of their pixels and label
arrays, results files with run ids, commits and timings left out. Run both sides with the same thread count
(OMP_NUM_THREADS=1 is set here) on the same machine: floating-point results may differ across CPUs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOLATILE = {"run_id", "wall_time_s", "train_seconds", "git_commit", "created", "timestamp"}


def _array_hash(*arrays) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def _sample_hash(sample) -> str:
    nuclei = sample.nuclei
    return _array_hash(sample.image, sample.tissue, None if nuclei is None else nuclei.instances,
                       None if nuclei is None or nuclei.centroids is None else nuclei.centroids)


def generators(root: Path, names: list[str] | None) -> dict[str, dict[str, object]]:
    """name -> checkpoint hash, training losses and sample hashes of a tiny 2-step run."""
    import torch

    from histosynth.generators import GENERATORS, build_generator, generator_meta, load_generator
    from histosynth.masks import with_heldout_masks
    from histosynth.sources import build_source

    torch.set_num_threads(1)
    data = list(build_source("simulator", n=6, size=32, seed=0, mpp=4.0))
    prints: dict[str, dict[str, object]] = {}
    for name in names or list(GENERATORS):
        meta = generator_meta(name)
        gen = build_generator(name, "tiny")
        report = gen.train(data, {"steps": 2}, out=root / name)
        loaded = load_generator(root / name)
        conditions = list(with_heldout_masks(data[:3])) if "mask" in meta.conditioning else data[:3]
        options = {} if "synthesis" in meta.tasks else {"task": "completion"}
        outputs = loaded.sample(conditions, seed=7, **options)
        prints[name] = {"checkpoint_hash": gen.checkpoint_hash, "losses": [float(x) for x in report.losses],
                        "samples": [_sample_hash(s) for s in outputs]}
        print(f"{name}: {gen.checkpoint_hash}", file=sys.stderr)
    return prints


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def suite(root: Path) -> dict[str, object]:
    """results file name -> its contents without volatile fields, for a tiny suite run of every task."""
    import numpy as np

    from histosynth.benchmark.suite import VARIANTS, Outputs, References, run_suite
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.masks import with_heldout_masks
    from histosynth.sources import build_source

    data = root / "data"
    for name, seed in (("train", 1), ("test", 2), ("fake", 3)):
        write_dataset(build_source("simulator", n=8, size=64, seed=seed, mpp=0.5), data / name, CardInfo(name, name))
    rng = np.random.default_rng(0)
    completed = [replace(s, image=np.where(s.completion_mask[..., None],
                                           rng.integers(0, 255, s.image.shape, dtype=np.uint8), s.image))
                 for s in with_heldout_masks(build_source("simulator", n=8, size=64, seed=2, mpp=0.5))]
    write_dataset(completed, data / "completed", CardInfo("completed", "completed"))
    outputs = Outputs(data / "fake", data / "completed", tissue=True, nuclei=True)
    refs = References(data / "train", data / "test", data / "train")
    chosen = replace(VARIANTS["tiny"], tstr_steps=4, segmenter_steps=4)
    files = run_suite(outputs, refs, chosen, root / "out", cache=root / "cache", log=lambda line: None)
    text = {f.name: json.loads(f.read_text()) for f in files}
    return json.loads(json.dumps(_strip(text)).replace(str(root), "<root>"))


def compare(before: dict, after: dict, where: str = "") -> list[str]:
    """The paths at which two fingerprints differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = [f"{where}/{k}: only in one" for k in set(before) ^ set(after)]
        for key in sorted(set(before) & set(after)):
            out += compare(before[key], after[key], f"{where}/{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [d for i, (x, y) in enumerate(zip(before, after, strict=True)) for d in compare(x, y, f"{where}[{i}]")]
    return [] if before == after else [f"{where}: {str(before)[:80]} != {str(after)[:80]}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="fingerprint JSON to write")
    parser.add_argument("--generators", help="comma-separated generators (default: every registered one)")
    parser.add_argument("--skip-suite", action="store_true", help="fingerprint the generators only")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        diffs = compare(*(json.loads(p.read_text()) for p in args.compare))
        print("\n".join(diffs) or "identical")
        return 1 if diffs else 0
    if args.out is None:
        parser.error("--out or --compare is required")
    with tempfile.TemporaryDirectory() as tmp:
        names = args.generators.split(",") if args.generators else None
        prints = {"generators": generators(Path(tmp) / "models", names)}
        if not args.skip_suite:
            prints["suite"] = suite(Path(tmp) / "suite")
    args.out.write_text(json.dumps(prints, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
