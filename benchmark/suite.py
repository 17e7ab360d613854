"""The benchmark suite `histosynth-bench v2`: the suite tasks of the task registry (histosynth.benchmark.tasks), their
exact settings per variant, and the ranking rules the leaderboard applies.

Tasks (each writes one results file per run, benchmark/results.py schema v2; each task decides what it applies to):
- distribution: FD (+ bootstrap CI), KID, PRDC (+ FD-inf in `full`) of the generated set against real held-out
  patches under every encoder of the variant, and memorization against the training set. An encoder whose weights
  are absent (gated models) is "not run": a file whose values are null with that reason, never a failure.
- label-consistency: for generators whose outputs carry the tissue map they were conditioned on; the segmenter's
  real held-out mIoU is the ceiling row.
- completion: for completion-capable generators, PSNR/SSIM (and masked LPIPS where its backbone weights exist)
  inside the published held-out masks (histosynth.masks v1).
- tstr: DeepLabv3+ (tissue maps; tstr-seg.json) and HoVer-Net (nuclei; tstr-nuclei.json) trained on the generated
  set and on the real training set, both tested on the real held-out set.
`tiny` runs on a CPU in CI and in `histosynth submit --check`; `demo` is what a CPU can score properly in minutes per
generator (the committed leaderboard: recipes/leaderboard-{simulator,embedded}.yaml); `full` is what a GPU run publishes.

Generated sets are made from conditions that are not the held-out test set (the training set, or a held-out set of
its own): a segmenter trained on images synthesized from the test maps would be trained on the test labels. Only
completion reads the test patches, as the held-out masks' originals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from histosynth.deprecated import renamed_names
from histosynth.errors import InputError

SUITE_NAME = "histosynth-bench"
SUITE_VERSION = "2"
# The suite's ranking rules (part of its version; histosynth.leaderboard.aggregate applies them):
# - A subject is disqualified (shown struck through, ranked nowhere) when the lower end of its memorization share's
#   95 % interval (Clopper-Pearson over its samples) lies above MEMORIZATION_LIMIT. The limit sits between the two
#   reference rows: real held-out patches, novel by construction, score 0 of 64 (upper bound 0.056) on both
#   datasets, the copy baseline 64 of 64 (lower bound 0.944); 0.10 is above what real data reaches by chance, so a
#   generator as novel as real data is never disqualified, and disqualifies one that near-copies more than one
#   sample in ten with 95 % confidence.
# - A column has power, and enters Borda and mean rank, when its numbers rest on at least MIN_SEEDS seeds (seed-
#   averaged tasks) or MIN_SAMPLES samples (the others), carry intervals, and, where its real-data row and the
#   metric's floor (metric registry: what predicting nothing scores) are known, resolve the span between them by at
#   least POWER_SPAN of its resolvable differences (the median CI half-width of its ranked rows).
# - A Fréchet-distance column (FD, FD-inf: metrics fitted to feature covariances) has power only when both its sets,
#   generated and real, hold at least as many samples as its encoder has feature dimensions (pytorch-fid's and
#   TTUR's maintainers: >= 2048 for Inception's 2048; fewer gives a rank-deficient covariance and an FD biased by an
#   N-dependent term). Below that KID, unbiased at any N, ranks the sets; FD is shown, not aggregated.
MEMORIZATION_LIMIT = 0.10
MIN_SEEDS = 5
MIN_SAMPLES = 64
POWER_SPAN = 3.0
# the data roles of a results file that hold the scored set (every other role is reference data)
SCORED_ROLES = ("fake", "train:synthetic")
# old names of the suite's TSTR parts: selectors of the tstr task with one downstream model
LEGACY_SELECTORS = {"tstr-seg": "tstr:deeplabv3plus", "tstr-nuclei": "tstr:hovernet"}
FULL_ENCODERS = ("inception", "effnet-lite0", "dinov2-vitb14", "dinov2-vitl14", "phikon", "lunit-dino-vits16",
                 "lunit-bt-rn50", "uni", "uni2-h", "virchow2", "h-optimus-0")


@dataclass(frozen=True)
class Variant:
    """The exact settings of one suite variant."""

    name: str
    n: int  # samples generated and scored
    encoders: tuple[str, ...]
    distribution_metrics: tuple[str, ...]
    bootstrap: int
    resolution: int  # label-consistency segmenter input size
    segmenter_steps: int
    tstr_preset: str
    tstr_seeds: int
    seed: int = 0
    tstr_steps: int | None = None  # None: the downstream preset's own schedule
    tstr_nuclei_steps: int | None = None  # the nuclei model's (HoVer-Net's) own budget; None: tstr_steps


VARIANTS = {
    "tiny": Variant("tiny", n=16, encoders=("effnet-lite0",), distribution_metrics=("fd", "kid", "prdc"), bootstrap=20,
                    resolution=32, segmenter_steps=20, tstr_preset="tiny", tstr_seeds=1),
    # n = 64 puts KID's subsets on firm ground; FD at n << d (1280) is biased upward, so the page reads KID first
    # TSTR: the tiny downstream models (Lite0, 64 px crops, batch 4) trained 200 steps, not the 400-step demo preset
    # at 128 px: minutes, not half an hour, per subject on a CPU; 5 seeds, so a Student-t interval has 4 degrees of
    # freedom (2 seeds gave intervals as wide as the metric's range). HoVer-Net trains 1000 steps: at 200 its real
    # row could not be told from predicting nothing (docs/experiments/learning_curves.md)
    "demo": Variant("demo", n=64, encoders=("effnet-lite0",), distribution_metrics=("fd", "kid", "prdc"), bootstrap=100,
                    resolution=64, segmenter_steps=150, tstr_preset="tiny", tstr_seeds=5, tstr_steps=200,
                    tstr_nuclei_steps=1000),
    "full": Variant("full", n=2048, encoders=FULL_ENCODERS, distribution_metrics=("fd", "fd-inf", "kid", "prdc"),
                    bootstrap=200, resolution=128, segmenter_steps=1000, tstr_preset="demo", tstr_seeds=3),
}


@dataclass(frozen=True)
class References:
    """The real data a suite run compares with: dataset folders (split "train" of each). `test` is held out from
    `train` by slide or region; `conditions` feed the generator's synthesis (never `test`: see the module doc);
    completion fills the held-out masks of `test`."""

    train: Path
    test: Path
    conditions: Path

    def __post_init__(self) -> None:
        if Path(self.conditions).resolve() == Path(self.test).resolve():
            raise InputError(f"conditions {self.conditions} are the held-out test set: a generated set made from the "
                             "test maps would leak them into TSTR training; condition on the training set (or another "
                             "held-out set)")


@dataclass(frozen=True)
class Outputs:
    """What a generator made for the suite: the synthesized set if it synthesizes, the completed set if it
    completes (at least one)."""

    synthesized: Path | None
    completed: Path | None = None
    tissue: bool = False  # rows carry the tissue map they were conditioned on
    nuclei: bool = False  # rows carry nuclei instances


def outputs_of(synthesized: Path | None, completed: Path | None = None) -> Outputs:
    """The Outputs of generated dataset folders: whether their rows carry a tissue map and nuclei instance maps is
    read from the first row (a nuclei schema alone can mean classed centroids without instances)."""
    from histosynth.disk import iter_samples

    folder = synthesized or completed
    if folder is None:
        raise InputError("nothing to score: neither a synthesized nor a completed set")
    first = next(iter_samples(folder), None)
    if first is None:
        raise InputError(f"{folder}: holds no rows to score")
    return Outputs(synthesized, completed, tissue=first.tissue is not None,
                   nuclei=first.nuclei is not None and first.nuclei.instances is not None)


def variant(name: str) -> Variant:
    """The named suite variant."""
    if name not in VARIANTS:
        raise InputError(f"unknown suite variant {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


def suite_task_names() -> tuple[str, ...]:
    """The suite's tasks, in the order it runs them (the registry's suite tasks)."""
    from histosynth.benchmark.tasks import suite_tasks

    return tuple(meta.name for meta in suite_tasks())


def applicable_tasks(outputs: Outputs) -> dict[str, str | None]:
    """Task -> None when the suite runs it on these outputs, else the reason it does not."""
    from histosynth.benchmark.tasks import get_task

    return {name: get_task(name).applies_to(outputs) for name in suite_task_names()}


def selection(tasks: Sequence[str]) -> dict[str, tuple[str, ...] | None]:
    """Suite task -> the downstream models selected (None: all) from names like "tstr" or "tstr:hovernet" (and the
    old "tstr-seg" / "tstr-nuclei"); an unknown name is an error listing the suite's."""
    known = suite_task_names()
    chosen: dict[str, tuple[str, ...] | None] = {}
    for raw in tasks:
        name, _, model = LEGACY_SELECTORS.get(raw, raw).partition(":")
        if name not in known or (model and (name != "tstr" or model not in ("deeplabv3plus", "hovernet"))):
            raise InputError(f"unknown suite task {raw!r}; the suite has {', '.join(known)} (tstr:deeplabv3plus and "
                             "tstr:hovernet select one TSTR model)")
        if not model:
            chosen[name] = None
        elif chosen.get(name, ()) is not None:
            chosen[name] = tuple(sorted({*(chosen.get(name) or ()), model}))
    return chosen


def run_suite(outputs: Outputs, refs: References, chosen: Variant, out: Path,
              log: Callable[[str], None] = print, tasks: Sequence[str] | None = None,
              cache: Path | None = None) -> list[Path]:
    """Run the applicable ones of `tasks` (default: every suite task) on `outputs`; one results file per run under
    `out`; returns them.

    What depends only on the real data (the label-consistency segmenter, the real rows of TSTR) is kept under
    `cache` (default: `references/` under histosynth's cache root), keyed by the data's contents, the settings,
    the torch version and the thread count, so scoring many subjects against one reference trains it once."""
    from histosynth.benchmark.tasks import get_task
    from histosynth.benchmark.tasks.base import SuiteContext
    from histosynth.cache_dirs import cache_dir

    selected = selection(suite_task_names() if tasks is None else tasks)
    if outputs.synthesized is None and outputs.completed is None:
        raise InputError("nothing to score: the outputs hold neither a synthesized nor a completed set")
    out.mkdir(parents=True, exist_ok=True)
    settings = {"suite": SUITE_NAME, "suite_version": SUITE_VERSION, "variant": asdict(chosen)}
    cache = Path(cache) if cache is not None else cache_dir("references")
    written: list[Path] = []
    context = SuiteContext(outputs, refs, chosen, cache, log)
    for name in suite_task_names():
        task = get_task(name)
        if name not in selected or task.applies_to(outputs) is not None:
            continue
        context.models = selected[name]
        for stem, run in task.suite_runs(context):
            run.settings.setdefault("suite", settings)
            written.append(run.save(out / f"{stem}.json"))
            log(f"  {stem}: {'not run' if run.settings.get('not_run') else 'done'}")
    return written

__getattr__ = renamed_names(__name__, {"MEMORISATION_LIMIT": "MEMORIZATION_LIMIT"}, globals())
