"""`histosynth recipe plan|run|status|claims RECIPE`: a release or a paper table as one cached, resumable command.

The recipe engine is histosynth.recipes (spec, step kinds, runner); this module parses and prints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from histosynth import options as opt

if TYPE_CHECKING:
    from histosynth.recipes.spec import Recipe

DEFAULT_RUNS = Path("runs")


def _load(args: argparse.Namespace, require_inputs: bool) -> tuple[Recipe, Path]:
    from histosynth.recipes.spec import load_recipe, parse_inputs

    recipe = load_recipe(args.recipe, args.scale, parse_inputs(args.input), require_inputs=require_inputs)
    run_dir = args.run_dir or DEFAULT_RUNS / f"{recipe.name}-{recipe.scale}"
    return recipe, run_dir


def run_plan(args: argparse.Namespace) -> int:
    from histosynth.recipes.runner import plan

    recipe, run_dir = _load(args, require_inputs=False)
    print(f"recipe {recipe.name} ({recipe.path}), scale {recipe.scale}, sha256 {recipe.text_hash[:12]}; run folder {run_dir}")
    hashed = all(p.exists() for p in recipe.inputs.values())  # unbound inputs count by name: every step "run"
    for index, item in enumerate(plan(recipe, run_dir, hash_inputs=hashed), start=1):
        outputs = ", ".join(item.step.writes()) or "-"
        print(f"  {index}. {item.step.name} ({item.step.kind}) -> {outputs}: {item.action}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from histosynth.recipes.runner import load_state, plan

    recipe, run_dir = _load(args, require_inputs=False)
    state = load_state(run_dir, recipe)["steps"]
    words = {"cached": "done", "resume": "interrupted (a run resumes it)", "rerun": "stale (options, inputs or code "
             "changed upstream)", "run": "not run"}
    print(f"recipe {recipe.name}, scale {recipe.scale}, run folder {run_dir}")
    hashed = all(p.exists() for p in recipe.inputs.values())
    for item in plan(recipe, run_dir, hash_inputs=hashed):
        seconds = (state.get(item.step.name) or {}).get("seconds")
        print(f"  {item.step.name}: {words[item.action]}" + (f" ({seconds} s)" if seconds is not None and item.action == "cached" else ""))
    return 0


def run_claims(args: argparse.Namespace) -> int:
    from histosynth.errors import InputError
    from histosynth.recipes.claims import evaluate, markdown, snapshots_markdown

    recipe, run_dir = _load(args, require_inputs=False)
    if not (run_dir / "curves").is_dir():
        raise InputError(f"{run_dir}: no curves/ here; run a learning-curve recipe into it first")
    print(f"recipe {recipe.name}, scale {recipe.scale}, run folder {run_dir}: the claims at the snapshots scored so far")
    print(markdown(evaluate(run_dir)))
    print("The snapshots scored so far (KID x 10^3):\n")
    print(snapshots_markdown(run_dir), end="")
    return 0


def run_run(args: argparse.Namespace) -> int:
    from histosynth.atomic import check_output
    from histosynth.recipes.runner import run_recipe

    recipe, run_dir = _load(args, require_inputs=True)
    check_output(run_dir, folder=True, what="run folder")
    run_recipe(recipe, run_dir, until=args.until, log=lambda line: print(line, flush=True), fresh=args.fresh)
    print(f"report: {run_dir / 'report.md'}")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    recipe = verbs.add_parser("recipe", help="plan, run or check a release / paper-table recipe",
                              description="Run a recipe (recipes/*.yaml, or a card of data_cards/cards that points to one): "
                              "source, pseudolabel, sample, split, train, generate, score, card and publish steps, each "
                              "cached by a content key in the run folder, so a rerun skips finished steps and a crash "
                              "resumes at the step that died.")
    actions = recipe.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, handler, text in (("plan", run_plan, "list the steps and what a run would do with each"),
                                ("run", run_run, "run the steps that are not done; write report.md and report.json"),
                                ("status", run_status, "show which steps are done, stale, interrupted or not run"),
                                ("claims", run_claims, "the seed papers' claims tested on a learning-curve run's "
                                 "snapshots scored so far (also while it runs)")):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("recipe", type=Path, metavar="RECIPE", help="recipe YAML (or a dataset card with `recipe:`)")
        parser.add_argument("--scale", choices=("tiny", "demo", "full"), default="tiny",
                            help="sizes and presets: tiny (tests, seconds on a CPU), demo (minutes), full (a GPU release)")
        parser.add_argument("--input", action="append", default=[], metavar="NAME=PATH",
                            help="bind a named input of the recipe (repeat for each)")
        parser.add_argument("--run-dir", type=opt.output_folder, help="run folder (default runs/<recipe>-<scale>)")
        if name == "run":
            parser.add_argument("--until", metavar="STEP", help="stop after this step")
            parser.add_argument("--fresh", action="store_true", help="start over: discard the run folder's record of "
                                "finished steps and the recipe's outputs in it, then run every step")
        parser.set_defaults(handler=handler)
