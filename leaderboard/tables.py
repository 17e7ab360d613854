"""Paper tables (LaTeX or Markdown) from the same leaderboard as the page: same ranks, same aggregates, same
number formatting (histosynth.leaderboard.aggregate.format_number).

Bold marks rank 1 in a column: the best value by the metric's direction (metric registry), and every row whose CI
overlaps the best's (the aggregate module's tie rule). Disqualified subjects (memorization) follow the ranked rows,
struck through; real data and the reference generators are the reference lines below a rule, never bold. A column
without power says so under its header and is left out of Borda and mean rank. A citation block lists the BibTeX of
every registered generator in the table.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable

from histosynth.benchmark.metric_registry import metric_spec
from histosynth.errors import InputError
from histosynth.leaderboard.aggregate import Cell, Column, Leaderboard, Row, format_number
from histosynth.leaderboard.cards import citation, citation_key

FORMATS = ("latex", "markdown")
MAX_DIGITS = 17  # a float64 holds 17 significant digits
CI_STYLES = ("pm", "interval")
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _one_line(text: str) -> str:
    """`text` with line breaks and other control characters as spaces (a cell is one line)."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


def latex_escape(text: str) -> str:
    """`text` with LaTeX's special characters escaped, safe inside a tabular cell."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in _one_line(text))


def markdown_escape(text: str) -> str:
    """`text` safe inside a Markdown table cell (one line; pipes and emphasis markers escaped)."""
    return "".join("\\" + ch if ch in "|*_`\\" else ch for ch in _one_line(text))


def cell_text(cell: Cell | None, ci: str = "pm", digits: int = 3) -> tuple[str, str]:
    """(value, CI) as printed: the CI as `± half-width` ((hi - lo) / 2) or `[lo, hi]`; '' without a CI."""
    if cell is None or cell.value is None:
        weights = cell is not None and (cell.undefined or "").startswith("not run (weights)")
        return ("not run (weights)" if weights else "n/a"), ""
    if cell.ci_low is None or cell.ci_high is None:
        return format_number(cell.value, digits), ""
    if ci == "pm":
        return format_number(cell.value, digits), format_number((cell.ci_high - cell.ci_low) / 2, digits)
    return format_number(cell.value, digits), f"[{format_number(cell.ci_low, digits)}, {format_number(cell.ci_high, digits)}]"


def table_columns(board: Leaderboard, tasks: Iterable[str] | None = None, datasets: Iterable[str] | None = None,
                  encoders: Iterable[str] | None = None, metrics: Iterable[str] | None = None) -> list[Column]:
    """The columns a table shows: the filters' match, without per-class details unless `metrics` names them."""
    columns = board.select(tasks, datasets, encoders, metrics)
    if metrics is None:
        columns = [c for c in columns if not c.detail]
    if not columns:
        raise InputError("no results columns match these --tasks/--datasets/--encoders/--metrics")
    return columns


def _table_rows(board: Leaderboard, columns: list[Column]) -> list[Row]:
    """Ranked rows with a value in some column, then the disqualified ones, then the reference rows."""
    measured = [r for r in board.rows if any((c := board.cell(r, col)) is not None and c.value is not None
                                             for col in columns)]
    return ([r for r in measured if board.ranked(r)] + [r for r in measured if r.id in board.disqualified]
            + [r for r in measured if not r.ranked])


def _subtitle(board: Leaderboard, column: Column) -> str:
    """The header's second line: the board's subtitle, and "no power" where the column has none."""
    power = board.power.get(column.id)
    return board.subtitle(column) + (f"; {power.label}" if power is not None and not power.ok else "")


def _row_name(board: Leaderboard, row: Row, text: str, fmt: str) -> str:
    """A row's first cell: reference rows in italics, disqualified ones struck through (LaTeX: ulem's sout)."""
    if not row.ranked:
        return rf"\textit{{{text} (reference)}}" if fmt == "latex" else f"*{text} (reference)*"
    if row.id in board.disqualified:
        return rf"\sout{{{text}}} (disqualified: memorization)" if fmt == "latex" else \
            f"~~{text}~~ (disqualified: memorization)"
    return text


def render_table(board: Leaderboard, columns: list[Column], fmt: str = "markdown", ci: str = "pm",
                 digits: int = 3, citations: bool = True) -> str:
    """The table of `columns` in `fmt` (latex or markdown), with Borda and mean rank over those columns; without
    the citation block when `citations` is false (a document of several tables cites once)."""
    if fmt not in FORMATS:
        raise InputError(f"table format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if ci not in CI_STYLES:
        raise InputError(f"CI style must be one of {', '.join(CI_STYLES)}, not {ci!r}")
    if not 1 <= digits <= MAX_DIGITS:
        raise InputError(f"digits must be in [1, {MAX_DIGITS}], got {digits}")
    rows = _table_rows(board, columns)
    aggregates = board.aggregate(columns)
    bibs = {r.id: bib for r in rows if (bib := citation(r))}
    render = _latex if fmt == "latex" else _markdown
    return render(board, columns, rows, aggregates, bibs, ci, digits, citations)


def render_citations(board: Leaderboard, columns: list[Column], fmt: str = "markdown") -> str:
    """The citation block of the generators with a value in `columns` (what render_table appends), for a document
    of several tables rendered with `citations=False`, to append after them; empty when none has a citation."""
    bibs = {r.id: bib for r in _table_rows(board, columns) if (bib := citation(r))}
    lines = _citation_lines(bibs, fmt)
    return "\n".join(lines) + "\n" if lines else ""


def _citation_lines(bibs: dict[str, str], fmt: str) -> list[str]:
    """The BibTeX of `bibs` (row id -> entry), each entry once: commented out in LaTeX, a code block in Markdown."""
    if not bibs:
        return []
    entries = list(dict.fromkeys(bibs.values()))
    if fmt == "latex":
        lines = ["", "% Citations of the generators above (BibTeX; copy into your .bib without the '% '):"]
        return lines + [f"% {line}" for bib in entries for line in bib.splitlines()]
    return ["", "References:", "", "```bibtex", *"\n\n".join(entries).splitlines(), "```"]


def _caption(columns: list[Column], ci: str) -> str:
    tasks = sorted({f"{c.task_label} v{c.task_version}" for c in columns})
    ci_text = "± CI half-width" if ci == "pm" else "[CI low, CI high]"
    return (f"histosynth leaderboard: {', '.join(tasks)}. Value {ci_text}. Bold: rank 1 (the best by the metric's "
            "direction, or CI-tied with it). Borda and mean rank weight each task equally over the columns with "
            "power; partial coverage: n/a. Real data and the reference generators are reference lines, not ranked; "
            "struck-through subjects are disqualified for memorization.")


def _latex(board, columns, rows, aggregates, bibs, ci, digits, citations) -> str:
    def value(cell: Cell | None, bold: bool) -> str:
        v, c = cell_text(cell, ci, digits)
        text = v + (rf" $\pm$ {c}" if c and ci == "pm" else f" {c}" if c else "")
        return rf"\textbf{{{text}}}" if bold else text

    arrows = [r"$\uparrow$" if metric_spec(c.metric).higher_is_better else r"$\downarrow$" for c in columns]
    lines = [f"% {_caption(columns, ci)}",
             r"\begin{tabular}{l" + "r" * (len(columns) + 2) + "}", r"\toprule",
             " & ".join(["Subject", r"Borda $\uparrow$", r"Mean rank $\downarrow$",
                         *(f"{latex_escape(c.title)} {a}" for c, a in zip(columns, arrows, strict=True))]) + r" \\",
             " & ".join(["", "", "", *(latex_escape(_subtitle(board, c)) for c in columns)])
             + r" \\", r"\midrule"]
    reference_started = False
    for row in rows:
        if not row.ranked and not reference_started:
            lines.append(r"\midrule")
            reference_started = True
        name = latex_escape(row.label) + (rf"~\cite{{{citation_key(bibs[row.id])}}}" if row.id in bibs else "")
        name = _row_name(board, row, name, "latex")
        agg = aggregates[row.id]
        cells = [value(board.cell(row, c), board.ranked(row) and _rank(board, row, c) == 1) for c in columns]
        lines.append(" & ".join([name, format_number(agg.borda, digits), format_number(agg.mean_rank, digits), *cells])
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines + (_citation_lines(bibs, "latex") if citations else [])) + "\n"


def _markdown(board, columns, rows, aggregates, bibs, ci, digits, citations) -> str:
    def value(cell: Cell | None, bold: bool) -> str:
        v, c = cell_text(cell, ci, digits)
        text = v + (f" ± {c}" if c and ci == "pm" else f" {c}" if c else "")
        return f"**{text}**" if bold else text

    heads = [f"{markdown_escape(c.title)} {'↑' if metric_spec(c.metric).higher_is_better else '↓'}<br>"
             f"{markdown_escape(_subtitle(board, c))}" for c in columns]
    lines = [f"_{markdown_escape(_caption(columns, ci))}_", "",
             "| " + " | ".join(["Subject", "Borda ↑", "Mean rank ↓", *heads]) + " |",
             "|" + "---|" + "---:|" * (len(columns) + 2)]
    for row in rows:
        name = markdown_escape(row.label) + (f" [{citation_key(bibs[row.id])}]" if row.id in bibs else "")
        name = _row_name(board, row, name, "markdown")
        agg = aggregates[row.id]
        cells = [value(board.cell(row, c), board.ranked(row) and _rank(board, row, c) == 1) for c in columns]
        lines.append("| " + " | ".join([name, format_number(agg.borda, digits), format_number(agg.mean_rank, digits),
                                        *cells]) + " |")
    return "\n".join(lines + (_citation_lines(bibs, "markdown") if citations else [])) + "\n"


def _rank(board: Leaderboard, row: Row, column: Column) -> int | None:
    cell = board.cell(row, column)
    return cell.rank if cell is not None else None
