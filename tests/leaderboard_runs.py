"""A small, fully known leaderboard, written as real results files (BenchmarkRun.save), for the leaderboard tests.

Distribution (FD and precision with CIs, N = 64) on `sim-test` under one encoder: htd, htd-no-copy, pix2pix and real
held-out data (kind real, the reference line). TSTR mIoU over 5 seeds for htd and htd-no-copy only, so pix2pix has
partial coverage. Every column has power under the suite's rules. A second FD run of htd at another N
(`other_key_run`, N = 32, so without power) has another comparability key: a column of its own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import histosynth
from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult, Subject

ENCODER = {"lite0": {"weights": "sha256:enc", "preprocess": "224 bicubic 0.5/0.5"}}
REAL = DataRef("sim-test", content_hash="sha256:real-sim", n=16)
CODE = {"histosynth": histosynth.__version__, "git_commit": "0123456789abcdef", "python": "3"}  # fixed: no torch import

# name -> (fd, fd CI, precision); CIs: htd and htd-no-copy overlap, pix2pix is clearly worse; precision CIs +-0.02
DISTRIBUTION = {
    "htd": (10.0, (9.0, 11.0), 0.70),
    "htd-no-copy": (10.5, (10.2, 12.0), 0.80),
    "pix2pix": (20.0, (19.0, 21.0), 0.60),
}
REAL_FD = (2.0, (1.5, 2.5), 0.90)
TSTR_MIOU = {"htd": (0.50, (0.45, 0.55)), "htd-no-copy": (0.30, (0.28, 0.32))}
REAL_MIOU = (0.60, (0.58, 0.62))


def digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def generator(name: str) -> Subject:
    return Subject("generator", name, digest(f"data-{name}"), version="0.1.0", checkpoint_hash=digest(f"ckpt-{name}"))


def row_id(name: str) -> str:
    """The leaderboard row id of the fixture's generator `name` (rows are keyed by checkpoint)."""
    return f"generator:{name}@{digest(f'ckpt-{name}')}"


REAL_SUBJECT = Subject("real", "simulator", "sha256:heldout", repo="histosynth/sim-heldout", revision="v1.0.0")


def distribution_run(subject: Subject, fd: float, ci: tuple[float, float], precision: float, n_fake: int = 64,
                     real: DataRef = REAL, encoder: str = "lite0") -> BenchmarkRun:
    """FD and precision of `subject` under `encoder` (default "lite0", which no registry knows, so no rule reads its
    feature dimension)."""
    results = [MetricResult("fd", fd, encoder, ci[0], ci[1], 0.95, real.n, n_fake),
               MetricResult("precision", precision, encoder, precision - 0.02, precision + 0.02, 0.95, real.n, n_fake)]
    fake = DataRef(subject.name, content_hash=subject.content_hash, n=n_fake)
    return BenchmarkRun("distribution", results, {"real": real, "fake": fake}, {"fake": subject},
                        encoders={encoder: ENCODER["lite0"]},
                        settings={"metrics": ["fd", "prdc"], "seed": 0}, code=dict(CODE))


def tstr_run() -> BenchmarkRun:
    test = DataRef("sim-test", content_hash="sha256:real-sim", n=16)
    subjects = {f"train:{name}": generator(name) for name in TSTR_MIOU} | {"train:real": REAL_SUBJECT}
    results = [MetricResult("miou", v, None, lo, hi, 0.95, subject=f"train:{name}")
               for name, (v, (lo, hi)) in TSTR_MIOU.items()]
    results.append(MetricResult("miou", REAL_MIOU[0], None, *REAL_MIOU[1], 0.95, subject="train:real"))
    data = {"test": test} | {role: DataRef(s.name, content_hash=s.content_hash, n=32) for role, s in subjects.items()}
    return BenchmarkRun("tstr", results, data, subjects, settings={"model": "deeplabv3plus", "preset": "tiny",
                                                                    "train": "all", "seeds": [0, 1, 2, 3, 4],
                                                                    "schema": "tissue"},
                        code=dict(CODE))


def write_runs(folder: Path) -> Path:
    """Write the fixture's results files into `folder` (created) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, (fd, ci, precision) in DISTRIBUTION.items():
        distribution_run(generator(name), fd, ci, precision).save(folder / f"distribution-{name}.json")
    distribution_run(REAL_SUBJECT, *REAL_FD).save(folder / "distribution-real.json")
    (folder / "sub").mkdir(exist_ok=True)
    tstr_run().save(folder / "sub" / "tstr.json")
    return folder


def other_key_run() -> BenchmarkRun:
    """htd's FD at another N of generated images: another comparability key than the fixture's FD column."""
    return distribution_run(generator("htd"), 12.0, (11.0, 13.0), 0.7, n_fake=32)
