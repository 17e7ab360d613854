"""What each benchmark task is, as data (no heavy imports): the one vocabulary of the CLI (`histosynth bench
<name>`), the results files (their `task`), the suite and the leaderboard; its version and the settings that change
its numbers (part of the comparability key). The task classes (histosynth.benchmark.tasks) do the work."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskMeta:
    """A task's name, version, one-line summary, comparable settings, old CLI names, whether the suite runs it,
    and the class that runs it ("module:attr")."""

    name: str
    version: int
    summary: str
    comparable_settings: tuple[str, ...]
    target: str
    aliases: tuple[str, ...] = ()  # old `histosynth bench` verb names, kept for one release
    in_suite: bool = False


_TASKS = "histosynth.benchmark.tasks"
TASK_METAS: tuple[TaskMeta, ...] = (
    TaskMeta("distribution", 1, "Frechet distance (+CI), KID (+CI), PRDC and memorization under several encoders",
             (), f"{_TASKS}.distribution:DistributionTask", aliases=("fd",), in_suite=True),
    TaskMeta("label-consistency", 1, "a segmenter trained on real patches segments generated ones: mIoU against the "
             "maps they were conditioned on", ("resolution", "steps", "seed", "schema", "segmenter", "threads"),
             f"{_TASKS}.label_consistency:LabelConsistencyTask", in_suite=True),
    TaskMeta("completion", 1, "completion: masked LPIPS, PSNR and SSIM inside the held-out masks, with CIs",
             ("net", "masks"), f"{_TASKS}.completion:CompletionTask", aliases=("complete",), in_suite=True),
    TaskMeta("tstr", 1, "train-on-synthetic, test-on-real: DeepLabv3+ or HoVer-Net trained on each set, tested on held-out "
             "real data", ("model", "preset", "train", "seeds", "schema", "threads"), f"{_TASKS}.downstream:TstrTask",
             in_suite=True),
    TaskMeta("masked-lpips", 1, "masked LPIPS alone, inside the completion masks of row-paired patches",
             ("net", "modes"), f"{_TASKS}.masked_lpips:MaskedLpipsTask", aliases=("lpips-masked",)),
    TaskMeta("seg", 1, "downstream utility of one training set: a segmenter trained on it, tested on held-out real data",
             ("model", "preset", "train", "seeds", "schema", "threads"), f"{_TASKS}.downstream:SegTask"),
)
"""Every task, in the order the suite runs and the CLI lists them."""

META_BY_NAME = {meta.name: meta for meta in TASK_METAS}
ALIASES = {alias: meta.name for meta in TASK_METAS for alias in meta.aliases}
