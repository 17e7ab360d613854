"""The recipe step kinds: what fields each takes, which run-folder paths it reads and writes, and the function that
runs it, as a `Registry` (an unknown kind suggests the closest).

Each handler is a lazy "module:function" target, imported when a step of its kind first runs, so validating or
planning a recipe imports no step code. Every kind runs code of this package except `table`, which renders through
the leaderboard's table export: its handler lives in histosynth.leaderboard.recipe_steps and is named here only as a
target (this package never imports the leaderboard; the leaderboard's tracks import this package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from histosynth.registry import Registry, import_target

if TYPE_CHECKING:
    from histosynth.recipes.spec import Step, StepContext

Handler = Callable[["Step", "StepContext"], dict[str, Any]]


@dataclass(frozen=True)
class StepKind:
    """What one step kind takes: required and optional fields, which fields are run-folder paths it reads
    (`reads`, each the output of an earlier step) or writes (`writes`), which fields may grow without starting
    the step over (`extendable`: a finished step whose only change is there is resumed, not rerun), and the
    "module:function" that runs it."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ("out",)
    extendable: tuple[str, ...] = ()
    handler: str = ""

    def run(self) -> Handler:
        """The function that runs a step of this kind (imported on first use)."""
        return import_target(self.handler)  # type: ignore[return-value]


_STEPS = "histosynth.recipes.steps"
_CURVE = "histosynth.recipes.curve"
STEP_KINDS: Registry[StepKind] = Registry("step kind")
for _name, _kind, _summary in (
    ("source", StepKind(("reader", "out"), ("options", "split"), handler=f"{_STEPS}:run_source"),
     "read a registered source into a dataset folder (`data build`)"),
    ("pseudolabel", StepKind(("data", "out"), ("options",), reads=("data",), handler=f"{_STEPS}:run_pseudolabel"),
     "pseudo-label a dataset folder (`data pseudolabel`)"),
    ("sample", StepKind(("data", "out"), ("min_frac", "max_frac", "min_tissue", "by_entropy", "seed"), reads=("data",),
                        handler=f"{_STEPS}:run_sample"), "keep the heterogeneous patches (`data sample`)"),
    ("split", StepKind(("data", "train", "test"), ("by", "test_fraction", "seed", "region_size"), reads=("data",),
                       writes=("train", "test"), handler=f"{_STEPS}:run_split"), "split by slide or region"),
    ("train", StepKind(("generator", "preset", "data", "out"), ("overrides", "weights"), reads=("data",),
                       handler=f"{_STEPS}:run_train"), "train a generator (`train`)"),
    ("generate", StepKind(("checkpoint", "conditions", "n", "out"),
                          ("seed", "sampler", "steps", "chunk_size", "batch_size", "task"),
                          reads=("checkpoint", "conditions"), handler=f"{_STEPS}:run_generate"),
     "generate a dataset (`generate`)"),
    ("score", StepKind(("train", "test", "out"), ("data", "variant", "conditions", "completed", "encoders", "tasks"),
                       reads=("data", "train", "test", "conditions", "completed"), handler=f"{_STEPS}:run_score"),
     "run the benchmark suite"),
    ("table", StepKind(("results", "out"), ("tasks", "metrics", "encoders", "reported", "caption"), reads=("results",),
                       handler="histosynth.leaderboard.recipe_steps:run_table"), "a paper table of results folders"),
    ("card", StepKind(("data", "scores", "checkpoint", "out"), ("version",), reads=("data", "scores", "checkpoint"),
                      handler=f"{_STEPS}:run_card"), "a release folder with its measured card"),
    ("publish", StepKind(("data", "scores", "repo", "version"), (), reads=("data", "scores"), writes=(),
                         handler=f"{_STEPS}:run_publish"), "publish a release folder on the Hub"),
    # one training run with snapshots, each scored (histosynth.recipes.curve); a larger budget or more snapshots
    # extend a finished curve (its LR is held constant after warm-up, so the steps run so far stay valid)
    ("curve", StepKind(("generator", "preset", "data", "steps", "snapshots", "conditions", "train", "test", "n", "out"),
                       ("overrides", "seed", "sampler_steps", "chunk_size", "variant", "tasks"),
                       reads=("data", "conditions", "train", "test"), extendable=("steps", "snapshots"),
                       handler=f"{_CURVE}:run_curve"), "a learning curve: one training run, every snapshot scored"),
    ("figure", StepKind(("curves", "out"), ("references", "title"), reads=("curves", "references"),
                        handler=f"{_CURVE}:run_figure"), "learning-curve panels of several curve steps"),
    ("collect", StepKind(("curves", "out"), ("references",), reads=("curves", "references"),
                         handler="histosynth.recipes.collect:run_collect"),
     "one results folder per subject: each curve's last scored snapshot and the reference results"),
    ("claims", StepKind(("curves", "out"), (), reads=("curves",), handler="histosynth.recipes.claims:run_claims"),
     "the seed papers' claims tested at the end of the curves (histosynth.recipes.claims)"),
):
    STEP_KINDS.register(_name, _kind, _summary)
del _name, _kind, _summary


def step_kind(name: str) -> StepKind:
    """The kind called `name`; an unknown name raises RegistryError with the closest known ones."""
    return STEP_KINDS.get(name)


def handlers() -> dict[str, Handler]:
    """Step kind -> the function that runs it, every kind imported (what `run_recipe` uses by default)."""
    return {name: STEP_KINDS.get(name).run() for name in STEP_KINDS}
