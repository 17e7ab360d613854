"""The completion benchmark: how well a generator fills masked regions of real patches, inside the masks.

    run = score_completion("real/", "completed/")   # or `histosynth bench completion --real R --completed C --out RUN.json`

Pairing: row j of the completed dataset is the completion of row j of the real dataset (by index, in split order:
`histosynth generate ... --task complete --conditions REAL` writes rows in condition order). Each completed row
must carry its completion_mask (True = filled); the real rows' masks are not used. Pairs must have the same size.

Per pair, inside the mask:
- masked LPIPS in each named mode of histosynth.benchmark.lpips_masked (spatial-mean, layer-masked, bbox-crop);
- PSNR over the masked pixels' RGB values (data range 255). A pair equal inside the mask has MSE 0 and an infinite
  PSNR; every PSNR is capped at PSNR_CAP_DB, the PSNR of uint8 rounding error (MSE 1/12 level^2, 58.92 dB), so
  means and intervals stay finite and the order of any two completions is kept; `extra.capped` counts them;
- SSIM as the mean of skimage's full SSIM map over the masked pixels (and the 3 channels): Wang et al.'s settings
  (Gaussian window sigma 1.5, population covariances, K1 0.01, K2 0.03, data range 255) computed on the whole
  patch, so a masked pixel's window also sees known pixels around it, as LPIPS' receptive fields do.
Each metric is the mean over pairs with a percentile bootstrap interval of the mean (scipy.stats.bootstrap,
`bootstrap` resamples of the pairs, seeded). The run records the masks: the held-out set and version when every
row's mask is that set's mask j at the row's size, else "custom" with a hash of the masks; and how many rows changed
known pixels (a completion should change none).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from histosynth import options as opt
from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.intervals import EXTENDED_NOTE, containing
from histosynth.benchmark.metric_registry import LPIPS_MODES as MODES
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.tasks.arguments import chart_path, check_enough
from histosynth.benchmark.tasks.base import BenchmarkTask, SuiteContext
from histosynth.benchmark.tasks.masked_lpips import masked_lpips_options, modes_of, pair_options
from histosynth.masks import HELDOUT_VERSION

if TYPE_CHECKING:
    from histosynth.benchmark.suite import Outputs

PSNR_CAP_DB = 10 * math.log10(255.0**2 * 12)  # MSE of uniform rounding to integer levels is 1/12
CONFIDENCE = 0.95


def masked_psnr(real: np.ndarray, completed: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB) of two uint8 (H, W, 3) images over the pixels where `mask` is True, capped at PSNR_CAP_DB."""
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio

    a, b = real[mask], completed[mask]
    if mean_squared_error(a, b) == 0:
        return PSNR_CAP_DB
    return min(float(peak_signal_noise_ratio(a, b, data_range=255)), PSNR_CAP_DB)


def masked_ssim(real: np.ndarray, completed: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map of two uint8 (H, W, 3) images over the masked pixels and channels (see module doc)."""
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(real, completed, channel_axis=2, data_range=255, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False, full=True)
    return float(ssim_map[mask].mean())


def mean_interval(values: np.ndarray, resamples: int, seed: int,
                  confidence: float = CONFIDENCE) -> tuple[float, float | None, float | None]:
    """(mean, low, high): the percentile bootstrap interval of the mean; no interval under 2 values or 0 resamples."""
    from scipy.stats import bootstrap

    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2 or resamples == 0:
        return mean, None, None
    if np.all(values == values[0]):  # every resample has the same mean
        return mean, mean, mean
    ci = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence, method="percentile",
                   random_state=np.random.default_rng(seed)).confidence_interval
    low, high = containing(mean, float(ci.low), float(ci.high))
    return mean, low, high


def _pairs(real: Path, completed: Path, split: str, limit: int | None):
    """Row-paired images and the completed rows' masks, checked; plus how many rows changed known pixels."""
    from histosynth.disk import iter_samples

    real_rows = list(islice(iter_samples(real, split), limit))
    # row i completes condition i mod len(real) (generators cycle their conditions), so rows past len(real) repeat
    done_rows = list(islice(iter_samples(completed, split), len(real_rows)))
    if len(real_rows) != len(done_rows):
        raise MetricInputError(f"{completed}: {len(done_rows)} rows, but {real} has {len(real_rows)} to score; the "
                               "completion benchmark pairs rows by index")
    if not done_rows:
        raise MetricInputError(f"{completed}: split {split!r} has no rows")
    masks, changed = [], 0
    for j, (a, b) in enumerate(zip(real_rows, done_rows, strict=True)):
        if a.image.shape != b.image.shape:
            raise MetricInputError(f"{completed}: row {j} is {b.image.shape}, real row {j} is {a.image.shape}")
        if b.completion_mask is None:
            raise MetricInputError(f"{completed}: row {j} ({b.where}) has no completion_mask; completed rows must carry "
                                   "the mask they were completed in")
        if not b.completion_mask.any():
            raise MetricInputError(f"{completed}: row {j} has an empty completion_mask")
        masks.append(b.completion_mask)
        changed += int(not np.array_equal(a.image[~b.completion_mask], b.image[~b.completion_mask]))
    return [s.image for s in real_rows], [s.image for s in done_rows], masks, changed


def mask_record(masks: Sequence[np.ndarray], version: str = HELDOUT_VERSION) -> dict:
    """Which masks were scored: the held-out set's record when row j holds its mask j, else a hash of the masks."""
    from histosynth.masks import heldout_mask, heldout_set

    if all(np.array_equal(m, heldout_mask(j, m.shape, version)) for j, m in enumerate(masks)):
        return heldout_set(version).record()
    digest = hashlib.sha256()
    for m in masks:
        digest.update(np.asarray(m.shape, np.int64).tobytes() + np.packbits(m).tobytes())
    return {"mask_set": "custom", "sha256": digest.hexdigest()}


def score_completion(real: Path | str, completed: Path | str, modes: Sequence[str] = MODES, net: str = "alex",
                     backbone: Path | str | None = None, pnet_rand: bool = False, split: str = "train",
                     limit: int | None = None, bootstrap: int = 1000, seed: int = 0, device: str = "cpu",
                     batch_size: int = 16, mask_version: str = HELDOUT_VERSION) -> BenchmarkRun:
    """Masked LPIPS (each mode), PSNR and SSIM inside the masks of row-paired real and completed patches."""
    from histosynth.benchmark.features import scan_rows
    from histosynth.benchmark.lpips_masked import MaskedLPIPS, backbone_record
    from histosynth.benchmark.subjects import subject_of

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise MetricInputError(f"masked-LPIPS modes {list(modes)}: choose from {', '.join(MODES)} (none: PSNR and "
                               "SSIM only, e.g. where the LPIPS backbone weights are unavailable)")
    if bootstrap < 0 or bootstrap == 1:
        raise MetricInputError(f"bootstrap must be 0 (no interval) or at least 2 resamples, got {bootstrap}")
    start = time.perf_counter()
    real, completed = Path(real), Path(completed)
    real_images, done_images, masks, changed = _pairs(real, completed, split, limit)
    n = len(masks)
    per_sample: dict[str, tuple[np.ndarray, bool]] = {}
    metric = MaskedLPIPS(net=net, backbone=backbone, pnet_rand=pnet_rand).to(device) if modes else None
    by_size: dict[tuple[int, ...], list[int]] = {}
    for j, image in enumerate(real_images):
        by_size.setdefault(image.shape, []).append(j)
    for mode in modes:
        values = np.empty(n)
        for rows in by_size.values():  # one LPIPS batch per patch size
            values[rows] = metric(np.stack([real_images[j] for j in rows]), np.stack([done_images[j] for j in rows]),
                                  np.stack([masks[j] for j in rows]), mode=mode, batch_size=batch_size).numpy()
        per_sample[f"lpips-{mode}"] = (values, False)
    psnr = np.array([masked_psnr(a, b, m) for a, b, m in zip(real_images, done_images, masks, strict=True)])
    per_sample["psnr-masked"] = (psnr, True)
    per_sample["ssim-masked"] = (np.array([masked_ssim(a, b, m) for a, b, m in
                                           zip(real_images, done_images, masks, strict=True)]), True)
    results = []
    for k, (name, (values, higher)) in enumerate(per_sample.items()):
        mean, low, high = mean_interval(values, bootstrap, seed + k)
        extra: dict = {"per_sample": np.round(values, 6).tolist()}
        if name.startswith("lpips"):
            extra["net"] = net
        if name == "psnr-masked":
            extra.update(capped=int(np.sum(values >= PSNR_CAP_DB)), cap_db=round(PSNR_CAP_DB, 4))
        results.append(MetricResult(name, mean, ci_low=low, ci_high=high, ci_level=CONFIDENCE if low is not None else None,
                                    n_real=n, n_fake=n, extra=extra, higher_is_better=higher))
    refs = {name: DataRef(path.name, str(path.resolve()), scan_rows(path, split).content_hash, n)
            for name, path in (("real", real), ("fake", completed))}
    settings = {"modes": list(modes), "net": net, "split": split, "limit": limit, "pairing": "row index",
                "masks": mask_record(masks, mask_version), "rows_with_changed_known_pixels": changed,
                "interval": f"{EXTENDED_NOTE}, of the mean over pairs, {bootstrap} resamples, seed {seed}",
                "psnr": f"over masked RGB values, capped at {PSNR_CAP_DB:.4f} dB (MSE 1/12)",
                "ssim": "mean of skimage's SSIM map (Gaussian sigma 1.5, population covariance) over masked pixels"}
    return BenchmarkRun(task="completion", results=results, data=refs,
                        subjects={"fake": subject_of(completed, split, refs["fake"])},
                        encoders={f"lpips-{net}": backbone_record(metric.backbone_file)} if metric else {},
                        settings=settings, wall_time_s=time.perf_counter() - start)


class CompletionTask(BenchmarkTask):
    """`histosynth bench completion`; in the suite, the completion of the test patches' held-out masks (PSNR and
    SSIM always; masked LPIPS where its backbone weights are on this machine, else recorded as not run)."""

    name = "completion"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--real", type=opt.existing_folder, required=True, help="the real patches that were completed")
        parser.add_argument("--completed", type=opt.existing_folder, required=True,
                            help="the completed dataset (generate --task complete)")
        masked_lpips_options(parser)
        parser.add_argument("--bootstrap", type=opt.bootstrap, default=1000,
                            help="bootstrap resamples of the pairs (0 = no CI; default 1000)")
        parser.add_argument("--seed", type=opt.seed, default=0, help="bootstrap seed")
        parser.add_argument("--mask-set", default="v1", help="held-out mask set version to recognize (default v1)")
        parser.add_argument("--out", type=opt.output_file, required=True, help="results JSON to write")
        pair_options(parser)

    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        modes = modes_of(args.modes)
        chart_path(args.out)
        check_enough(args.real, args.split, "--real", 1, "at least one is needed")
        check_enough(args.completed, args.split, "--completed", 1, "at least one is needed")
        return score_completion(args.real, args.completed, modes, net=args.net, backbone=args.backbone,
                                split=args.split, limit=args.limit, bootstrap=args.bootstrap, seed=args.seed,
                                device=args.device, batch_size=args.batch_size, mask_version=args.mask_set)

    def chart_metric(self, run: BenchmarkRun) -> str:
        return next((r.metric for r in run.results if r.metric.startswith("lpips-")), run.results[0].metric)

    def applies_to(self, outputs: "Outputs") -> str | None:
        return None if outputs.completed is not None else "the generator does not complete"

    def suite_runs(self, ctx: SuiteContext) -> list[tuple[str, BenchmarkRun]]:
        from histosynth.benchmark.lpips_masked import LPIPSWeightsError, backbone_file

        try:
            backbone_file("alex")
            modes: tuple[str, ...] = ("layer-masked",)
        except LPIPSWeightsError:
            modes = ()  # PSNR and SSIM still run; the file records that LPIPS did not
        chosen = ctx.variant
        run = score_completion(ctx.refs.test, ctx.outputs.completed, modes=modes, bootstrap=chosen.bootstrap,
                               seed=chosen.seed, limit=chosen.n)
        if not modes:
            run.results.append(MetricResult("lpips-layer-masked", None, extra={
                "undefined": "not run (weights): torchvision AlexNet ImageNet weights are not in the torch hub cache",
                "not_run": True}))
        return [("completion", run)]
