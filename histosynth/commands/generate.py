"""`histosynth generate <generator>`: write a synthetic dataset (Hub layout) from a trained model and conditions.

Resumable (rerun the same command after a crash) and deterministic across process counts; runs the same under
`torchrun --standalone --nproc_per_node N -m -- histosynth.cli generate ...` (processes take whole chunks; the
`--` stops torchrun from reading `--n` as an abbreviation of its own options). See histosynth.generators.jobs.
"""

from __future__ import annotations

import argparse
import time

from histosynth import options as opt

TASKS = {"synthesize": "synthesis", "complete": "completion"}  # CLI verb -> SampleOptions.task


def run(args: argparse.Namespace) -> int:
    from histosynth.disk import count_samples
    from histosynth.generators import generator_meta
    from histosynth.generators.jobs import generate_dataset
    from histosynth.generators.plugins import load_plugins

    load_plugins()
    generator_meta(args.generator)  # unknown names fail here, with suggestions
    start = time.perf_counter()
    out = generate_dataset(args.checkpoint, args.conditions, args.n, args.out, seed=args.seed,
                           chunk_size=args.chunk_size, steps=args.steps, sampler=args.sampler,
                           guidance=args.guidance, eta=args.eta, batch_size=args.batch_size,
                           generator_name=args.generator, device=args.device, task=TASKS[args.task], masks=args.masks)
    import torch.distributed as dist
    from accelerate import PartialState

    if PartialState().is_main_process:
        seconds = time.perf_counter() - start
        print(f"dataset: {out} ({count_samples(out)} samples by {args.generator}) in {seconds:.1f} s")
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.generators.registry import GENERATORS

    parser = verbs.add_parser("generate", help="generate a synthetic dataset from a trained generator",
                              description="Generate N samples into a dataset folder (README card + parquet shards, one per "
                              "fixed chunk of --chunk-size samples). Sample i uses condition i mod M and a seed derived from "
                              "(--seed, i); labels follow the generator's label policy (e.g. HTD copies the conditioning tissue map). A killed "
                              "run finishes when the same "
                              "command is run again; the folder appears only when complete.")
    parser.add_argument("generator", metavar="GENERATOR",
                        help=f"registered generator: {', '.join(GENERATORS)}, or one from an installed plugin "
                        "(entry point group histosynth.generators; `histosynth ls generators`); must match the checkpoint")
    parser.add_argument("--checkpoint", required=True, type=opt.existing_folder, help="model folder written by `histosynth train`")
    parser.add_argument("--conditions", required=True, type=opt.existing_folder, help="dataset folder of condition patches, carrying what the generator reads (`histosynth ls generators`: tissue maps, nuclei, masks)")
    parser.add_argument("--n", required=True, type=opt.count, help="number of samples to generate")
    parser.add_argument("--out", required=True, type=opt.output_folder, help="dataset folder to write")
    parser.add_argument("--seed", type=opt.seed, default=0, help="base seed (default 0)")
    parser.add_argument("--steps", type=opt.steps, help="sampler steps (default: the model's, e.g. 50 demo / 200 paper)")
    parser.add_argument("--sampler", help="ddim, dpm++, dpm++-karras, dpm++-sde, unipc, euler, euler-a, ddpm (default: the model's)")
    parser.add_argument("--guidance", type=opt.number(0.0, 1000.0), help="classifier-free guidance scale (1 = none; default: the model's)")
    parser.add_argument("--eta", type=opt.number(0.0, 10.0), help="DDIM eta (0 = deterministic)")
    parser.add_argument("--batch-size", type=opt.batch_size, help="samples per forward pass")
    parser.add_argument("--chunk-size", type=opt.count, default=64, help="samples per shard / unit of resumption (default 64)")
    parser.add_argument("--device", type=opt.device, help="torch device (default: the process's GPU, else CPU)")
    parser.add_argument("--task", choices=list(TASKS), default="synthesize",
                        help="synthesize whole patches (default) or complete masked regions of the conditions (known "
                        "pixels kept exactly; each row stores its completion mask); only generators that do it")
    parser.add_argument("--masks", type=opt.existing_folder, help="with --task complete: dataset folder whose rows carry completion "
                        "masks (condition c gets row c, cycled; e.g. `histosynth data masks`); default: each condition's own "
                        "completion_mask, else held-out mask c of the standard set")
    parser.set_defaults(handler=run)
