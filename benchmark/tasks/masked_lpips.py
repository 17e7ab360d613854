"""The masked-LPIPS task: LPIPS between row-paired real and completed patches inside their completion masks, in
named modes (spatial-mean, layer-masked, bbox-crop); `histosynth bench masked-lpips`. The completion task scores the
same pairs with PSNR and SSIM beside LPIPS, with bootstrap CIs."""

from __future__ import annotations

import argparse
import time
from itertools import islice
from pathlib import Path
from typing import Sequence

import numpy as np

from histosynth import options as opt
from histosynth.benchmark.errors import MetricInputError
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.benchmark.tasks.arguments import chart_path, check_enough, comma_list
from histosynth.benchmark.tasks.base import BenchmarkTask
from histosynth.errors import InputError


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
    from histosynth.benchmark.subjects import subject_of

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


def masked_lpips_options(parser: argparse.ArgumentParser) -> None:
    """The masked-LPIPS options `bench masked-lpips` and `bench completion` share."""
    parser.add_argument("--modes", default="spatial-mean,layer-masked,bbox-crop",
                        help="comma-separated masked-LPIPS modes (default: all three)")
    parser.add_argument("--net", default="alex", choices=["alex", "vgg"])
    parser.add_argument("--backbone", type=opt.existing_file,
                        help="torchvision AlexNet/VGG16 weight file (default: the torch hub cache)")


def pair_options(parser: argparse.ArgumentParser) -> None:
    """Options of the tasks that score row-paired real and completed datasets."""
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=opt.count, help="only the first N pairs (at least 1)")
    parser.add_argument("--batch-size", type=opt.batch_size, default=16)
    parser.add_argument("--device", type=opt.device, default="cpu")


def modes_of(text: str) -> list[str]:
    """The --modes option, each a known masked-LPIPS mode."""
    from histosynth.benchmark.lpips_masked import MODES

    modes = comma_list(text, "modes")
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise InputError(f"--modes: unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    return modes


class MaskedLpipsTask(BenchmarkTask):
    """`histosynth bench masked-lpips`."""

    name = "masked-lpips"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--real", type=opt.existing_folder, required=True)
        parser.add_argument("--fake", type=opt.existing_folder, required=True)
        masked_lpips_options(parser)
        parser.add_argument("--out", type=opt.output_file, required=True)
        pair_options(parser)

    def run(self, args: argparse.Namespace) -> BenchmarkRun:
        modes = modes_of(args.modes)
        chart_path(args.out)
        check_enough(args.real, args.split, "--real", 1, "at least one is needed")
        check_enough(args.fake, args.split, "--fake", 1, "at least one is needed")
        return score_masked_lpips(args.real, args.fake, modes, net=args.net, backbone=args.backbone,
                                  split=args.split, limit=args.limit, device=args.device, batch_size=args.batch_size)
