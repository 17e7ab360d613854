"""The downstream tasks: `seg` (one training set's utility: a segmenter trained on it, tested on held-out real data)
and `tstr` (train-on-synthetic, test-on-real: several training sets side by side with a real-trained row, and their
ratio to it). The training and scoring live in histosynth.benchmark.downstream (run_downstream); here are their
commands and the suite's part: TSTR with DeepLabv3+ where the outputs carry tissue maps (tstr-seg.json) and with
HoVer-Net where they carry nuclei instances (tstr-nuclei.json)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from histosynth import options as opt
from histosynth.benchmark.results import BenchmarkRun
from histosynth.benchmark.tasks.arguments import check_enough, dataset_spec, pairs
from histosynth.benchmark.tasks.base import COMPLETION_ONLY, SPLIT, BenchmarkTask, SuiteContext, not_run
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.suite import Outputs

# the suite's TSTR files: results file stem -> downstream model, and which outputs each needs
SUITE_MODELS = {"tstr-seg": "deeplabv3plus", "tstr-nuclei": "hovernet"}


def downstream_options(parser: argparse.ArgumentParser) -> None:
    """The options `bench seg` and `bench tstr` share."""
    parser.add_argument("--test", required=True, help="held-out real dataset folder, FOLDER or FOLDER@SPLIT")
    parser.add_argument("--model", default="deeplabv3plus", choices=["deeplabv3plus", "hovernet"])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "demo", "paper"],
                        help="model and training budget (benchmark/downstream/tissue.py SEG_PRESETS; default tiny)")
    parser.add_argument("--seeds", type=opt.seeds, default=3, help="training seeds, one model each (default 3)")
    parser.add_argument("--seed", type=opt.seed, default=0, help="first seed (default 0)")
    parser.add_argument("--train-split", default="train",
                        help="split of the training sets without @SPLIT (default train)")
    parser.add_argument("--test-split", default="test", help="split of --test without @SPLIT (default test)")
    parser.add_argument("--map", action="append", default=[], metavar="SRC=DST",
                        help="class remap from a training schema's class to the test schema's (repeatable; same names "
                        "pair up by default, 'ignore' drops a class)")
    parser.add_argument("--steps", type=opt.steps, help="training steps (default: the preset's)")
    parser.add_argument("--batch-size", type=opt.batch_size, help="batch size per process (under torchrun the global "
                        "batch is this x processes; default: the preset's)")
    parser.add_argument("--crop", type=opt.patch_side, help="training crop in pixels, a multiple of 16, at most the "
                        "training patches' side (default: the preset's)")
    parser.add_argument("--lr", type=opt.positive, help="learning rate (default: the preset's)")
    parser.add_argument("--checkpoint-every", type=opt.steps,
                        help="steps between checkpoints (default: a tenth of the steps)")
    parser.add_argument("--checkpoints", type=opt.output_folder, help="checkpoint folder (default .OUT-checkpoints "
                        "beside --out); a rerun resumes from it and skips finished seeds")
    parser.add_argument("--weights", type=opt.existing_file, help="encoder ImageNet weights (default: the offline "
                        "Lite0 package; paper preset: a torchvision resnet50 state dict)")
    parser.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
    parser.add_argument("--device", type=opt.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=opt.threads, help="torch CPU threads (on a busy machine 1 can be many times "
                        "faster than contended threads)")


def _check_crop(crop: int, trains: dict[str, tuple[Path, str]]) -> None:
    """Refuse a training crop larger than the patches of a training set (it would silently train on whole
    patches); reads one row of each set."""
    from histosynth.disk import iter_samples

    for folder, split in trains.values():
        first = next(iter_samples(folder, split), None)
        side = min(first.image.shape[:2]) if first is not None else None
        if side is not None and crop > side:
            raise InputError(f"--crop {crop}: larger than the {side} px patches of {folder} (split {split}); "
                             f"use at most {side}")


class _Downstream(BenchmarkTask):
    """What `seg` and `tstr` share: the options, the run under torchrun, the table printed."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        downstream_options(parser)

    def trains(self, args: argparse.Namespace) -> tuple[dict[str, tuple[Path, str]], str | None]:
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        import torch

        from histosynth.benchmark.downstream.kinds import train_config
        from histosynth.benchmark.downstream.run import run_downstream

        trains, real = self.trains(args)
        test = dataset_spec(args.test, args.test_split, "--test")
        for option, (folder, split) in [("--test", test), *(("--train", set_) for set_ in trains.values())]:
            check_enough(folder, split, option, 1, "a segmenter needs at least one patch to train or test on")
        if args.crop is not None:
            _check_crop(args.crop, trains)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        config = train_config(args.preset, args.model, steps=args.steps, batch_size=args.batch_size, crop=args.crop,
                              lr=args.lr, checkpoint_every=args.checkpoint_every)
        checkpoints = args.checkpoints or args.out.parent / f".{args.out.stem}-checkpoints"
        mapping = pairs(args.map, "--map", "SOURCE_CLASS=TARGET_CLASS") or None
        return run_downstream(trains, test, args.model, args.preset, config,
                              list(range(args.seed, args.seed + args.seeds)), mapping, real, checkpoints, args.weights,
                              args.device, self.name)

    def report(self, run: BenchmarkRun, args: argparse.Namespace) -> None:
        import pandas as pd

        from histosynth.benchmark.downstream.group import close_group, process_group
        from histosynth.benchmark.results import markdown_table

        if not process_group(args.device).main:  # under torchrun rank 0 writes and prints
            close_group()
            return
        run.save(args.out)
        rows: dict[str, dict[str, str]] = {}
        for r in run.results:
            ci = f" [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else ""
            value = "undefined" if r.value is None else f"{r.value:.3f}{ci}"
            rows.setdefault(r.extra["train"], {"train": r.extra["train"]})[r.metric] = value
        print(markdown_table(pd.DataFrame(list(rows.values())).fillna("")), end="")
        print(f"{len(run.settings['seeds'])} seed(s); values are means over seeds with 95% Student-t intervals; "
              "higher is better")
        print(f"results: {args.out}\nwall time: {run.wall_time_s:.1f} s")
        close_group()


class SegTask(_Downstream):
    """`histosynth bench seg`: one training set, tested on held-out real data."""

    name = "seg"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train", required=True, help="training dataset folder, FOLDER or FOLDER@SPLIT")
        super().add_arguments(parser)

    def trains(self, args: argparse.Namespace) -> tuple[dict[str, tuple[Path, str]], str | None]:
        folder, split = dataset_spec(args.train, args.train_split, "--train")
        return {folder.name: (folder, split)}, None


class TstrTask(_Downstream):
    """`histosynth bench tstr`; in the suite, DeepLabv3+ on the tissue maps and HoVer-Net on the nuclei, each
    beside the real-trained row read from the reference cache."""

    name = "tstr"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--train", action="append", required=True, metavar="NAME=FOLDER[@SPLIT]",
                            help="a training set to score (repeatable)")
        parser.add_argument("--real-train", required=True,
                            help="the real training set, FOLDER or FOLDER@SPLIT (row 'real')")
        super().add_arguments(parser)

    def trains(self, args: argparse.Namespace) -> tuple[dict[str, tuple[Path, str]], str | None]:
        named = pairs(args.train, "--train", "NAME=FOLDER[@SPLIT]")
        if "real" in named:
            raise InputError("--train: the name 'real' is the --real-train row; choose another")
        trains = {name: dataset_spec(folder, args.train_split, "--train") for name, folder in named.items()}
        return {"real": dataset_spec(args.real_train, args.train_split, "--real-train")} | trains, "real"

    def applies_to(self, outputs: "Outputs") -> str | None:
        if outputs.synthesized is None:
            return COMPLETION_ONLY
        if not outputs.tissue and not outputs.nuclei:
            return "outputs carry neither a tissue map nor nuclei instances to train a model on"
        return None

    def suite_runs(self, ctx: SuiteContext) -> list[tuple[str, BenchmarkRun]]:
        from histosynth.benchmark.downstream.kinds import train_config
        from histosynth.benchmark.downstream.nuclei_task import UNET_MULTIPLE
        from histosynth.benchmark.downstream.run import run_downstream
        from histosynth.benchmark.subjects import subject_of
        from histosynth.disk import iter_samples

        fake, refs, chosen = ctx.outputs.synthesized, ctx.refs, ctx.variant
        wanted = {"tstr-seg": ctx.outputs.tissue, "tstr-nuclei": ctx.outputs.nuclei}
        stems = [stem for stem in SUITE_MODELS if wanted[stem] and (ctx.models is None or SUITE_MODELS[stem] in ctx.models)]
        runs = []
        if "tstr-nuclei" in stems and not any(s.nuclei is not None and len(s.nuclei.class_ids)
                                               for s in iter_samples(fake)):
            stems.remove("tstr-nuclei")
            reason = "the synthetic set holds no nuclei: nothing to train a nuclei model on"
            empty = not_run("tstr", ("pq", "pq_ratio_to_real"), reason,
                            {"train:synthetic": ctx.data_ref(fake), "test": ctx.data_ref(refs.test)})
            empty.subjects["train:synthetic"] = subject_of(fake, SPLIT, empty.data["train:synthetic"])
            runs.append(("tstr-nuclei", empty))
        side = min(next(iter_samples(fake)).image.shape[:2]) if stems else 0
        for stem in stems:
            model = SUITE_MODELS[stem]
            steps = chosen.tstr_nuclei_steps if stem == "tstr-nuclei" and chosen.tstr_nuclei_steps else chosen.tstr_steps
            config = train_config(chosen.tstr_preset, model, steps=steps)
            if config.crop > side:  # patches smaller than the preset's crop (tiny sets): train on whole patches
                config = replace(config, crop=side - side % UNET_MULTIPLE)  # a multiple of both models' strides
            run = run_downstream({"real": (refs.train, SPLIT), "synthetic": (fake, SPLIT)}, (refs.test, SPLIT),
                                 model=model, preset=chosen.tstr_preset, config=config,
                                 seeds=list(range(chosen.tstr_seeds)), real="real", task="tstr",
                                 reference_cache=ctx.cache / "tstr")
            runs.append((stem, run))
        return sorted(runs, key=lambda item: list(SUITE_MODELS).index(item[0]))
