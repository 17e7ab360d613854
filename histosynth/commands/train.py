"""`histosynth train <generator>`: train a registered generator on a dataset folder (resumable).

Runs the same under `torchrun --standalone --nproc_per_node N -m -- histosynth.cli train ...` (each process
draws its own part of every step's batch; batch size is per process; the `--` keeps torchrun's parser off our
options).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterator

from histosynth import options as opt
from histosynth.errors import InputError, MissingInputError


def curriculum_config(path: Path, warmup: int | None, steps: int):
    """The granularity curriculum from a pseudo-labeled dataset folder (its pseudolabels.json hierarchy) or from a
    JSON file {"ks": [5, 10, ...], "warmup_steps": N, "luts": {"5": [coarse id of fine id 0, 1, ...], ...}}."""
    from histosynth.generators.diffusion.presets import CurriculumConfig

    if Path(path).is_dir():
        from histosynth.labels.pipeline import load_hierarchy

        hierarchy = load_hierarchy(path)
        ks, luts, given = tuple(hierarchy.levels), {k: hierarchy.lut(k).tolist() for k in hierarchy.levels}, None
    elif not Path(path).is_file():
        raise MissingInputError(f"{path}: --curriculum: no such file or folder")
    else:
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
            ks, luts, given = tuple(spec["ks"]), {int(k): v for k, v in spec.get("luts", {}).items()}, spec.get("warmup_steps")
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # bad JSON or text, missing or mistyped fields
            raise InputError(f"{path}: --curriculum: not a curriculum JSON file ({type(err).__name__}: {err})") from None
    return CurriculumConfig(ks=ks, warmup_steps=int(warmup or given or max(1, steps // 2)), luts=luts)


@contextlib.contextmanager
def _removed_on_failure(out: Path) -> Iterator[None]:
    """On an error before the first checkpoint, remove the model folder (or its training/ folder) if this run
    created it, so a refused input leaves nothing behind; a run with checkpoints keeps them for --resume."""
    from histosynth.generators.training import TRAINING_DIR, latest_checkpoint

    created = next((p for p in (out, out / TRAINING_DIR) if not p.exists()), None)
    try:
        yield
    except BaseException:
        if created is not None and latest_checkpoint(out / TRAINING_DIR) is None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def run(args: argparse.Namespace) -> int:
    from histosynth.generators import generator_class, load_generator
    from histosynth.generators.plugins import load_plugins

    load_plugins()
    out: Path = args.out
    cls = generator_class(args.generator)
    if args.resume and (out / "config.json").is_file():
        generator = load_generator(out, device=args.device)  # networks already sized for the data
        if generator.meta.name != args.generator:
            raise InputError(f"{out} holds a {generator.meta.name!r} generator, not {args.generator!r}")
    else:
        if args.preset not in cls.presets():
            raise InputError(f"{args.generator} has no preset {args.preset!r}; choose from {', '.join(cls.presets())}")
        weights = {"autoencoder_weights": args.autoencoder, "autoencoder_subfolder": args.autoencoder_subfolder}
        generator = cls.build(args.preset, device=args.device, **{k: v for k, v in weights.items() if v is not None})
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "grad_accum": args.grad_accum,
             "mixed_precision": args.mixed_precision, "checkpoint_every": args.checkpoint_every, "seed": args.seed}
    config = {k: v for k, v in given.items() if v is not None}
    if args.compile:
        config["compile"] = True
    if args.no_heterogeneity:
        config["heterogeneity"] = None
    if args.curriculum:
        steps = config.get("steps", generator.training_steps())
        config["curriculum"] = curriculum_config(args.curriculum, args.curriculum_warmup, steps)
    start = time.perf_counter()
    with _removed_on_failure(out):
        report = generator.train(args.data, config, out=out, resume=args.resume)
    seconds = time.perf_counter() - start
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"trained {args.generator} ({generator.preset_name} preset) to step {report.steps} "
              f"(from step {report.resumed_from_step}) on {report.data.patches} patches in {seconds:.1f} s; "
              f"final loss {report.final_loss:.4f}; {report.images_per_second:.2f} images/s")
        print(f"model folder: {out} (weights {generator.checkpoint_hash})")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.generators.registry import GENERATORS

    parser = verbs.add_parser("train", help="train a generator on a dataset folder",
                              description="Train a registered generator (see `histosynth ls generators`) from a preset. "
                              "The model folder (diffusers style: config.json, safetensors, README.md) is written to --out, "
                              "with resumable checkpoints in --out/training; --resume continues the newest one.")
    parser.add_argument("generator", metavar="GENERATOR",
                        help=f"registered generator: {', '.join(GENERATORS)}, or one from an installed plugin "
                        "(entry point group histosynth.generators; `histosynth ls generators`)")
    parser.add_argument("--data", required=True, type=opt.existing_folder, help="dataset folder (histosynth data build ...) to train on")
    parser.add_argument("--out", required=True, type=opt.output_folder, help="model folder to write (CKPT)")
    parser.add_argument("--preset", default="demo", help="the generator's preset: tiny, demo or paper for the built-in "
                        "generators (`histosynth ls generators`; default demo)")
    parser.add_argument("--steps", type=opt.steps, help="total optimizer steps (default: the preset's)")
    parser.add_argument("--batch-size", type=opt.batch_size, help="batch size per process (default: the preset's)")
    parser.add_argument("--grad-accum", type=opt.integer(1, 4096, "a number of micro-batches"),
                        help="gradient accumulation micro-batches per step")
    parser.add_argument("--lr", type=opt.positive, help="learning rate (default: the preset's)")
    parser.add_argument("--mixed-precision", choices=("auto", "no", "fp16", "bf16"),
                        help="default auto: bf16 on a GPU that supports it, and on a CPU where a short probe "
                        "measures it faster than fp32")
    parser.add_argument("--compile", action="store_true", help="run the networks through torch.compile: minutes of "
                        "compilation per run (and per resume) for faster steps after; worth it for runs of tens of "
                        "minutes (perf/RESULTS.md)")
    parser.add_argument("--checkpoint-every", type=opt.steps, help="steps between resumable checkpoints")
    parser.add_argument("--seed", type=opt.seed, help="training seed (initial weights, data order, crops, noise)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out/training")
    parser.add_argument("--autoencoder", help="paper preset: local diffusers folder (or cached repo id) of the VQ-f4 / KL autoencoder")
    parser.add_argument("--autoencoder-subfolder", help="subfolder of --autoencoder holding the autoencoder")
    parser.add_argument("--curriculum", type=Path, help="coarse-to-fine granularity curriculum for pseudo-labeled data: the "
                        "pseudo-labeled dataset folder (its pseudolabels.json hierarchy; usually the same as --data) or a JSON "
                        'file {"ks": [5, ...], "warmup_steps": N, "luts": {"5": [...]}}')
    parser.add_argument("--curriculum-warmup", type=opt.steps, help="steps over which k grows from the coarsest to the finest (default: half the steps)")
    parser.add_argument("--no-heterogeneity", action="store_true", help="train on all patches, not only 20-80%% heterogeneous ones")
    parser.add_argument("--device", type=opt.device, help="torch device (default: the process's GPU, else CPU)")
    parser.set_defaults(handler=run)
