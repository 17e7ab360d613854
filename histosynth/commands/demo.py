"""`histosynth demo`: the main job on the embedded CC0 sample, end to end, scored on data it never saw.

The pipeline is histosynth.recipes.demo; this module parses the options and runs it.
"""

from __future__ import annotations

import argparse

from histosynth import options as opt

SETTINGS = ("size", "train_fraction", "train_stride", "held_out_stride", "label_input_size", "n", "steps", "sampler",
            "sample_steps", "bootstrap", "segmenter_steps", "consistency_k", "threads", "seed")


def run(args: argparse.Namespace) -> int:
    from histosynth.recipes.demo import demo_settings, run_demo

    settings = demo_settings(args.quick, out=args.out, **{name: getattr(args, name) for name in SETTINGS})
    run_demo(settings, log=lambda line: print(line, flush=True))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("demo", help="run the main job on the embedded sample",
                              description="The main job on the embedded CC0 H&E sample, scored on held-out rows: "
                              "pseudo-labels fitted on the training rows, heterogeneous patches, train HTD and its "
                              "unconditional ablation (demo preset), generate (HTD also with its crops switched off), "
                              "FD and KID with CIs against held-out real patches, label consistency (mIoU of a "
                              "DeepLabv3+ segmenter), and a report folder. About 10-15 min on 2 cores; --quick: a "
                              "minute or two, for smoke tests (numbers meaningless).")
    parser.add_argument("--out", type=opt.output_folder, default="demo_output", help="report folder (default demo_output/)")
    parser.add_argument("--quick", action="store_true", help="tiny settings end to end (smoke test; numbers meaningless)")
    parser.add_argument("--size", type=opt.integer(64, 2048, "a side in pixels"), default=256, help="patch size of the real tiles in pixels (default 256)")
    parser.add_argument("--train-fraction", type=opt.number(0.1, 0.9), default=0.7,
                        help="share of the region's rows used for training; the rest is held out (default 0.7)")
    parser.add_argument("--train-stride", type=opt.integer(1, 2048, "a stride in pixels"), help="tile stride in the training rows (default size/4)")
    parser.add_argument("--held-out-stride", type=opt.integer(1, 2048, "a stride in pixels"), help="tile stride in the held-out rows (default size/4)")
    parser.add_argument("--label-input-size", type=opt.patch_side,
                        help="encoder input side for the pseudo-labeler's cells (default: the encoder's own)")
    parser.add_argument("--n", type=opt.count, help="synthetic patches per model (default 64)")
    parser.add_argument("--steps", type=opt.steps, help="training steps per model (default: the demo preset's)")
    parser.add_argument("--sampler", default="dpm++", help="sampler for generation (default dpm++)")
    parser.add_argument("--sample-steps", type=opt.steps, help="sampler steps (default 20)")
    parser.add_argument("--bootstrap", type=opt.bootstrap, help="bootstrap replicates for the FD interval (default 200)")
    parser.add_argument("--segmenter-steps", type=opt.steps, help="training steps of the label-consistency segmenter (default 150)")
    parser.add_argument("--consistency-k", type=opt.integer(1, 254, "a granularity"), default=5,
                        help="pseudo-tissue granularity the label consistency is scored at (default 5)")
    parser.add_argument("--threads", type=opt.threads, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--seed", type=opt.seed, default=0, help="random seed (default 0)")
    parser.set_defaults(handler=run)
