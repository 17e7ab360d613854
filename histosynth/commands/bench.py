"""`histosynth bench <task>`: one verb per registered benchmark task (histosynth.benchmark.tasks), named as in results
files and the suite; plus `suite` (every applicable suite task on a generator's outputs) and `track` (named
benchmark tracks)."""

from __future__ import annotations

import argparse
import sys

from histosynth import options as opt
from histosynth.commands import track


def run_task(args: argparse.Namespace) -> int:
    from histosynth.benchmark.tasks import get_task

    if args.task != args.task_name:
        print(f"note: `histosynth bench {args.task}` is the old name of `histosynth bench {args.task_name}`; it stays "
              "for one release", file=sys.stderr)
    task = get_task(args.task_name)
    task.report(task.run(args), args)
    return 0


def run_suite(args: argparse.Namespace) -> int:
    from histosynth.benchmark.suite import References, outputs_of, run_suite, variant

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    refs = References(args.train, args.test, args.conditions or args.train)
    written = run_suite(outputs_of(args.synthesized, args.completed), refs, variant(args.variant), args.out,
                        tasks=tasks, cache=args.cache)
    print(f"{len(written)} results files in {args.out}")
    return 0


def _suite_parser(tasks: argparse._SubParsersAction) -> None:
    suite = tasks.add_parser("suite", help="the histosynth-bench suite: every applicable task on a generator's outputs",
                             description="Run the suite's tasks (distribution, label-consistency, completion, tstr) "
                                         "that apply to a generated set and/or a completion of the test patches' "
                                         "held-out masks, with one variant's exact settings; one results file per "
                                         "task (and encoder / TSTR model) in --out. Scoring a submission for the "
                                         "leaderboard: `histosynth submit ... --track NAME` (it runs this in the "
                                         "sandbox).")
    suite.add_argument("--synthesized", type=opt.existing_folder, help="the generated set (from the conditions)")
    suite.add_argument("--completed", type=opt.existing_folder, help="the completion of --test's held-out masks")
    suite.add_argument("--train", type=opt.existing_folder, required=True, help="real training set")
    suite.add_argument("--test", type=opt.existing_folder, required=True, help="real held-out test set")
    suite.add_argument("--conditions", type=opt.existing_folder,
                       help="the sets the generator synthesized from (default --train; never --test)")
    suite.add_argument("--variant", default="tiny", choices=("tiny", "demo", "full"), help="suite variant (default tiny)")
    suite.add_argument("--tasks", help="comma-separated suite tasks (default all; tstr:hovernet picks one TSTR model)")
    suite.add_argument("--cache", type=opt.output_folder, help="reference cache (default: the histosynth cache)")
    suite.add_argument("--out", type=opt.output_folder, required=True, help="folder of the results files")
    suite.set_defaults(handler=run_suite)


def register(verbs: argparse._SubParsersAction) -> None:
    from histosynth.benchmark.tasks import TASK_METAS, get_task

    bench = verbs.add_parser("bench", help="score synthetic data against real data",
                             description="Benchmark a synthetic dataset against a real one: one verb per task, named "
                             "as in results files and the suite. Results are one JSON file (values, CIs, N, "
                             "code/encoder/data versions, wall time), with a bar chart next to it.")
    tasks = bench.add_subparsers(dest="task", metavar="<task>", required=True)
    for meta in TASK_METAS:
        parser = tasks.add_parser(meta.name, aliases=list(meta.aliases), help=meta.summary,
                                  description=f"{meta.summary[0].upper()}{meta.summary[1:]} (task version "
                                              f"{meta.version}).")
        get_task(meta.name).add_arguments(parser)
        parser.set_defaults(handler=run_task, task_name=meta.name)
    _suite_parser(tasks)
    track.register(tasks)
