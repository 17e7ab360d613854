"""Images -> FD, side by side with torch-fidelity in one process; figures appended to perf/RESULTS.md.

1. Three encoders (effnet-lite0, inception, lunit-bt-rn50) on N real + N synthetic patches: histosynth's one
   pass (decode once, all encoders) versus torch-fidelity run once per encoder. torch-fidelity gets the very same
   networks: each is registered with torch-fidelity as a feature extractor wrapping the histosynth Encoder
   (torch-fidelity's input contract: uint8 NCHW), so only the pipelines differ.
2. Inception alone, end to end: histosynth versus torch-fidelity's own inception-v3-compat with the same
   weights file (random Kaiming weights: the real file needs a download); FID values must agree.
3. The bare forward rate of each encoder on pre-decoded, pre-resized tensors (the limit for any pipeline).
4. Peak RSS of a histosynth run in a fresh process at N and 4N (must stay flat: streaming statistics).

Run: .venv/bin/python perf/bench_features.py --n 1000   (about 20-30 min on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ENCODERS = ("effnet-lite0", "inception", "lunit-bt-rn50")


def build_data(root: Path, n: int, size: int) -> tuple[Path, Path]:
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset
    from histosynth.sources import build_source

    real, fake = root / f"real-{n}", root / f"fake-{n}"
    if not real.exists():
        write_dataset(build_source("simulator", n=n, size=size, seed=1), real, CardInfo("real", "perf"))
    if not fake.exists():
        write_dataset(build_source("simulator", n=n, size=size, seed=2, nuclei_density=1.5), fake, CardInfo("fake", "perf"))
    return real, fake


def encoders(weights_dir: Path) -> dict:
    from histosynth.benchmark.encoders import load_encoder

    built = {"effnet-lite0": load_encoder("effnet-lite0")}
    inception_file = weights_dir / "inception-random.pth"
    torch.save(load_encoder("inception", pretrained=False, seed=1).backbone.state_dict(), inception_file)
    built["inception"] = load_encoder("inception", weights=inception_file)
    built["lunit-bt-rn50"] = load_encoder("lunit-bt-rn50", pretrained=False, seed=1)
    return built


def register_with_torch_fidelity(encoder) -> str:
    """Wrap a histosynth Encoder as a torch-fidelity feature extractor (uint8 NCHW in, features out)."""
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    from histosynth.benchmark.encoders import preprocess

    name = f"histosynth-{encoder.meta.name}"

    class Wrapped(FeatureExtractorBase):
        def __init__(self, name, features_list, **kwargs):
            super().__init__(name, features_list)
            self.encoder = encoder

        @staticmethod
        def get_provided_features_list():
            return ("feat",)

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "feat"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return None

        def forward(self, x):
            return (self.encoder(preprocess(x, self.encoder.meta.preprocess, layout="nchw")),)

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, Wrapped)
    return name


class UInt8Folder(torch.utils.data.Dataset):
    """A histosynth dataset as torch-fidelity input: decodes each PNG on access (as torch-fidelity's folders do)."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        from histosynth.disk import shard_paths

        self.cells = [c["bytes"] for s in shard_paths(path) for c in pq.read_table(s, columns=["image"]).column("image").to_pylist()]

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i: int) -> torch.Tensor:
        import io

        from PIL import Image

        return torch.from_numpy(np.asarray(Image.open(io.BytesIO(self.cells[i])).convert("RGB")).copy()).permute(2, 0, 1)


def torch_fidelity_fid(real: Path, fake: Path, extractor: str, weights: str | None = None) -> float:
    import torch_fidelity

    kwargs = {"feature_extractor_weights_path": weights} if weights else {}
    return torch_fidelity.calculate_metrics(input1=UInt8Folder(real), input2=UInt8Folder(fake), fid=True, cuda=False, verbose=False,
                                            feature_extractor=extractor, batch_size=32, save_cpu_ram=True, cache=False, **kwargs)["frechet_inception_distance"]


def bare_rate(encoder, n: int, size: int) -> float:
    from histosynth.benchmark.encoders import preprocess

    batch = preprocess(np.random.default_rng(0).integers(0, 256, (32, size, size, 3), dtype=np.uint8), encoder.meta.preprocess)
    with torch.inference_mode():
        encoder(batch)
        start = time.perf_counter()
        done = 0
        while done < n:
            encoder(batch)
            done += len(batch)
    return done / (time.perf_counter() - start)


def peak_rss_child(real: Path, fake: Path, cache: Path) -> float:
    code = (
        "import resource, sys\n"
        "from histosynth.benchmark.tasks.distribution import score_distribution\n"
        f"score_distribution({str(real)!r}, {str(fake)!r}, ['effnet-lite0'], metrics=['fd'], bootstrap=0, use_cache=False, progress=False)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ, "HISTOSYNTH_CACHE": str(cache)})
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="patches per set")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "histosynth-perf")
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["HISTOSYNTH_CACHE"] = str(args.work / "cache")

    from histosynth.benchmark.features import extract_features
    from histosynth.benchmark.frechet import fd_from_stats

    real, fake = build_data(args.work, args.n, args.size)
    nets = encoders(args.work)
    rows = []

    start = time.perf_counter()
    ours_real = extract_features(real, list(nets.values()), use_cache=False, progress=False)
    ours_fake = extract_features(fake, list(nets.values()), use_cache=False, progress=False)
    ours_fd = {name: fd_from_stats(ours_real.encoders[name].stats, ours_fake.encoders[name].stats) for name in nets}
    ours_all = time.perf_counter() - start
    rows.append(("histosynth, one pass, 3 encoders", ours_all, 2 * args.n / ours_all, json.dumps({k: round(v, 4) for k, v in ours_fd.items()})))

    start = time.perf_counter()
    theirs_fd = {name: torch_fidelity_fid(real, fake, register_with_torch_fidelity(net)) for name, net in nets.items()}
    theirs_all = time.perf_counter() - start
    rows.append(("torch-fidelity, once per encoder, same 3 networks", theirs_all, 2 * args.n / theirs_all, json.dumps({k: round(v, 4) for k, v in theirs_fd.items()})))

    start = time.perf_counter()
    single_real = extract_features(real, [nets["inception"]], use_cache=False, progress=False)
    single_fake = extract_features(fake, [nets["inception"]], use_cache=False, progress=False)
    ours_inc = fd_from_stats(single_real.encoders["inception"].stats, single_fake.encoders["inception"].stats)
    ours_single = time.perf_counter() - start
    rows.append(("histosynth, inception only", ours_single, 2 * args.n / ours_single, f"{ours_inc:.6f}"))

    start = time.perf_counter()
    theirs_inc = torch_fidelity_fid(real, fake, "inception-v3-compat", str(args.work / "inception-random.pth"))
    theirs_single = time.perf_counter() - start
    rows.append(("torch-fidelity, inception-v3-compat, same weights file", theirs_single, 2 * args.n / theirs_single, f"{theirs_inc:.6f}"))

    rates = {name: bare_rate(net, 2 * args.n if name != "inception" else args.n, args.size) for name, net in nets.items()}
    limit_all = 2 * args.n / sum(2 * args.n / r for r in rates.values())
    rss_small = peak_rss_child(*build_data(args.work, args.n // 4, args.size), args.work / "rss")
    rss_large = peak_rss_child(real, fake, args.work / "rss")

    lines = [
        f"\n## Images to FD, {args.n}+{args.n} patches of {args.size} px (`perf/bench_features.py --n {args.n}`)\n",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}; CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); load average before/after: {os.getloadavg()[0]:.2f}",
        "- Same networks on both sides (effnet-lite0 real ImageNet weights; inception and lunit-bt-rn50 random weights, "
        "as their real files need a download); simulator patches from histosynth's `simulator` source.\n",
        "| pipeline | seconds | images/s | FD |", "|---|---:|---:|---|",
        *[f"| {name} | {sec:.1f} | {ips:.1f} | {fd} |" for name, sec, ips, fd in rows],
        "",
        f"- Speed-up of the one pass over torch-fidelity once per encoder: {theirs_all / ours_all:.2f}x; inception alone: {theirs_single / ours_single:.2f}x.",
        "- FD agreement (relative): " + ", ".join(f"{k} {abs(ours_fd[k] - theirs_fd[k]) / abs(theirs_fd[k]):.1e}" for k in nets)
        + f"; inception-v3-compat {abs(ours_inc - theirs_inc) / abs(theirs_inc):.1e}.",
        "- Bare forward rate (pre-decoded, pre-resized batches of 32): " + ", ".join(f"{k} {v:.1f} img/s" for k, v in rates.items())
        + f"; the 3-encoder limit is {limit_all:.1f} img/s, the one pass reaches {2 * args.n / ours_all:.1f} "
        f"({100 * (2 * args.n / ours_all) / limit_all:.0f}% of the limit).",
        f"- Peak RSS of a fresh process scoring effnet-lite0 FD: {rss_small:.0f} MB at {args.n // 4}+{args.n // 4} patches, "
        f"{rss_large:.0f} MB at {args.n}+{args.n} (x{rss_large / rss_small:.2f} for 4x the data).",
    ]
    print("\n".join(lines))
    with open(args.results, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
