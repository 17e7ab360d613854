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
`tiny` runs on a CPU in CI and in `histosynth submit --check`; `full` is what a GPU run publishes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult
from histosynth.errors import InputError

SUITE_NAME = "histosynth-bench"
SUITE_VERSION = "1"
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


VARIANTS = {
    "tiny": Variant("tiny", n=16, encoders=("effnet-lite0",), distribution_metrics=("fd", "kid", "prdc"), bootstrap=20,
                    resolution=32, segmenter_steps=20, tstr_preset="tiny", tstr_seeds=1),
    "full": Variant("full", n=2048, encoders=FULL_ENCODERS, distribution_metrics=("fd", "fd-inf", "kid", "prdc"),
                    bootstrap=200, resolution=128, segmenter_steps=1000, tstr_preset="demo", tstr_seeds=3),
}


@dataclass(frozen=True)
class References:
    """The real data a suite run compares with: dataset folders (split "train" of each). `conditions` feed the
    generator (usually the held-out patches themselves); `test` is held out from `train` by slide or region."""

    train: Path
    test: Path
    conditions: Path


@dataclass(frozen=True)
class Outputs:
    """What a generator made for the suite: the synthesized set, and the completed set if it completes."""

    synthesized: Path
    completed: Path | None = None
    tissue: bool = False  # rows carry the tissue map they were conditioned on
    nuclei: bool = False  # rows carry nuclei instances


def variant(name: str) -> Variant:
    """The named suite variant."""
    if name not in VARIANTS:
        raise InputError(f"unknown suite variant {name!r}; choose from {', '.join(VARIANTS)}")
    return VARIANTS[name]


def applicable_tasks(outputs: Outputs) -> dict[str, str | None]:
    """Task -> None when it applies to these outputs, else the reason it does not."""
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
              log: Callable[[str], None] = print, tasks: Sequence[str] = TASKS) -> list[Path]:
    """Run the applicable ones of `tasks` on `outputs`; one results file per run under `out`; returns them."""
    from histosynth.benchmark.completion import score_completion
    from histosynth.benchmark.downstream.task import run_downstream
    from histosynth.benchmark.features import scan_rows
    from histosynth.benchmark.label_consistency_task import score_label_consistency
    from histosynth.benchmark.lpips_masked import LPIPSWeightsError, backbone_file
    from histosynth.benchmark.runner import score_distribution
    from histosynth.benchmark.subjects import subject_of

    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise InputError(f"unknown suite task(s) {unknown}; the suite has {', '.join(TASKS)}")
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
    for encoder in chosen.encoders if "distribution" in tasks else ():
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
    reasons = {task: reason if task in tasks else "not selected" for task, reason in applicable_tasks(outputs).items()}
    if reasons["label-consistency"] is None:
        save(score_label_consistency(refs.train, fake, real_test=refs.test, resolution=chosen.resolution,
                                     steps=chosen.segmenter_steps, seed=chosen.seed, bootstrap=chosen.bootstrap,
                                     split=split), "label-consistency")
    if reasons["completion"] is None:
        try:
            backbone_file("alex")
            modes: tuple[str, ...] = ("layer-masked",)
        except LPIPSWeightsError:
            modes = ()  # PSNR and SSIM still run; the file records that LPIPS did not
        run = score_completion(refs.conditions, outputs.completed, modes=modes, bootstrap=chosen.bootstrap,
                               seed=chosen.seed, limit=chosen.n)
        if not modes:
            run.results.append(MetricResult("lpips-layer-masked", None, extra={
                "undefined": "not run (weights): torchvision AlexNet ImageNet weights are not in the torch hub cache",
                "not_run": True}))
        save(run, "completion")
    for task, model in (("tstr-seg", "deeplabv3plus"), ("tstr-nuclei", "hovernet")):
        if reasons[task] is None:
            run = run_downstream({"real": (refs.train, split), "synthetic": (fake, split)}, (refs.test, split), model=model,
                                 preset=chosen.tstr_preset, seeds=list(range(chosen.tstr_seeds)), real="real",
                                 task="tstr")
            save(run, task)
    return written
