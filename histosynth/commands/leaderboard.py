"""`histosynth leaderboard build|table|publish`: the leaderboard page, paper tables and the published results."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from histosynth import options as opt
from histosynth.commands.hub import AUTH_HINT, _hub_errors

RULES_HELP = ("One row per subject (a generator checkpoint, a dataset, or real data: the reference line, shown but "
              "not ranked); one column per task, metric and encoder measured under one comparability key (runs "
              "with different keys never share a column). Per column, a row takes the competition rank of the best "
              "row whose CI overlaps its own; Borda and mean rank weight each task equally; a row missing any "
              "column gets no aggregate (partial coverage, as in MTEB).")


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _page_folder(value: str) -> Path:
    """A folder to write index.html into (the current one too): the page's path is checked as an output file."""
    opt.output_file(str(Path(value) / "index.html"))
    return Path(value)


def run_build(args: argparse.Namespace) -> int:
    from histosynth.leaderboard.aggregate import load_leaderboard
    from histosynth.leaderboard.page import build_page

    board = load_leaderboard(args.results)
    path = build_page(board, args.out, title=args.title)
    print(f"wrote {path}: {len(board.rows)} subjects, {len(board.columns)} columns from {len(board.files)} results files")
    return 0


def run_table(args: argparse.Namespace) -> int:
    from histosynth.atomic import write_text_atomic
    from histosynth.leaderboard.aggregate import load_leaderboard
    from histosynth.leaderboard.tables import render_table, table_columns

    board = load_leaderboard(args.results)
    columns = table_columns(board, _names(args.tasks), _names(args.datasets), _names(args.encoders),
                            _names(args.metrics))
    text = render_table(board, columns, args.format, args.ci, args.digits)
    if args.out is None:
        sys.stdout.write(text)
    else:
        write_text_atomic(args.out, text)
        print(f"wrote {args.out}: {len(columns)} columns")
    return 0


@_hub_errors
def run_publish(args: argparse.Namespace) -> int:
    from histosynth.leaderboard.publish import publish_results

    publish_results(args.results, args.repo, args.version, private=args.private, dry_run=args.dry_run,
                    log=functools.partial(print, flush=True))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    board = verbs.add_parser(
        "leaderboard", help="build the leaderboard page, paper tables, or publish the results files",
        description="Everything reads a folder of benchmark results files (`histosynth bench ... --out run.json`, "
        "schema v2; v1 files are migrated), validated on load. " + RULES_HELP,
    )
    actions = board.add_subparsers(dest="action", metavar="<action>", required=True)

    build = actions.add_parser(
        "build", help="write the leaderboard as one self-contained HTML page",
        description="Write OUT/index.html: one file with inline CSS and JS (no CDN; opens from file:// offline) with "
        "sortable columns, task tabs, dataset and encoder filters, CIs, subject cards with links, code, task and "
        "data versions, and a CSV download. " + RULES_HELP,
    )
    build.add_argument("--results", required=True, type=opt.existing_folder, metavar="DIR", help="folder of results files (*.json, searched recursively)")
    build.add_argument("--out", required=True, type=_page_folder, metavar="DIR", help="folder to write index.html into (created if missing)")
    build.add_argument("--title", type=opt.text, default="histosynth leaderboard", help="page title")
    build.set_defaults(handler=run_build)

    table = actions.add_parser(
        "table", help="print a LaTeX or Markdown table for papers",
        description="A table of the chosen columns with the page's numbers: value and CI, rank 1 in bold (the best "
        "by the metric's direction, or CI-tied with it), Borda and mean rank over the chosen columns, real data as "
        "the reference line, and a citation block with the BibTeX of the registered generators in it.",
    )
    table.add_argument("--results", required=True, type=opt.existing_folder, metavar="DIR", help="folder of results files")
    table.add_argument("--format", choices=("latex", "markdown"), default="markdown", help="output format (default markdown)")
    table.add_argument("--tasks", metavar="T1,T2", help="tasks to include (default: all), e.g. distribution,tstr")
    table.add_argument("--datasets", metavar="D1,D2", help="reference datasets to include (default: all)")
    table.add_argument("--encoders", metavar="E1,E2", help="encoders to include ('-' for encoder-free metrics)")
    table.add_argument("--metrics", metavar="M1,M2", help="metrics to include (default: all but per-class details)")
    table.add_argument("--ci", choices=("pm", "interval"), default="pm",
                       help="CI as '± half-width' ((hi - lo) / 2) or '[lo, hi]' (default pm)")
    table.add_argument("--digits", type=opt.digits, default=3, help=f"significant digits, 1 to {opt.MAX_DIGITS} (default 3)")
    table.add_argument("--out", type=opt.output_file, help="write to this file instead of stdout")
    table.set_defaults(handler=run_table)

    publish = actions.add_parser(
        "publish", help="push the results files to a Hub dataset repo, tagged by suite version",
        description="Validate every results file, then upload them (under results/, byte for byte) with a README "
        "card to the dataset repo ORG/NAME in one commit tagged VERSION (the suite version, vX.Y.Z). An existing "
        f"VERSION is refused before anything is uploaded. Authentication: {AUTH_HINT}; HF_ENDPOINT selects another Hub.",
    )
    publish.add_argument("--results", required=True, type=opt.existing_folder, metavar="DIR", help="folder of results files")
    publish.add_argument("--repo", required=True, metavar="ORG/NAME", help="dataset repo (created if missing)")
    publish.add_argument("--version", required=True, metavar="vX.Y.Z", help="version tag: the suite version")
    publish.add_argument("--private", action="store_true", help="create the repo private")
    publish.add_argument("--dry-run", action="store_true", help="validate and print what would be uploaded; write nothing")
    publish.set_defaults(handler=run_publish)
