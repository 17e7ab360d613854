"""The recipe step kinds that need the leaderboard, run by the recipe engine (histosynth.recipes.kinds names them
by "module:function"; the engine never imports the leaderboard). `table`: a paper table from results folders."""

from __future__ import annotations

from typing import Any

from histosynth.errors import InputError
from histosynth.recipes.spec import Step, StepContext


def run_table(step: Step, ctx: StepContext) -> dict[str, Any]:
    """A paper table (table.md, table.tex) from the results folders of this run through the leaderboard's table
    export, with a column per encoder (those whose weights were absent say "not run (weights)"), one block per
    reference dataset (each ranks the models scored against it), and the authors' numbers (`reported`: rows of
    {generator, encoder, metric, value, reference} and optionally dataset) in their own block."""
    from histosynth.atomic import atomic_directory
    from histosynth.leaderboard.aggregate import build_leaderboard, load_results
    from histosynth.leaderboard.tables import markdown_escape, render_citations, render_table, table_columns

    runs = [(f"{folder}/{where}", run) for folder in step.fields["results"]
            for where, run in load_results(ctx.run / folder)]
    board = build_leaderboard(runs)
    columns = table_columns(board, step.fields.get("tasks"), None, step.fields.get("encoders"), step.fields.get("metrics"))
    reported = step.fields.get("reported") or []
    for index, row in enumerate(reported):
        missing = {"generator", "metric", "value", "reference"} - set(row)
        if missing:
            raise InputError(f"step {step.name!r} (table) field 'reported'[{index}]: missing {', '.join(sorted(missing))}")
    caption = step.fields.get("caption", "")
    blocks: dict[str, list] = {}
    for column in columns:
        blocks.setdefault(column.dataset, []).append(column)
    texts = {}
    for fmt, suffix in (("markdown", "md"), ("latex", "tex")):
        if len(blocks) == 1:
            ours = render_table(board, columns, fmt)
        else:
            heading = "**Reference data: {}**\n\n" if fmt == "markdown" else "% Reference data: {}\n"
            ours = "\n".join(heading.format(markdown_escape(dataset)) + render_table(board, group, fmt, citations=False)
                              for dataset, group in blocks.items())
            ours += render_citations(board, columns, fmt)
        texts[suffix] = (caption + "\n\n" if caption and fmt == "markdown" else "") + ours + _reported_block(reported, fmt)
    with atomic_directory(ctx.run / step.fields["out"]) as staging:
        for suffix, text in texts.items():
            (staging / f"table.{suffix}").write_text(text, encoding="utf-8")
    not_run = sorted({c.encoder for c in columns if all(
        (cell := board.cell(r, c)) is None or cell.value is None for r in board.rows)})
    return {"rows": len(board.rows), "columns": len(columns), "datasets": list(blocks), "not_run": not_run,
            "reported": len(reported)}


def _reported_block(rows: list[dict[str, Any]], fmt: str) -> str:
    """The authors' own figures, labeled, in the table's format (empty when there are none)."""
    if not rows:
        return ""
    keys = (("dataset",) if any("dataset" in r for r in rows) else ()) + ("generator", "metric", "encoder", "value",
                                                                           "reference")
    if fmt == "markdown":
        lines = ["", "", "Reported by the authors (their model and protocol; not measured here):", "",
                 "| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
        lines += ["| " + " | ".join(str(r.get(k, "-")) for k in keys) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    from histosynth.leaderboard.tables import latex_escape

    lines = ["", "% Reported by the authors (their model and protocol; not measured here)",
             "\\begin{tabular}{" + "l" * (len(keys) - 2) + "rl}", "\\toprule", " & ".join(keys) + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(str(r.get(k, "-"))) for k in keys) + " \\\\" for r in rows]
    return "\n".join(lines + ["\\bottomrule", "\\end{tabular}"]) + "\n"
