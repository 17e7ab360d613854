"""`histosynth bench fd|lpips-masked|complete|seg|tstr`: score a synthetic dataset against a real one; results as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from histosynth import options as opt
from histosynth.commands import track
from histosynth.errors import InputError


def _pairs(pairs: list[str], option: str, form: str) -> dict[str, str]:
    """`KEY=VALUE` option values as a dict; a malformed or repeated key names the option."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise InputError(f"{option} takes {form}, got {pair!r}")
        if key in out:
            raise InputError(f"{option}: {key!r} is given twice")
        out[key] = value
    return out


def _weights(pairs: list[str]) -> dict[str, str]:
    return _pairs(pairs, "--weights", "NAME=PATH")


def _enough(path: Path, split: str, option: str, minimum: int, why: str) -> None:
    """Refuse a set with too few samples before any encoder is loaded, naming the folder."""
    from histosynth.disk import count_samples, read_metadata

    read_metadata(path)
    n = count_samples(path, split)
    if n < minimum:
        raise InputError(f"{option} {path}: split {split!r} holds {n} sample(s); {why}")


def _check_options(args: argparse.Namespace, names: dict[str, list[str]], minimum: int = 1,
                   why: str = "at least one is needed") -> None:
    """One-line errors for options that would otherwise fail deep inside a run (or not at all)."""

    for option, values in names.items():
        if not values:
            raise InputError(f"--{option}: name at least one (comma-separated)")
    _chart_path(args.out)
    _enough(args.real, args.split, "--real", minimum, why)
    _enough(args.fake, args.split, "--fake", minimum, why)


def _chart_path(out: Path) -> Path:
    """The bar chart's path beside the results file, checked as an output before any work."""
    from histosynth.atomic import check_output

    chart = out.with_suffix(".png")
    if chart == out:
        raise InputError(f"--out {out}: the results file cannot end in .png (the chart is written beside it as "
                         f"{chart.name})")
    return check_output(chart, folder=False, what="chart")


def _report(run, out: Path, metric: str) -> None:
    import pandas as pd

    from histosynth.benchmark.results import plot_metric_bars, results_table

    run.save(out)
    table = results_table([run])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False))
    chart = plot_metric_bars([run], metric, out.with_suffix(".png"))
    print(f"results: {out}\nchart:   {chart}\nwall time: {run.wall_time_s:.1f} s")


def run_fd(args: argparse.Namespace) -> int:
    from histosynth.benchmark.runner import score_distribution

    encoders = [e.strip() for e in args.encoders.split(",") if e.strip()]
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    moments = [m for m in metrics if m in ("fd", "fd-inf", "kid")]  # a covariance / kernel mean needs two samples
    minimum, why = (2, f"{'/'.join(moments)} need at least 2 per set") if moments else (1, "at least one is needed")
    _check_options(args, {"encoders": encoders, "metrics": metrics}, minimum, why)
    if args.train is not None:
        _enough(args.train, args.split, "--train", 1, "memorisation needs the training samples")
    unused = sorted(set(_weights(args.weights)) - set(encoders))
    if unused:
        raise InputError(f"--weights for {', '.join(map(repr, unused))}, which --encoders does not name ({', '.join(encoders)})")
    if "fd" not in metrics and args.bootstrap:
        args.bootstrap = 0
    run = score_distribution(args.real, args.fake, encoders, metrics, bootstrap=args.bootstrap, seed=args.seed, split=args.split,
                             batch_size=args.batch_size, device=args.device, weights=_weights(args.weights),
                             use_cache=not args.no_cache, train=args.train)
    _report(run, args.out, "fd" if "fd" in metrics else metrics[0])
    return 0


def run_lpips(args: argparse.Namespace) -> int:
    from histosynth.benchmark.lpips_masked import MODES
    from histosynth.benchmark.runner import score_masked_lpips

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    _check_options(args, {"modes": modes})
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InputError(f"--modes: unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    run = score_masked_lpips(args.real, args.fake, modes, net=args.net, backbone=args.backbone, split=args.split,
                             limit=args.limit, device=args.device, batch_size=args.batch_size)
    _report(run, args.out, f"lpips-{modes[0]}")
    return 0


def run_complete(args: argparse.Namespace) -> int:
    from histosynth.benchmark.completion import score_completion
    from histosynth.benchmark.lpips_masked import MODES

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise InputError(f"--modes: {', '.join(unknown) or 'none given'}; choose from {', '.join(MODES)}")
    _chart_path(args.out)
    _enough(args.real, args.split, "--real", 1, "at least one is needed")
    _enough(args.completed, args.split, "--completed", 1, "at least one is needed")
    run = score_completion(args.real, args.completed, modes, net=args.net, backbone=args.backbone, split=args.split,
                           limit=args.limit, bootstrap=args.bootstrap, seed=args.seed, device=args.device,
                           batch_size=args.batch_size, mask_version=args.mask_set)
    _report(run, args.out, f"lpips-{modes[0]}")
    return 0


def _dataset(text: str, split: str, option: str) -> tuple[Path, str]:
    """A dataset folder and split from FOLDER or FOLDER@SPLIT."""
    folder, sep, named = text.rpartition("@")
    if not sep or "/" in named:  # an @ inside the folder path names no split
        folder, named = text, split
    if not folder or not named:
        raise InputError(f"{option} takes FOLDER or FOLDER@SPLIT, got {text!r}")
    return Path(folder), named


def _mapping(pairs: list[str]) -> dict[str, str] | None:
    return _pairs(pairs, "--map", "SOURCE_CLASS=TARGET_CLASS") or None


def _run_downstream(args: argparse.Namespace, trains: dict[str, tuple[Path, str]], real: str | None, task: str) -> int:
    import pandas as pd
    import torch

    from histosynth.benchmark.downstream.group import close_group, process_group
    from histosynth.benchmark.downstream.kinds import train_config
    from histosynth.benchmark.downstream.run import run_downstream
    from histosynth.benchmark.results import markdown_table

    test = _dataset(args.test, args.test_split, "--test")
    for option, (folder, split) in [("--test", test), *(("--train", set_) for set_ in trains.values())]:
        _enough(folder, split, option, 1, "a segmenter needs at least one patch to train or test on")
    if args.crop is not None:
        _check_crop(args.crop, trains)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    config = train_config(args.preset, args.model, steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr,
                          checkpoint_every=args.checkpoint_every)
    checkpoints = args.checkpoints or args.out.parent / f".{args.out.stem}-checkpoints"
    run = run_downstream(trains, test, args.model, args.preset, config,
                         list(range(args.seed, args.seed + args.seeds)), _mapping(args.map), real, checkpoints,
                         args.weights, args.device, task)
    if not process_group(args.device).main:  # under torchrun rank 0 writes and prints
        close_group()
        return 0
    run.save(args.out)
    rows = {}
    for r in run.results:
        ci = f" [{r.ci_low:.3f}, {r.ci_high:.3f}]" if r.ci_low is not None else ""
        value = "undefined" if r.value is None else f"{r.value:.3f}{ci}"
        rows.setdefault(r.extra["train"], {"train": r.extra["train"]})[r.metric] = value
    table = pd.DataFrame(list(rows.values())).fillna("")
    print(markdown_table(table), end="")
    print(f"{len(run.settings['seeds'])} seed(s); values are means over seeds with 95% Student-t intervals; higher is better")
    print(f"results: {args.out}\nwall time: {run.wall_time_s:.1f} s")
    close_group()
    return 0


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


def run_seg(args: argparse.Namespace) -> int:
    folder, split = _dataset(args.train, args.train_split, "--train")
    return _run_downstream(args, {folder.name: (folder, split)}, None, "seg")


def run_tstr(args: argparse.Namespace) -> int:
    named = _pairs(args.train, "--train", "NAME=FOLDER[@SPLIT]")
    if "real" in named:
        raise InputError("--train: the name 'real' is the --real-train row; choose another")
    trains = {name: _dataset(folder, args.train_split, "--train") for name, folder in named.items()}
    trains = {"real": _dataset(args.real_train, args.train_split, "--real-train")} | trains
    return _run_downstream(args, trains, "real", "tstr")


def _masked_lpips_options(parser: argparse.ArgumentParser) -> None:
    """The masked-LPIPS options `bench lpips-masked` and `bench complete` share."""
    parser.add_argument("--modes", default="spatial-mean,layer-masked,bbox-crop",
                        help="comma-separated masked-LPIPS modes (default: all three)")
    parser.add_argument("--net", default="alex", choices=["alex", "vgg"])
    parser.add_argument("--backbone", type=opt.existing_file, help="torchvision AlexNet/VGG16 weight file (default: the torch hub cache)")


def _pair_options(parser: argparse.ArgumentParser) -> None:
    """Options of the commands that score row-paired real and completed datasets."""
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=opt.count, help="only the first N pairs (at least 1)")
    parser.add_argument("--batch-size", type=opt.batch_size, default=16)
    parser.add_argument("--device", type=opt.device, default="cpu")


def _downstream_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test", required=True, help="held-out real dataset folder, FOLDER or FOLDER@SPLIT")
    parser.add_argument("--model", default="deeplabv3plus", choices=["deeplabv3plus", "hovernet"])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "demo", "paper"],
                        help="model and training budget (benchmark/downstream/tissue.py SEG_PRESETS; default tiny)")
    parser.add_argument("--seeds", type=opt.seeds, default=3, help="training seeds, one model each (default 3)")
    parser.add_argument("--seed", type=opt.seed, default=0, help="first seed (default 0)")
    parser.add_argument("--train-split", default="train", help="split of the training sets without @SPLIT (default train)")
    parser.add_argument("--test-split", default="test", help="split of --test without @SPLIT (default test)")
    parser.add_argument("--map", action="append", default=[], metavar="SRC=DST",
                        help="class remap from a training schema's class to the test schema's (repeatable; same names "
                        "pair up by default, 'ignore' drops a class)")
    parser.add_argument("--steps", type=opt.steps, help="training steps (default: the preset's)")
    parser.add_argument("--batch-size", type=opt.batch_size, help="batch size per process (under torchrun the global batch is "
                        "this x processes; default: the preset's)")
    parser.add_argument("--crop", type=opt.patch_side, help="training crop in pixels, a multiple of 16, at most the "
                        "training patches' side (default: the preset's)")
    parser.add_argument("--lr", type=opt.positive, help="learning rate (default: the preset's)")
    parser.add_argument("--checkpoint-every", type=opt.steps, help="steps between checkpoints (default: a tenth of the steps)")
    parser.add_argument("--checkpoints", type=opt.output_folder, help="checkpoint folder (default .OUT-checkpoints beside --out); a "
                        "rerun resumes from it and skips finished seeds")
    parser.add_argument("--weights", type=opt.existing_file, help="encoder ImageNet weights (default: the offline Lite0 package; "
                        "paper preset: a torchvision resnet50 state dict)")
    parser.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
    parser.add_argument("--device", type=opt.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=opt.threads, help="torch CPU threads (on a busy machine 1 can be many times faster "
                        "than contended threads)")


def register(verbs: argparse._SubParsersAction) -> None:
    bench = verbs.add_parser("bench", help="score synthetic data against real data",
                             description="Benchmark a synthetic dataset against a real one. Results are one JSON file "
                             "(values, CIs, N, code/encoder/data versions, wall time) plus a bar chart next to it.")
    tasks = bench.add_subparsers(dest="task", metavar="<task>", required=True)
    track.register(tasks)

    fd = tasks.add_parser("fd", help="Frechet distance (+CI), KID, PRDC under several encoders",
                          description="Featurise both datasets once under each encoder (statistics cached by image "
                          "content) and compute FD with a bootstrap CI, KID and precision/recall/density/coverage.")
    fd.add_argument("--real", type=opt.existing_folder, required=True, help="real dataset folder (histosynth/Hub layout)")
    fd.add_argument("--fake", type=opt.existing_folder, required=True, help="synthetic dataset folder")
    fd.add_argument("--train", type=opt.existing_folder, help="the generator's training set: adds memorisation (share of synthetic copies)")
    fd.add_argument("--encoders", default="effnet-lite0", help="comma-separated encoders (see `histosynth ls encoders`); default effnet-lite0")
    fd.add_argument("--metrics", default="fd,kid,prdc", help="comma-separated subset of fd,fd-inf,kid,prdc (default fd,kid,prdc)")
    fd.add_argument("--bootstrap", type=opt.bootstrap, default=100, help="bootstrap replicates for the FD CI: the percentile interval of the "
                    "replicates centred on the estimate, which it always contains (0 = none; default 100)")
    fd.add_argument("--weights", action="append", default=[], metavar="NAME=PATH", help="local weights for an encoder (repeatable)")
    fd.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
    fd.add_argument("--split", default="train")
    fd.add_argument("--batch-size", type=opt.batch_size, default=32)
    fd.add_argument("--device", type=opt.device, default="cpu", help="cpu, cuda, cuda:1, ...")
    fd.add_argument("--seed", type=opt.seed, default=0, help="seed of bootstrap and KID subsets")
    fd.add_argument("--no-cache", action="store_true", help="recompute features even if cached")
    fd.set_defaults(handler=run_fd)

    lp = tasks.add_parser("lpips-masked", help="LPIPS inside completion masks (paired rows)",
                          description="Masked LPIPS between row-paired real and completed patches, inside the synthetic "
                          "(else real) dataset's completion_mask, in named modes: spatial-mean, layer-masked, bbox-crop.")
    lp.add_argument("--real", type=opt.existing_folder, required=True)
    lp.add_argument("--fake", type=opt.existing_folder, required=True)
    _masked_lpips_options(lp)
    lp.add_argument("--out", type=opt.output_file, required=True)
    _pair_options(lp)
    lp.set_defaults(handler=run_lpips)

    co = tasks.add_parser("complete", help="completion: masked LPIPS, PSNR and SSIM inside the masks, with CIs",
                          description="Score completed patches against the real patches they were made from (rows "
                          "paired by index; each completed row carries its completion_mask): masked LPIPS in the named "
                          "modes, PSNR and SSIM inside the mask, each a mean with a bootstrap CI; records the mask set.")
    co.add_argument("--real", type=opt.existing_folder, required=True, help="the real patches that were completed")
    co.add_argument("--completed", type=opt.existing_folder, required=True, help="the completed dataset (generate --task complete)")
    _masked_lpips_options(co)
    co.add_argument("--bootstrap", type=opt.bootstrap, default=1000, help="bootstrap resamples of the pairs (0 = no CI; default 1000)")
    co.add_argument("--seed", type=opt.seed, default=0, help="bootstrap seed")
    co.add_argument("--mask-set", default="v1", help="held-out mask set version to recognise (default v1)")
    co.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
    _pair_options(co)
    co.set_defaults(handler=run_complete)

    seg = tasks.add_parser("seg", help="downstream utility: train a segmenter on one set, test on held-out real data",
                           description="Train DeepLabv3+ on --train (synthetic, real or a mix) with several seeds and "
                           "test it on held-out real --test: pooled foreground mIoU and mean Dice, the mean over images "
                           "of each image's mIoU, per-class IoU, each as the mean over seeds with a Student-t interval.")
    seg.add_argument("--train", required=True, help="training dataset folder, FOLDER or FOLDER@SPLIT")
    _downstream_options(seg)
    seg.set_defaults(handler=run_seg)

    tstr = tasks.add_parser("tstr", help="train-on-synthetic, test-on-real: several training sets side by side",
                            description="Score several training sets (--train NAME=FOLDER, repeatable) and a real "
                            "training set (--real-train) on one held-out real test set; synthetic rows also get their "
                            "mIoU ratio to the real-trained row, paired by seed.")
    tstr.add_argument("--train", action="append", required=True, metavar="NAME=FOLDER[@SPLIT]",
                      help="a training set to score (repeatable)")
    tstr.add_argument("--real-train", required=True, help="the real training set, FOLDER or FOLDER@SPLIT (row 'real')")
    _downstream_options(tstr)
    tstr.set_defaults(handler=run_tstr)
