"""The distribution task: FD (+ bootstrap CI), FD-infinity, KID (+CI), PRDC and memorization of a synthetic set
against real held-out patches, under each encoder.

`score_distribution` featurizes both sets once under every requested encoder (cached by content hash); the task
class is `histosynth bench distribution` and the suite's distribution part (one results file per encoder, a
not-run file where an encoder's weights are absent).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from histosynth import options as opt
from histosynth.benchmark.errors import DegenerateFeaturesWarning, MetricInputError
from histosynth.benchmark.results import BenchmarkRun, MetricResult
from histosynth.benchmark.tasks.arguments import chart_path, check_enough, comma_list, pairs
from histosynth.benchmark.tasks.base import COMPLETION_ONLY, SPLIT, BenchmarkTask, SuiteContext, not_run
from histosynth.errors import InputError

if TYPE_CHECKING:
    from histosynth.benchmark.suite import Outputs

DISTRIBUTION_METRICS = ("fd", "fd-inf", "kid", "prdc")
DEFAULT_METRICS = ("fd", "kid", "prdc")
PRDC_METRICS = ("precision", "recall", "density", "coverage")
CI_DEFINITION = ("percentile interval of the bootstrap replicates shifted by median(replicates) - FD, floored at 0: "
                 "contains FD by construction (benchmark/frechet.py, fd_bootstrap)")


def _warn_if_constant(features, where: str) -> None:
    """Warn when every sample of a set has the same features: FD and KID then compare point masses."""
    stats = features.stats
    if stats.count >= 2 and not np.any(stats.cov):
        warnings.warn(f"{where}: all {stats.count} samples have identical {features.encoder} features (zero "
                      "variance); FD and KID compare point masses and PRDC is undefined", DegenerateFeaturesWarning,
                      stacklevel=3)


def _prdc_results(real: np.ndarray, fake: np.ndarray, common: dict) -> list[MetricResult]:
    """PRDC as four results; null values with the reason in `extra` when degenerate features make it undefined."""
    from histosynth.benchmark.prdc import DegenerateNeighborhoods, compute_prdc

    try:
        p = compute_prdc(real, fake)
    except DegenerateNeighborhoods as reason:
        warnings.warn(f"PRDC under {common['encoder']} is undefined and recorded as null: {reason}",
                      DegenerateFeaturesWarning, stacklevel=3)
        return [MetricResult(m, None, extra={"nearest_k": 5, "undefined": str(reason)}, **common) for m in PRDC_METRICS]
    return [MetricResult(m, float(getattr(p, m)), extra={"nearest_k": 5}, **common) for m in PRDC_METRICS]


def score_distribution(
    real: Path | str,
    fake: Path | str,
    encoders: Sequence[str] = ("effnet-lite0",),
    metrics: Sequence[str] = DEFAULT_METRICS,
    bootstrap: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
    split: str = "train",
    batch_size: int = 32,
    device: str = "cpu",
    weights: dict[str, str] | None = None,
    cache_dir: Path | str | None = None,
    use_cache: bool = True,
    progress: bool = True,
    prebuilt: dict | None = None,
    train: Path | str | None = None,
) -> BenchmarkRun:
    """Distribution metrics of `fake` against `real` under each encoder, with provenance.

    With `train` (the generator's training set) it also reports memorization: the fraction of synthetic samples
    whose nearest training sample is much closer than the second nearest (copies).
    `prebuilt` maps encoder names to already-built `Encoder`s (e.g. random weights in tests).
    """
    from histosynth.benchmark.features import extract_features
    from histosynth.benchmark.frechet import fd_bootstrap, fd_from_stats, fd_infinity
    from histosynth.benchmark.intervals import EXTENDED_NOTE, containing
    from histosynth.benchmark.kid import kid
    from histosynth.benchmark.kid_interval import kid_bootstrap_ci
    from histosynth.benchmark.memorization import memorization_ratios
    from histosynth.benchmark.subjects import subject_of

    unknown = sorted(set(metrics) - set(DISTRIBUTION_METRICS))
    if unknown:
        raise MetricInputError(f"unknown metric(s) {unknown}; choose from {', '.join(DISTRIBUTION_METRICS)}")
    start = time.perf_counter()
    chosen = [prebuilt[name] if prebuilt and name in prebuilt else name for name in encoders]
    options = dict(split=split, batch_size=batch_size, device=device, weights=weights, cache_dir=cache_dir,
                   use_cache=use_cache, progress=progress)
    real_run = extract_features(real, chosen, name=Path(real).name, **options)
    fake_run = extract_features(fake, chosen, name=Path(fake).name, **options)
    train_run = extract_features(train, chosen, name=Path(train).name, **options) if train is not None else None
    results: list[MetricResult] = []
    for name in real_run.encoders:
        r, f = real_run.encoders[name], fake_run.encoders[name]
        for run, label in ((real_run, "real"), (fake_run, "fake")):
            _warn_if_constant(run.encoders[name], f"{label} set {run.data.path or run.data.name}")
        n_real, n_fake = r.stats.count, f.stats.count
        common = dict(encoder=name, n_real=n_real, n_fake=n_fake)
        sampled = r.features is not None and f.features is not None
        if "fd" in metrics:
            value = fd_from_stats(r.stats, f.stats, r.features, f.features)
            ci, extra = None, {"bootstrap": bootstrap, "features_used_for_ci": None}
            if bootstrap and sampled:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the point estimate already warned about small N
                    ci = fd_bootstrap(r.features, f.features, n_boot=bootstrap, alpha=1 - confidence, seed=seed,
                                      interval="centred-percentile", estimate=value)
                extra.update(features_used_for_ci=[len(r.features), len(f.features)], interval=ci.interval,
                             interval_definition=CI_DEFINITION, ci_mc_error=[round(e, 6) for e in ci.mc_error],
                             replicate_route=ci.method)
            results.append(MetricResult("fd", value, ci_low=ci.low if ci else None, ci_high=ci.high if ci else None,
                                        ci_level=confidence if ci else None, extra=extra, **common))
        if "fd-inf" in metrics and sampled:
            results.append(MetricResult("fd-inf", fd_infinity(r.features, f.features, seed=seed), **common))
        if "kid" in metrics and sampled:
            k = kid(r.features, f.features, seed=seed)
            once = k.n_subsets == 1
            low = high = None
            if bootstrap:
                _, low, high = kid_bootstrap_ci(r.features, f.features, n_boot=bootstrap, confidence=confidence,
                                                seed=seed)
                low, high = containing(float(k.mean), low, high)
            results.append(MetricResult("kid", float(k.mean), ci_low=low, ci_high=high,
                                        ci_level=confidence if bootstrap else None, extra={
                "std": None if once else float(k.std), "subset_size": k.subset_size, "subsets": k.n_subsets,
                **({"interval": f"{EXTENDED_NOTE} of the whole sets' unbiased MMD² (both sets resampled, pairs of "
                                "copies left out; histosynth.benchmark.kid_interval)"} if bootstrap else {}),
                **({"note": "subset size equals both set sizes: every subset is the whole of both sets, computed once"}
                   if once else {})}, **common))
        if "prdc" in metrics and sampled:
            results.extend(_prdc_results(r.features, f.features, common))
        if train_run is not None and f.features is not None and train_run.encoders[name].features is not None:
            memo = memorization_ratios(f.features, train_run.encoders[name].features)
            low, high = memo.interval(confidence)
            results.append(MetricResult("memorization", memo.fraction, ci_low=low, ci_high=high, ci_level=confidence,
                                        extra={"interval": "Clopper-Pearson over the generated samples",
                                               "threshold": memo.threshold, "flagged": memo.flagged[:100].tolist(),
                                               "n_train": train_run.encoders[name].stats.count,
                                               "median_ratio": float(np.median(memo.ratios))}, **common))
    provenance = {name: {k: v for k, v in e.provenance.items() if k != "encoder"} for name, e in real_run.encoders.items()}
    return BenchmarkRun(
        task="distribution",
        results=results,
        data={"real": real_run.data, "fake": fake_run.data} | ({"train": train_run.data} if train_run else {}),
        subjects={"fake": subject_of(fake, split, fake_run.data)},
        encoders=provenance,
        settings={"metrics": list(metrics), "bootstrap": bootstrap, "confidence": confidence, "seed": seed, "split": split,
                  "batch_size": batch_size, "device": device},
        wall_time_s=time.perf_counter() - start,
    )


def encoder_available(name: str) -> str | None:
    """None when encoder `name`'s weights are on this machine, else why not (gated, not downloaded)."""
    from histosynth.benchmark.encoders import ENCODERS
    from histosynth.benchmark.encoders.weights import EncoderWeightsError, resolve_weights

    try:
        resolve_weights(ENCODERS.get(name), None)
    except EncoderWeightsError as err:
        return f"not run (weights): {str(err).splitlines()[0][:300]}"
    return None


class DistributionTask(BenchmarkTask):
    """`histosynth bench distribution`; in the suite, one file per encoder of the variant."""

    name = "distribution"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--real", type=opt.existing_folder, required=True, help="real dataset folder (histosynth/Hub layout)")
        parser.add_argument("--fake", type=opt.existing_folder, required=True, help="synthetic dataset folder")
        parser.add_argument("--train", type=opt.existing_folder,
                            help="the generator's training set: adds memorization (share of synthetic near-copies)")
        parser.add_argument("--encoders", default="effnet-lite0",
                            help="comma-separated encoders (see `histosynth ls encoders`); default effnet-lite0")
        parser.add_argument("--metrics", default="fd,kid,prdc",
                            help="comma-separated subset of fd,fd-inf,kid,prdc (default fd,kid,prdc)")
        parser.add_argument("--bootstrap", type=opt.bootstrap, default=100,
                            help="bootstrap replicates for the FD and KID CIs: FD's is the percentile interval of the "
                            "replicates centered on the estimate, which it always contains (0 = none; default 100)")
        parser.add_argument("--weights", action="append", default=[], metavar="NAME=PATH",
                            help="local weights for an encoder (repeatable)")
        parser.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
        parser.add_argument("--split", default="train")
        parser.add_argument("--batch-size", type=opt.batch_size, default=32)
        parser.add_argument("--device", type=opt.device, default="cpu", help="cpu, cuda, cuda:1, ...")
        parser.add_argument("--seed", type=opt.seed, default=0, help="seed of bootstrap and KID subsets")
        parser.add_argument("--no-cache", action="store_true", help="recompute features even if cached")

    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        encoders, metrics = comma_list(args.encoders, "encoders"), comma_list(args.metrics, "metrics")
        moments = [m for m in metrics if m in ("fd", "fd-inf", "kid")]  # a covariance / kernel mean needs two samples
        minimum, why = (2, f"{'/'.join(moments)} need at least 2 per set") if moments else (1, "at least one is needed")
        chart_path(args.out)
        check_enough(args.real, args.split, "--real", minimum, why)
        check_enough(args.fake, args.split, "--fake", minimum, why)
        if args.train is not None:
            check_enough(args.train, args.split, "--train", 1, "memorization needs the training samples")
        weights = pairs(args.weights, "--weights", "NAME=PATH")
        unused = sorted(set(weights) - set(encoders))
        if unused:
            raise InputError(f"--weights for {', '.join(map(repr, unused))}, which --encoders does not name "
                             f"({', '.join(encoders)})")
        bootstrap = args.bootstrap if "fd" in metrics or "kid" in metrics else 0
        return score_distribution(args.real, args.fake, encoders, metrics, bootstrap=bootstrap, seed=args.seed,
                                  split=args.split, batch_size=args.batch_size, device=args.device, weights=weights,
                                  use_cache=not args.no_cache, train=args.train)

    def chart_metric(self, run: BenchmarkRun) -> str:
        metrics = run.settings.get("metrics") or []
        return "fd" if "fd" in metrics else run.results[0].metric

    def applies_to(self, outputs: "Outputs") -> str | None:
        return None if outputs.synthesized is not None else COMPLETION_ONLY

    def suite_runs(self, ctx: SuiteContext) -> list[tuple[str, BenchmarkRun]]:
        from histosynth.benchmark.subjects import subject_of

        runs = []
        fake, refs, chosen = ctx.outputs.synthesized, ctx.refs, ctx.variant
        for encoder in chosen.encoders:
            reason = encoder_available(encoder)
            if reason:
                # the roles score_distribution records, so the not-run column groups with the measured ones
                data = {"real": ctx.data_ref(refs.test), "fake": ctx.data_ref(fake), "train": ctx.data_ref(refs.train)}
                run = not_run("distribution", ("fd", "kid"), reason, data, encoder=encoder)
                run.subjects["fake"] = subject_of(fake, SPLIT, data["fake"])
            else:
                run = score_distribution(refs.test, fake, encoders=[encoder], metrics=chosen.distribution_metrics,
                                         bootstrap=chosen.bootstrap, seed=chosen.seed, split=SPLIT, train=refs.train,
                                         progress=False)
            runs.append((f"distribution-{encoder}", run))
        return runs
