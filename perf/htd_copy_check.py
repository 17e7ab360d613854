"""Does the memorization score catch HTD's crop pasting? HTD's condition holds one real crop per class cut from
the conditioning patch and left in place, so a trained model can paste real pixels of its training patch.

For a trained HTD model folder and the training set it was conditioned on, this samples `--n` patches for the
first training maps three ways (with crops; crop channels zeroed, `htd-no-copy`; the unconditional ablation when
its folder is given) and reports, in pixels, against the training set: the share flagged as copies
(benchmark.memorization: nearest / second-nearest distance < 1/3), the median of that ratio, and the share whose
nearest training patch is the sample's own conditioning patch (condition i mod N, as `histosynth generate`
assigns them). Pasting shows as a nearest neighbor that is the own patch; a flag needs the whole patch copied.

Run on the models `perf/tstr_simulator.py` trained (HTD demo preset, 150 steps on 256 simulator patches):
    .venv/bin/python perf/htd_copy_check.py --htd tstr_output/models/htd \
        --unconditional tstr_output/models/htd-unconditional --train tstr_output/real-train --out /tmp/htd_copy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def pixels(folder: Path, n: int | None = None) -> np.ndarray:
    """(N, H*W*3) float64 pixels of the first `n` samples of a dataset folder."""
    from itertools import islice

    from histosynth.disk import iter_samples

    return np.stack([s.image.reshape(-1) for s in islice(iter_samples(folder), n)]).astype(np.float64)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--htd", type=Path, required=True, help="trained HTD model folder")
    parser.add_argument("--unconditional", type=Path, help="trained htd-unconditional model folder (optional)")
    parser.add_argument("--train", type=Path, required=True, help="the training set the models were trained on")
    parser.add_argument("--out", type=Path, required=True, help="work folder for the generated sets")
    parser.add_argument("--n", type=int, default=64, help="samples per set (default 64)")
    parser.add_argument("--sample-steps", type=int, default=20, help="dpm++ steps (default 20)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from histosynth.benchmark.memorization import memorization_ratios
    from histosynth.generators.jobs import generate_dataset
    from histosynth.recipes.demo import generate_without_crops

    torch.set_num_threads(args.threads)
    sets = {"htd": generate_dataset(args.htd, args.train, args.n, args.out / "htd", sampler="dpm++",
                                    steps=args.sample_steps, progress=False)}
    if not (args.out / "htd-no-copy" / "README.md").is_file():
        generate_without_crops(args.htd, args.train, args.n, args.out / "htd-no-copy", 0, "dpm++", args.sample_steps)
    sets["htd-no-copy"] = args.out / "htd-no-copy"
    if args.unconditional:
        sets["htd-unconditional"] = generate_dataset(args.unconditional, args.train, args.n, args.out / "htd-unconditional",
                                                     sampler="dpm++", steps=args.sample_steps, progress=False)
    train = pixels(args.train)
    print("| set | N | flagged as copies | median d1/d2 | nearest training patch = own conditioning patch |")
    print("|---|---:|---:|---:|---:|")
    for name, folder in sets.items():
        result = memorization_ratios(pixels(folder, args.n), train)
        own = np.mean(result.nearest_index == np.arange(len(result.ratios)) % len(train))
        print(f"| {name} | {len(result.ratios)} | {result.fraction:.0%} | {np.median(result.ratios):.3f} | {own:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
