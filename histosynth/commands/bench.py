"""`histosynth bench fd|lpips-masked`: score a synthetic dataset against a real one; results as JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from histosynth.errors import InputError


def _weights(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--weights takes NAME=PATH, got {pair!r}")
        out[name] = path
    return out


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
    import torch

    for option, values in names.items():
        if not values:
            raise InputError(f"--{option}: name at least one (comma-separated)")
    if getattr(args, "bootstrap", 0) < 0 or getattr(args, "bootstrap", 0) == 1:
        raise InputError(f"--bootstrap must be 0 (no interval) or at least 2 replicates, got {args.bootstrap}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    try:
        torch.device(args.device)
    except RuntimeError as err:
        raise InputError(f"--device {args.device!r}: {err}") from None
    _enough(args.real, args.split, "--real", minimum, why)
    _enough(args.fake, args.split, "--fake", minimum, why)


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


def register(verbs: argparse._SubParsersAction) -> None:
    bench = verbs.add_parser("bench", help="score synthetic data against real data",
                             description="Benchmark a synthetic dataset against a real one. Results are one JSON file "
                             "(values, CIs, N, code/encoder/data versions, wall time) plus a bar chart next to it.")
    tasks = bench.add_subparsers(dest="task", metavar="<task>", required=True)

    fd = tasks.add_parser("fd", help="Frechet distance (+CI), KID, PRDC under several encoders",
                          description="Featurise both datasets once under each encoder (statistics cached by image "
                          "content) and compute FD with a bootstrap CI, KID and precision/recall/density/coverage.")
    fd.add_argument("--real", type=Path, required=True, help="real dataset folder (histosynth/Hub layout)")
    fd.add_argument("--fake", type=Path, required=True, help="synthetic dataset folder")
    fd.add_argument("--train", type=Path, help="the generator's training set: adds memorisation (share of synthetic copies)")
    fd.add_argument("--encoders", default="effnet-lite0", help="comma-separated encoders (see `histosynth ls encoders`); default effnet-lite0")
    fd.add_argument("--metrics", default="fd,kid,prdc", help="comma-separated subset of fd,fd-inf,kid,prdc (default fd,kid,prdc)")
    fd.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicates for the FD CI: the percentile interval of the "
                    "replicates centred on the estimate, which it always contains (0 = none; default 100)")
    fd.add_argument("--weights", action="append", default=[], metavar="NAME=PATH", help="local weights for an encoder (repeatable)")
    fd.add_argument("--out", type=Path, required=True, help="results JSON to write")
    fd.add_argument("--split", default="train")
    fd.add_argument("--batch-size", type=int, default=32)
    fd.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    fd.add_argument("--seed", type=int, default=0, help="seed of bootstrap and KID subsets")
    fd.add_argument("--no-cache", action="store_true", help="recompute features even if cached")
    fd.set_defaults(handler=run_fd)

    lp = tasks.add_parser("lpips-masked", help="LPIPS inside completion masks (paired rows)",
                          description="Masked LPIPS between row-paired real and completed patches, inside the synthetic "
                          "(else real) dataset's completion_mask, in named modes: spatial-mean, layer-masked, bbox-crop.")
    lp.add_argument("--real", type=Path, required=True)
    lp.add_argument("--fake", type=Path, required=True)
    lp.add_argument("--modes", default="spatial-mean,layer-masked,bbox-crop", help="comma-separated modes (default: all three)")
    lp.add_argument("--net", default="alex", choices=["alex", "vgg"])
    lp.add_argument("--backbone", type=Path, help="torchvision AlexNet/VGG16 weight file (default: the torch hub cache)")
    lp.add_argument("--out", type=Path, required=True)
    lp.add_argument("--split", default="train")
    lp.add_argument("--limit", type=int, help="only the first N pairs")
    lp.add_argument("--batch-size", type=int, default=16)
    lp.add_argument("--device", default="cpu")
    lp.set_defaults(handler=run_lpips)
