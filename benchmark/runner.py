"""Benchmark runs: score a synthetic dataset against a real one and return a `BenchmarkRun` (results as data).

`score_distribution` featurises both sets once under every requested encoder (cached by content hash) and
computes FD (+ bootstrap CI), FD-infinity, KID and PRDC per encoder. `score_masked_lpips` compares paired
images inside their completion masks.
"""

from __future__ import annotations

import time
import warnings
from itertools import islice
from pathlib import Path
from typing import Sequence

import numpy as np

from histosynth.benchmark.errors import DegenerateFeaturesWarning, MetricInputError
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.subjects import subject_of

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
    from histosynth.benchmark.prdc import DegenerateNeighbourhoods, compute_prdc

    try:
        p = compute_prdc(real, fake)
    except DegenerateNeighbourhoods as reason:
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

    With `train` (the generator's training set) it also reports memorisation: the fraction of synthetic samples
    whose nearest training sample is much closer than the second nearest (copies).
    `prebuilt` maps encoder names to already-built `Encoder`s (e.g. random weights in tests).
    """
    from histosynth.benchmark.features import extract_features
    from histosynth.benchmark.frechet import fd_bootstrap, fd_from_stats, fd_infinity
    from histosynth.benchmark.intervals import EXTENDED_NOTE, containing
    from histosynth.benchmark.kid import kid
    from histosynth.benchmark.kid_interval import kid_bootstrap_ci
    from histosynth.benchmark.memorization import memorization_ratios

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


def _paired_images(real: Path, fake: Path, split: str, limit: int | None):
    from histosynth.benchmark.features import scan_rows
    from histosynth.disk import iter_samples

    real_samples = list(islice(iter_samples(real, split), limit))
    fake_samples = list(islice(iter_samples(fake, split), limit))
    if len(real_samples) != len(fake_samples):
        raise MetricInputError(f"masked LPIPS pairs rows by index: {real} has {len(real_samples)} rows, {fake} has {len(fake_samples)}")
    masks = []
    for i, (a, b) in enumerate(zip(real_samples, fake_samples, strict=False)):
        if a.image.shape != b.image.shape:
            raise MetricInputError(f"row {i}: real {a.image.shape} and synthetic {b.image.shape} patches differ in size")
        mask = b.completion_mask if b.completion_mask is not None else a.completion_mask
        if mask is None:
            raise MetricInputError(f"row {i} ({b.where}): no completion_mask in either dataset; masked LPIPS needs one")
        masks.append(mask)
    refs = {name: DataRef(Path(p).name, str(Path(p).resolve()), scan_rows(p, split).content_hash, len(real_samples))
            for name, p in (("real", real), ("fake", fake))}
    return np.stack([s.image for s in real_samples]), np.stack([s.image for s in fake_samples]), np.stack(masks), refs


def score_masked_lpips(
    real: Path | str,
    fake: Path | str,
    modes: Sequence[str] = ("layer-masked",),
    net: str = "alex",
    backbone: Path | str | None = None,
    pnet_rand: bool = False,
    split: str = "train",
    limit: int | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> BenchmarkRun:
    """Masked LPIPS of row-paired (real, completed) patches inside the completion masks, per named mode."""
    from histosynth.benchmark.lpips_masked import MaskedLPIPS, backbone_record

    start = time.perf_counter()
    real_images, fake_images, masks, refs = _paired_images(Path(real), Path(fake), split, limit)
    metric = MaskedLPIPS(net=net, backbone=backbone, pnet_rand=pnet_rand).to(device)
    results = []
    for mode in modes:
        values = metric(real_images, fake_images, masks, mode=mode, batch_size=batch_size).numpy().astype(np.float64)
        sem = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0
        results.append(MetricResult(f"lpips-{mode}", float(values.mean()), ci_low=float(values.mean() - 1.96 * sem),
                                    ci_high=float(values.mean() + 1.96 * sem), ci_level=0.95, n_real=len(values), n_fake=len(values),
                                    extra={"net": net, "per_sample": values.round(6).tolist()}))
    return BenchmarkRun(task="masked-lpips", results=results, data=refs, subjects={"fake": subject_of(fake, split, refs["fake"])},
                        encoders={f"lpips-{net}": backbone_record(metric.backbone_file)},
                        settings={"modes": list(modes), "net": net, "split": split, "limit": limit}, wall_time_s=time.perf_counter() - start)
