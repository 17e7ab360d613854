"""The real data of perf/dual_lora_compare.py: simulator slides split by slide, the embedded region split by region
(pseudo labels fitted on the training split only) and the real reference row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRAIN_SLIDE_SEED, TEST_SLIDE_SEED = 0, 100
SIM_MPP = 2.0  # 64 px = 128 um, as perf/tstr_simulator.py
EMBEDDED_MPP, EMBEDDED_REGION = 0.5, 512  # 64 px tiles of 32 um; regions of 512 level-0 px = 8 x 8 tiles
RESOLUTION = 64  # every demo preset's


def subset(samples: list, n: int, seed: int) -> list:
    """`n` of `samples` chosen by a seeded permutation (kept in their order), so they span slides and regions."""
    if len(samples) <= n:
        return samples
    keep = np.sort(np.random.default_rng(seed).permutation(len(samples))[:n])
    return [samples[i] for i in keep]


def write_rows(samples: list, out: Path, title: str, text: str) -> Path:
    """`samples` as the train split of a dataset folder (atomic; skipped when it exists)."""
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import write_dataset

    if not (out / "README.md").is_file():
        write_dataset(samples, out, CardInfo(title, text, license="cc0-1.0"))
    return out


def simulator_data(out: Path, train_slides: int, test_slides: int, per_slide: int, n_test: int, seed: int) -> dict[str, Path]:
    """Training patches of slides sim-0.. and `n_test` held-out patches of slides sim-100.., 64 px at 2 um/px."""
    from histosynth.sources.simulator import SimulatorSource

    def slides(first: int, count: int, per: int) -> list:
        return [s for k in range(first, first + count) for s in SimulatorSource(n=per, size=RESOLUTION, seed=k, mpp=SIM_MPP)]

    paths = {"train": out / "real-train", "heldout": out / "real-heldout"}
    if not (paths["train"] / "README.md").is_file():
        write_rows(slides(TRAIN_SLIDE_SEED, train_slides, per_slide), paths["train"], "simulator training slides",
                   f"{per_slide} patches from each of slides sim-{TRAIN_SLIDE_SEED}..sim-{TRAIN_SLIDE_SEED + train_slides - 1}.")
    if not (paths["heldout"] / "README.md").is_file():
        per_test = -(-n_test // test_slides)
        write_rows(subset(slides(TEST_SLIDE_SEED, test_slides, per_test), n_test, seed), paths["heldout"],
                   "simulator held-out slides", f"{n_test} patches of slides sim-{TEST_SLIDE_SEED}.."
                   f"sim-{TEST_SLIDE_SEED + test_slides - 1}, none of which is a training slide.")
    return paths


def embedded_data(out: Path, n_test: int, seed: int) -> dict[str, Path]:
    """The embedded region tiled at 64 px / 0.5 um/px, split by region; pseudo labels fitted on the train split only."""
    from histosynth.dataset import PSEUDOLABEL_KS, build_dataset
    from histosynth.disk import iter_samples
    from histosynth.labels.pipeline import PseudolabelConfig, fit_pseudolabeler
    from histosynth.recipes.encoders import pseudolabel_encoder
    from histosynth.splits import SplitSpec

    paths = {"train": out / "real-train", "heldout": out / "real-heldout"}
    if all((p / "README.md").is_file() for p in paths.values()):
        return paths
    split = out / "embedded-split"
    if not (split / "README.md").is_file():
        build_dataset("embedded", split, {"size": RESOLUTION, "mpp": EMBEDDED_MPP}, pseudolabel=False,
                      split=SplitSpec("region", 0.25, seed, EMBEDDED_REGION))
    config = PseudolabelConfig(ks=PSEUDOLABEL_KS, cell=RESOLUTION // 4, nuclei=True, input_size=64)
    labeler = fit_pseudolabeler(iter_samples(split, "train"), config, out / "cache",
                                  encoder=pseudolabel_encoder(config.encoder), progress=False)
    train = list(labeler.label_all(iter_samples(split, "train")))
    test = subset(list(labeler.label_all(iter_samples(split, "test"))), n_test, seed)
    what = (f"{RESOLUTION} px tiles at {EMBEDDED_MPP} um/px of CMU-1-Small-Region, split by {EMBEDDED_REGION} px "
            f"level-0 regions; pseudo tissue (k={','.join(map(str, PSEUDOLABEL_KS))}) and nuclei "
            f"({config.nuclei_k} classes) fitted on the training split only.")
    write_rows(train, paths["train"], "embedded training regions", f"All training-split {what}")
    write_rows(test, paths["heldout"], "embedded held-out regions", f"{len(test)} held-out-split {what}")
    return paths


def real_reference(train: Path, out: Path, n: int, seed: int) -> Path:
    """`n` real training patches (seeded subset): the real-train vs held-out reference row at the same N."""
    from histosynth.disk import iter_samples

    return write_rows(subset(list(iter_samples(train)), n, seed), out, "real training reference",
                      f"{n} real training patches (seeded subset), scored against the held-out patches.")
