"""The benchmark suite `histosynth-bench v1`: its tasks, their exact settings per variant, and what each applies to.

Tasks (each writes one results file per run, benchmark/results.py schema v2):
- distribution: FD (+ bootstrap CI), KID, PRDC (+ FD-inf in `full`) of the generated set against real held-out
  patches under every encoder of the variant, and memorisation against the training set. An encoder whose weights
  are absent (gated models) is "not run": a file whose values are null with that reason, never a failure.
- label-consistency: for generators whose outputs carry the tissue map they were conditioned on; the segmenter's
  real held-out mIoU is the ceiling row.
- completion: for completion-capable generators, PSNR/SSIM (and masked LPIPS where its backbone weights exist)
  inside the published held-out masks (histosynth.masks v1).
- tstr-seg / tstr-nuclei: DeepLabv3+ (tissue maps) or HoVer-Net (nuclei) trained on the generated set and on the
  real training set, both tested on the real held-out set.
`tiny` runs on a CPU in CI and in `histosynth submit --check`; `demo` is what a CPU can score properly in minutes per
generator (the committed leaderboard: recipes/leaderboard-{simulator,embedded}.yaml); `full` is what a GPU run publishes.

Generated sets are made from conditions that are not the held-out test set (the training set, or a held-out set of
its own): a segmenter trained on images synthesized from the test maps would be trained on the test labels. Only
completion reads the test patches, as the held-out masks' originals.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.errors import InputError

SUITE_NAME = "histosynth-bench"
SUITE_VERSION = "2"
# The suite's ranking rules (part of its version; histosynth.leaderboard.aggregate applies them):
# - A subject is disqualified (shown struck through, ranked nowhere) when the lower end of its memorisation share's
#   95 % interval (Clopper-Pearson over its samples) lies above MEMORISATION_LIMIT. The limit sits between the two
#   reference rows: real held-out patches, novel by construction, score 0 of 64 (upper bound 0.056) on both
#   datasets, the copy baseline 64 of 64 (lower bound 0.944); 0.10 is above what real data reaches by chance, so a
#   generator as novel as real data is never disqualified, and disqualifies one that near-copies more than one
#   sample in ten with 95 % confidence.
# - A column has power, and enters Borda and mean rank, when its numbers rest on at least MIN_SEEDS seeds (seed-
#   averaged tasks) or MIN_SAMPLES samples (the others), carry intervals, and, where its real-data row and the
#   metric's floor (metric registry: what predicting nothing scores) are known, resolve the span between them by at
#   least POWER_SPAN of its resolvable differences (the median CI half-width of its ranked rows).
MEMORISATION_LIMIT = 0.10
MIN_SEEDS = 5
MIN_SAMPLES = 64
POWER_SPAN = 3.0
# the data roles of a results file that hold the scored set (every other role is reference data)
SCORED_ROLES = ("fake", "train:synthetic")
TASKS = ("distribution", "label-consistency", "completion", "tstr-seg", "tstr-nuclei")
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


VARIANTS = {
    "tiny": Variant("tiny", n=16, encoders=("effnet-lite0",), distribution_metrics=("fd", "kid", "prdc"), bootstrap=20,
                    resolution=32, segmenter_steps=20, tstr_preset="tiny", tstr_seeds=1),
    # n = 64 puts KID's subsets on firm ground; FD at n << d (1280) is biased upward, so the page reads KID first
    # TSTR: the tiny downstream models (Lite0, 64 px crops, batch 4) trained 200 steps, not the 400-step demo preset
    # at 128 px: minutes, not half an hour, per subject on a CPU; 5 seeds, so a Student-t interval has 4 degrees of
    # freedom (2 seeds gave intervals as wide as the metric's range)
    "demo": Variant("demo", n=64, encoders=("effnet-lite0",), distribution_metrics=("fd", "kid", "prdc"), bootstrap=100,
                    resolution=64, segmenter_steps=150, tstr_preset="tiny", tstr_seeds=5, tstr_steps=200),
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


def applicable_tasks(outputs: Outputs) -> dict[str, str | None]:
    """Task -> None when it applies to these outputs, else the reason it does not."""
    if outputs.synthesized is None:
        # a completion-only generator: the completed patches are mostly the real test pixels, so scoring them as a
        # synthesized set would rank pass-through first
        only = "the generator does not synthesize (completion only)"
        return {"distribution": only, "label-consistency": only,
                "completion": None if outputs.completed is not None else "the generator does not complete",
                "tstr-seg": only, "tstr-nuclei": only}
    return {"distribution": None,
            "label-consistency": None if outputs.tissue else "outputs carry no conditioning tissue map",
            "completion": None if outputs.completed is not None else "the generator does not complete",
            "tstr-seg": None if outputs.tissue else "outputs carry no tissue map to train a segmenter on",
            "tstr-nuclei": None if outputs.nuclei else "outputs carry no nuclei instances"}


def encoder_available(name: str) -> str | None:
    """None when encoder `name`'s weights are on this machine, else why not (gated, not downloaded)."""
    from histosynth.benchmark.encoders import ENCODERS
    from histosynth.benchmark.encoders.weights import EncoderWeightsError, resolve_weights

    try:
        resolve_weights(ENCODERS.get(name), None)
    except EncoderWeightsError as err:
        return f"not run (weights): {str(err).splitlines()[0][:300]}"
    return None


def not_run(task: str, metrics: tuple[str, ...], reason: str, data: dict[str, DataRef], encoder: str | None = None,
            settings: dict[str, Any] | None = None) -> BenchmarkRun:
    """A results file saying a task was not run and why (null values with the reason), so coverage is explicit.
    `data` holds the refs the task would have used, its reference data included, so that its leaderboard column
    sits with the measured columns of the same data."""
    results = [MetricResult(m, None, encoder=encoder, extra={"undefined": reason, "not_run": True}) for m in metrics]
    return BenchmarkRun(task=task, results=results, data=data, settings={"not_run": reason, **(settings or {})})


def run_suite(outputs: Outputs, refs: References, chosen: Variant, out: Path,
              log: Callable[[str], None] = print, tasks: Sequence[str] = TASKS,
              cache: Path | None = None) -> list[Path]:
    """Run the applicable ones of `tasks` on `outputs`; one results file per run under `out`; returns them.

    What depends only on the real data (the label-consistency segmenter, the real rows of TSTR) is kept under
    `cache` (default: `references/` under histosynth's cache root), keyed by the data's contents, the settings,
    the torch version and the thread count, so scoring many subjects against one reference trains it once."""
    from histosynth.benchmark.completion import score_completion
    from histosynth.benchmark.downstream.kinds import train_config
    from histosynth.benchmark.downstream.nuclei_task import UNET_MULTIPLE
    from histosynth.benchmark.downstream.run import run_downstream
    from histosynth.benchmark.features import scan_rows
    from histosynth.benchmark.label_consistency_task import score_label_consistency
    from histosynth.benchmark.lpips_masked import LPIPSWeightsError, backbone_file
    from histosynth.benchmark.runner import score_distribution
    from histosynth.benchmark.subjects import subject_of
    from histosynth.cache_dirs import cache_dir
    from histosynth.disk import iter_samples

    cache = Path(cache) if cache is not None else cache_dir("references")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise InputError(f"unknown suite task(s) {unknown}; the suite has {', '.join(TASKS)}")
    if outputs.synthesized is None and outputs.completed is None:
        raise InputError("nothing to score: the outputs hold neither a synthesized nor a completed set")
    out.mkdir(parents=True, exist_ok=True)
    fake, split = outputs.synthesized, "train"
    settings = {"suite": SUITE_NAME, "suite_version": SUITE_VERSION, "variant": asdict(chosen)}
    written: list[Path] = []

    def save(run: BenchmarkRun, name: str) -> None:
        run.settings.setdefault("suite", settings)
        written.append(run.save(out / f"{name}.json"))
        log(f"  {name}: {'not run' if run.settings.get('not_run') else 'done'}")

    def data_ref(folder: Path) -> DataRef:
        rows = scan_rows(folder, split)
        return DataRef(folder.name, str(folder.resolve()), rows.content_hash, rows.total)

    not_run_data: dict[str, DataRef] = {}  # scanned once, and only when a not-run file needs it
    reasons = {task: reason if task in tasks else "not selected" for task, reason in applicable_tasks(outputs).items()}
    for encoder in chosen.encoders if reasons["distribution"] is None else ():
        reason = encoder_available(encoder)
        if reason:
            # the roles score_distribution records, so the not-run column groups with the measured ones
            not_run_data = not_run_data or {"real": data_ref(refs.test), "fake": data_ref(fake),
                                            "train": data_ref(refs.train)}
            run = not_run("distribution", ("fd", "kid"), reason, dict(not_run_data), encoder=encoder)
            run.subjects["fake"] = subject_of(fake, split, not_run_data["fake"])
            save(run, f"distribution-{encoder}")
            continue
        run = score_distribution(refs.test, fake, encoders=[encoder], metrics=chosen.distribution_metrics,
                                 bootstrap=chosen.bootstrap, seed=chosen.seed, split=split, train=refs.train,
                                 progress=False)
        save(run, f"distribution-{encoder}")
    if reasons["label-consistency"] is None:
        save(score_label_consistency(refs.train, fake, real_test=refs.test, resolution=chosen.resolution,
                                     steps=chosen.segmenter_steps, seed=chosen.seed, bootstrap=chosen.bootstrap,
                                     split=split, cache=cache / "label-consistency"), "label-consistency")
    if reasons["completion"] is None:
        try:
            backbone_file("alex")
            modes: tuple[str, ...] = ("layer-masked",)
        except LPIPSWeightsError:
            modes = ()  # PSNR and SSIM still run; the file records that LPIPS did not
        run = score_completion(refs.test, outputs.completed, modes=modes, bootstrap=chosen.bootstrap,
                               seed=chosen.seed, limit=chosen.n)
        if not modes:
            run.results.append(MetricResult("lpips-layer-masked", None, extra={
                "undefined": "not run (weights): torchvision AlexNet ImageNet weights are not in the torch hub cache",
                "not_run": True}))
        save(run, "completion")
    if reasons["tstr-nuclei"] is None and not any(s.nuclei is not None and len(s.nuclei.class_ids)
                                                  for s in iter_samples(fake)):
        reasons["tstr-nuclei"] = "the synthetic set holds no nuclei: nothing to train a nuclei model on"
        empty = not_run("tstr", ("pq", "pq_ratio_to_real"), reasons["tstr-nuclei"],
                        {"train:synthetic": data_ref(fake), "test": data_ref(refs.test)})
        empty.subjects["train:synthetic"] = subject_of(fake, split, empty.data["train:synthetic"])
        save(empty, "tstr-nuclei")
    tstr = [(task, model) for task, model in (("tstr-seg", "deeplabv3plus"), ("tstr-nuclei", "hovernet"))
            if reasons[task] is None]
    side = min(next(iter_samples(fake)).image.shape[:2]) if tstr else 0
    for task, model in tstr:
        config = train_config(chosen.tstr_preset, model, steps=chosen.tstr_steps)
        if config.crop > side:  # patches smaller than the preset's crop (tiny sets): train on whole patches
            config = replace(config, crop=side - side % UNET_MULTIPLE)  # a multiple of both models' strides
        run = run_downstream({"real": (refs.train, split), "synthetic": (fake, split)}, (refs.test, split), model=model,
                             preset=chosen.tstr_preset, config=config, seeds=list(range(chosen.tstr_seeds)),
                             real="real", task="tstr", reference_cache=cache / "tstr")
        save(run, task)
    return written
