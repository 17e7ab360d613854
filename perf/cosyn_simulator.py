"""CoSyn-style joint synthesis on the simulator, what can be measured without a GPU: the label-consistency share of its
generated pairs, and downstream nuclei PQ of HoVer-Net trained on them against the same model trained on the real
pairs, both tested on held-out simulator slides.

- Real training pairs: `--train-slides` simulator slides (one seed = one slide) of `--per-slide` 64 px patches at
  0.5 um/px (the scale HoVer-Net's watershed is made for; see docs/ARCHITECTURE.md 7a); held-out test set:
  `--test-slides` other slides. Patches are simulated at the model resolution, so nothing is resized.
- CoSyn (demo preset) trains on every real training pair and generates one pair per real training layout
  (condition i mod M); its consistency share (conditioning centroids covered by a generated nucleus within the
  model's tolerance) is reported with a percentile bootstrap CI over patches.
- `histosynth bench tstr --model hovernet` trains the compact HoVer-Net once per seed on each set and tests on the
  held-out slides: PQ etc. as the mean over seeds with a Student-t 95 % interval.
- HTD images painted on real layouts would be the third row, but HTD outputs no nuclei labels today: the table says
  so rather than leaving the row out.

Run: .venv/bin/python perf/cosyn_simulator.py --out cosyn_output     (`--quick`: a smoke test, numbers meaningless)
Rerunning resumes finished stages.

Measured 2026-12-01 (loaded 2-core CPU) with `--train-slides 2 --per-slide 32 --test-slides 2 --cosyn-steps 150
--sample-steps 20 --seeds 3 --seg-steps 400 --seg-batch-size 8` (64 real pairs; CoSyn trained 150 of the demo's
400 steps, 12 min; tolerance 1 px; share CIs: percentile bootstrap over patches; TSTR: Student-t over 3 seeds):
- consistency share, training layouts (the generated set): 0.803 [0.738, 0.860] of 188 centroids; held-out
  layouts: 0.759 [0.682, 0.830] of 203; the same held-out outputs against random centroids: 0.128 [0.085, 0.171].
  Class agreement is weak at this scale: 0.227 [0.137, 0.323] on held-out layouts; 20 % of nuclei are spurious.
- HoVer-Net (tiny) PQ on held-out slides: real 0.465 [0.331, 0.598], CoSyn 0.404 [0.242, 0.566], ratio
  0.867 [0.753, 0.980] (paired by seed). HTD images on real layouts: no row, HTD outputs no nuclei labels.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from tstr_simulator import build_slides  # perf/ is the script's folder, so its sibling imports directly

SIZE, MPP = 64, 0.5
TRAIN_SLIDE_SEED, TEST_SLIDE_SEED = 0, 100
QUICK = {"per_slide": 4, "cosyn_steps": 2, "sample_steps": 2, "seg_steps": 3, "seeds": 2, "seg_batch_size": None}


def bootstrap_share(honored: np.ndarray, totals: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of sum(honored) / sum(totals), resampling patches."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(totals), size=(reps, len(totals)))
    shares = honored[picks].sum(1) / np.maximum(totals[picks].sum(1), 1)
    return float(np.percentile(shares, 2.5)), float(np.percentile(shares, 97.5))


def consistency_table(conds: list, outs: list, tolerance: float) -> dict:
    """The consistency share (and class share, spurious share) of outputs[i] against conditions[i mod M], pooled
    over patches, with bootstrap CIs over patches."""
    from histosynth.generators.cosyn.decode import consistency_of

    per = [consistency_of([conds[i % len(conds)]], [o], tolerance) for i, o in enumerate(outs)]
    honored = np.array([c.honored for c in per]); same = np.array([c.same_class for c in per])
    totals = np.array([c.centroids for c in per]); spurious = np.array([c.spurious for c in per])
    generated_n = np.array([c.generated for c in per])
    return {"patches": len(outs), "centroids": int(totals.sum()), "tolerance_px": tolerance,
            "share": float(honored.sum() / max(totals.sum(), 1)), "share_ci": bootstrap_share(honored, totals),
            "class_share": float(same.sum() / max(totals.sum(), 1)), "class_share_ci": bootstrap_share(same, totals),
            "generated": int(generated_n.sum()), "spurious_share": float(spurious.sum() / max(generated_n.sum(), 1))}


def run(cmd: list[str]) -> None:
    print("  $", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("cosyn_output"))
    parser.add_argument("--train-slides", type=int, default=4)
    parser.add_argument("--test-slides", type=int, default=2)
    parser.add_argument("--per-slide", type=int, default=64)
    parser.add_argument("--cosyn-steps", type=int, help="CoSyn training steps (default: the demo preset's)")
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--seg-preset", default="tiny")
    parser.add_argument("--seg-steps", type=int, help="HoVer-Net training steps (default: the preset's)")
    parser.add_argument("--seg-batch-size", type=int, help="HoVer-Net batch size (default: the preset's)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "histosynth.cli"]
    print("1. real training and held-out slides", flush=True)
    real = build_slides(list(range(TRAIN_SLIDE_SEED, TRAIN_SLIDE_SEED + args.train_slides)), args.per_slide, SIZE, MPP,
                        out / "real", "train", "training")
    test = build_slides(list(range(TEST_SLIDE_SEED, TEST_SLIDE_SEED + args.test_slides)), args.per_slide, SIZE, MPP,
                        out / "test", "test", "held-out")
    print("2. CoSyn (demo preset) on the real pairs", flush=True)
    model = out / "cosyn-model"
    if not (model / "config.json").is_file():
        run([*cli, "train", "cosyn", "--data", str(real), "--preset", "demo", "--out", str(model),
             *(["--steps", str(args.cosyn_steps)] if args.cosyn_steps else [])])
    print("3. one generated pair per real training layout", flush=True)
    generated = out / "cosyn-generated"
    n = args.train_slides * args.per_slide
    if not (generated / "README.md").is_file():
        run([*cli, "generate", "cosyn", "--checkpoint", str(model), "--conditions", str(real), "--n", str(n),
             "--steps", str(args.sample_steps), "--out", str(generated)])
    from dataclasses import replace

    from histosynth.disk import iter_samples
    from histosynth.generators import load_generator
    from histosynth.schema import Nuclei

    gen = load_generator(model)
    tolerance = gen.preset.model.consistency_tolerance_px
    held_out = list(iter_samples(test, "test"))
    held_out_outputs = gen.sample(held_out, seed=0, steps=args.sample_steps)  # layouts the model never saw
    rng = np.random.default_rng(0)
    random_places = [replace(c, nuclei=Nuclei(c.nuclei.schema, rng.uniform(0, c.width - 1, c.nuclei.centroids.shape)
                                              .astype(np.float32), c.nuclei.class_ids)) for c in held_out]
    tables = {"training layouts (the generated set)": consistency_table(list(iter_samples(real)),
                                                                         list(iter_samples(generated)), tolerance),
              "held-out layouts": consistency_table(held_out, held_out_outputs, tolerance),
              "held-out outputs vs random centroids (control)": consistency_table(random_places, held_out_outputs,
                                                                                   tolerance)}
    (out / "consistency.json").write_text(json.dumps(tables, indent=2))
    for name, table in tables.items():
        print(f"   {name}: share {table['share']:.3f} {table['share_ci']}, class {table['class_share']:.3f} "
              f"{table['class_share_ci']}, spurious {table['spurious_share']:.3f}, {table['centroids']} centroids",
              flush=True)
    print("4. HoVer-Net TSTR (real vs CoSyn pairs), held-out slides", flush=True)
    tstr = out / "tstr_hovernet.json"
    if not tstr.is_file():
        run([*cli, "bench", "tstr", "--model", "hovernet", "--preset", args.seg_preset, "--train", f"cosyn={generated}",
             "--real-train", str(real), "--test", str(test), "--seeds", str(args.seeds), "--out", str(tstr),
             *(["--steps", str(args.seg_steps)] if args.seg_steps else []),
             *(["--batch-size", str(args.seg_batch_size)] if args.seg_batch_size else [])])
    print(f"results: {out / 'consistency.json'}, {tstr}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
