"""How much of Dual-LoRA's completion score is its nuclei-centroid prior? A trained snapshot completes the same
held-out masks twice: with the test patches' centroids (what the learning curve scores) and with every centroid
removed (an empty layout: the model sees no structure prior, the rest of its input is the same). Both are scored
with the suite's completion task (masked PSNR and SSIM, bootstrap CIs), beside mean-fill; the per-patch paired
PSNR difference gets a bootstrap CI of its own.

No retraining: the model was trained with centroids, and it has seen empty layouts (patches without nuclei), so
this measures what the prior contributes at inference, not what a model trained without it would do.

    .venv/bin/python perf/dual_lora_centroid_ablation.py \
        --snapshot runs/learning-curves-simulator-demo/curves/dual-lora/model/snapshots/step-00001600 \
        --test runs/learning-curves-simulator-demo/data/sim-test --out perf/dual_lora_centroid_ablation_simulator.json
    (and the embedded run's step-00001600 with data/embedded-test -> perf/dual_lora_centroid_ablation_embedded.json)
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np


def scores(run) -> dict[str, list[float | None]]:
    """{metric: [value, ci_low, ci_high]} of a completion results run."""
    return {r.metric: [r.value, r.ci_low, r.ci_high] for r in run.results}


def main() -> None:
    from histosynth.atomic import write_text_atomic
    from histosynth.benchmark.tasks.completion import masked_psnr, score_completion
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset
    from histosynth.generators.jobs import generate_dataset
    from histosynth.recipes.floors import mean_fill
    from histosynth.schema import Nuclei

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--snapshot", type=Path, required=True, help="a dual-lora model folder")
    parser.add_argument("--test", type=Path, required=True, help="dataset folder of held-out test patches")
    parser.add_argument("--n", type=int, default=64, help="test patches completed (default 64, as the curves)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (default 20, as the curves)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0, as the curves)")
    parser.add_argument("--out", type=Path, required=True, help="JSON record")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        patches = list(itertools.islice(iter_samples(args.test), args.n))
        empty = [replace(s, nuclei=Nuclei(s.nuclei.schema, np.zeros((0, 2), np.float32), np.zeros(0, np.uint8)))
                 if s.nuclei is not None else s for s in patches]
        write_dataset(patches, root / "with", CardInfo("with", "test patches with their centroids"))
        write_dataset(empty, root / "without", CardInfo("without", "test patches, centroids removed"))
        completed, per_patch, record = {}, {}, {"snapshot": str(args.snapshot), "n": len(patches), "runs": {}}
        for name in ("with", "without"):
            completed[name] = generate_dataset(args.snapshot, root / name, len(patches), root / f"done-{name}",
                                               seed=args.seed, steps=args.steps, chunk_size=32, progress=False,
                                               task="completion")
            record["runs"][f"{name} centroids"] = scores(score_completion(args.test, completed[name], modes=(),
                                                                          limit=len(patches)))
            per_patch[name] = [masked_psnr(t.image, d.image, d.completion_mask)
                               for d, t in zip(iter_samples(completed[name]), patches, strict=True)]
        record["runs"]["mean-fill"] = scores(score_completion(args.test, mean_fill(args.test, root / "fill"), modes=(),
                                                              limit=len(patches)))
    difference = np.asarray(per_patch["with"]) - np.asarray(per_patch["without"])
    rng = np.random.default_rng(0)
    replicates = [difference[rng.integers(0, len(difference), len(difference))].mean() for _ in range(2000)]
    record["psnr_with_minus_without"] = [float(difference.mean()), *np.percentile(replicates, [2.5, 97.5]).tolist()]
    for name, run in record["runs"].items():
        psnr, ssim = run["psnr-masked"], run["ssim-masked"]
        print(f"{name}: masked PSNR {psnr[0]:.2f} [{psnr[1]:.2f}, {psnr[2]:.2f}] dB, "
              f"SSIM {ssim[0]:.3f} [{ssim[1]:.3f}, {ssim[2]:.3f}]")
    mean, low, high = record["psnr_with_minus_without"]
    print(f"paired PSNR, with minus without centroids: {mean:+.2f} [{low:+.2f}, {high:+.2f}] dB")
    write_text_atomic(args.out, json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
