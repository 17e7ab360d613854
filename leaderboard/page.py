"""The leaderboard as ONE self-contained HTML file: inline CSS and JS, no CDN, works from file:// offline.

The table is rendered here (it reads without JS); the inline script only sorts, filters (task tabs, dataset and
encoder selects) and swaps in the aggregates of the current view, which are all computed here in Python
(histosynth.leaderboard.aggregate), so the page shows the same numbers as the paper tables and the CSV.
"""

from __future__ import annotations

import csv
import html
import io
import json
import urllib.parse
from itertools import product
from pathlib import Path
from typing import Any

from histosynth.atomic import write_text_atomic
from histosynth.benchmark.metric_registry import metric_spec
from histosynth.leaderboard.aggregate import Aggregate, Cell, Column, Leaderboard, Power, Row, format_number
from histosynth.leaderboard.cards import citation, generator_meta, hub_card_url

PAGE_NAME = "index.html"
ALL = "*"
CSV_FIELDS = ("subject", "kind", "name", "version", "checkpoint_hash", "content_hash", "repo", "revision", "task",
              "task_version", "dataset", "metric", "encoder", "comparability_key", "value", "ci_low", "ci_high",
              "ci_level", "rank", "n_fake", "file", "run_id", "histosynth", "git_commit")
RULES = ("Ranks: competition ranking per column with CI ties (a row takes the rank of the best row whose CI overlaps "
         "its own). Real data and the reference generators (real-heldout, the real-data ceiling; copy-nearest, the "
         "copy baseline) are reference lines: shown, never ranked, never counted in another row's rank. A subject "
         "whose memorization share is above the suite's limit with 95 % confidence is disqualified: struck through, "
         "ranked nowhere. A column has power when it rests on enough seeds (5) or samples (64), carries intervals "
         "and can tell the real row from what predicting nothing scores by 3 of its resolvable differences (the "
         "median CI half-width, shown under its header); an FD column needs at least as many samples as its "
         "encoder's feature dimensions (fewer: a rank-deficient covariance, a biased FD; KID ranks small sets). "
         "Columns without power are grayed and never aggregated. "
         "Borda: per column with power, the number of ranked rows strictly worse; each task weighted equally (mean "
         "over its columns), summed over tasks. Mean rank: the mean over tasks of the mean rank over the task's "
         "columns. A row missing any aggregated column of the view gets no aggregate (partial coverage, as in "
         "MTEB); each row says on how many of the view's columns it was ranked. Per-class columns appear in their "
         "task's tab and are not aggregated. Columns with different comparability keys are never merged.")

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}
.meta,.rules{color:#555;font-size:.9em;max-width:75em}
#tabs{margin:1em 0 .5em;display:flex;flex-wrap:wrap;gap:.3em}
#tabs button{border:1px solid #aaa;background:#f4f4f4;padding:.3em .8em;cursor:pointer;border-radius:3px}
#tabs button[aria-selected=true]{background:#334;color:#fff;border-color:#334}
.controls{display:flex;gap:1.2em;align-items:center;margin:.5em 0 1em}
table{border-collapse:collapse}
th,td{border-bottom:1px solid #ddd;padding:.3em .6em;vertical-align:top}
th{background:#f4f4f4;cursor:pointer;text-align:left;font-weight:600;position:sticky;top:0}
th small{display:block;font-weight:normal;color:#666}
th[aria-sort=ascending]::after{content:" \\25B2"}
th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;white-space:nowrap}
.ci{display:block;color:#666;font-size:.85em}
.rank{display:inline-block;min-width:1.6em;margin-left:.3em;color:#fff;background:#667;border-radius:3px;
  font-size:.8em;text-align:center}
.rank.r1{background:#2a7}
tr.reference td{background:#fff8e0;font-style:italic}
tr.reference .rank{background:#b90}
tr.disqualified td:first-child a{text-decoration:line-through}
tr.disqualified td{color:#999}
th.nopower,td.nopower{color:#aaa}
th.nopower small{color:#b55}
.missing{color:#aaa}
.card{border:1px solid #ddd;border-radius:4px;padding:.5em 1em;margin:.6em 0;max-width:75em}
.card:target{outline:3px solid #2a7}
.card pre,details pre{background:#f7f7f7;padding:.5em;overflow:auto;font-size:.85em}
#empty{color:#a00}
tr.highlight td{background:#e3f6ea;font-weight:600}
#search{width:16em}
"""

SCRIPT = """
(function () {
  "use strict";
  var views = JSON.parse(document.getElementById("views").textContent);
  var table = document.getElementById("board");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var body = table.tBodies[0];
  var params = new URLSearchParams(location.hash.slice(1));
  var state = {task: params.get("task") || table.dataset.defaultTask || "*",
               dataset: params.get("dataset") || table.dataset.defaultDataset || "*",
               encoder: params.get("encoder") || "*", query: (params.get("q") || "").toLowerCase(), sort: null,
               asc: null};
  var subject = (params.get("subject") || "").toLowerCase();

  function visible(th) {
    var d = th.dataset;
    if (!d.task) return true;
    if (state.task === "*" ? d.detail === "1" : d.task !== state.task) return false;
    if (state.dataset !== "*" && d.dataset !== state.dataset) return false;
    if (state.encoder !== "*" && d.encoder !== state.encoder) return false;
    return true;
  }

  function sortRows() {
    if (state.sort === null) return;
    var i = state.sort, text = heads[i].dataset.hib === "text", asc = state.asc;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[i].dataset.value, y = b.cells[i].dataset.value;
      if (x === "" || y === "") return (x === "") - (y === "");
      var c = text ? x.localeCompare(y) : parseFloat(x) - parseFloat(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    heads.forEach(function (h, j) {
      if (j === i) h.setAttribute("aria-sort", asc ? "ascending" : "descending");
      else h.removeAttribute("aria-sort");
    });
  }

  function apply() {
    var shown = heads.map(visible);
    heads.forEach(function (th, i) { th.hidden = !shown[i]; });
    var view = views[[state.task, state.dataset, state.encoder].join("|")] || {};
    var count = 0;
    Array.prototype.forEach.call(body.rows, function (tr) {
      var any = false;
      Array.prototype.forEach.call(tr.cells, function (td, i) {
        td.hidden = !shown[i];
        if (shown[i] && heads[i].dataset.task && td.dataset.value !== "") any = true;
      });
      var label = tr.cells[0].textContent.toLowerCase();
      if (state.query && label.indexOf(state.query) < 0) any = false;
      tr.hidden = !any;
      if (any) count += 1;
      var agg = view[tr.dataset.row] || [null, "n/a", null, "n/a", ""];
      var borda = tr.querySelector("td.borda"), mean = tr.querySelector("td.mean-rank");
      borda.dataset.value = agg[0] === null ? "" : agg[0];
      borda.textContent = agg[1];
      mean.dataset.value = agg[2] === null ? "" : agg[2];
      mean.textContent = agg[3];
      borda.title = mean.title = agg[4];
    });
    document.getElementById("empty").hidden = count > 0;
    document.getElementById("shown").textContent = count;
    sortRows();
  }

  heads.forEach(function (th, i) {
    th.addEventListener("click", function () {
      state.asc = state.sort === i ? !state.asc : th.dataset.hib !== "1";
      state.sort = i;
      sortRows();
    });
  });
  Array.prototype.forEach.call(document.querySelectorAll("#tabs button"), function (button) {
    button.addEventListener("click", function () {
      state.task = button.dataset.task;
      Array.prototype.forEach.call(document.querySelectorAll("#tabs button"), function (b) {
        b.setAttribute("aria-selected", b === button ? "true" : "false");
      });
      apply();
    });
  });
  ["dataset", "encoder"].forEach(function (name) {
    document.getElementById("filter-" + name).addEventListener("change", function (event) {
      state[name] = event.target.value;
      apply();
    });
  });
  var search = document.getElementById("search");
  search.value = state.query;
  search.addEventListener("input", function () { state.query = search.value.trim().toLowerCase(); apply(); });
  ["dataset", "encoder"].forEach(function (name) {
    var select = document.getElementById("filter-" + name);
    if (Array.prototype.some.call(select.options, function (o) { return o.value === state[name]; })) {
      select.value = state[name];
    } else {
      state[name] = "*";
    }
  });
  Array.prototype.forEach.call(document.querySelectorAll("#tabs button"), function (b) {
    b.setAttribute("aria-selected", b.dataset.task === state.task ? "true" : "false");
  });
  state.sort = heads.findIndex(function (th) { return th.classList.contains("borda"); });
  state.asc = false;
  apply();
  if (subject) {  // #subject=NAME: a newly added row, highlighted and scrolled to
    var hit = null;
    Array.prototype.forEach.call(body.rows, function (tr) {
      if (tr.cells[0].textContent.toLowerCase().indexOf(subject) >= 0) {
        tr.classList.add("highlight");
        hit = hit || tr;
      }
    });
    if (hit) { hit.hidden = false; hit.scrollIntoView({block: "center"}); }
  }
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _json_script(element_id: str, data: Any) -> str:
    """JSON inside a <script> element, with `</` escaped so no value can end the element."""
    text = json.dumps(data, sort_keys=True).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def _code(cell: Cell) -> str:
    return f"histosynth {cell.code.get('histosynth')} @ {(cell.code.get('git_commit') or 'no git')[:12]}"


def _view_entry(agg: Aggregate) -> list:
    note = (f"ranked on {agg.coverage} of the {agg.view_columns} columns of this view "
            f"({agg.columns} of them have power and are aggregated)")
    return [agg.borda, format_number(agg.borda), agg.mean_rank, format_number(agg.mean_rank), note]


def views(board: Leaderboard) -> dict[str, dict[str, list]]:
    """Aggregates for every filter combination the page offers ("task|dataset|encoder", * = all)."""
    out = {}
    for task, dataset, encoder in product([ALL, *board.tasks], [ALL, *board.datasets], [ALL, *board.encoders]):
        columns = board.select(None if task == ALL else [task], None if dataset == ALL else [dataset],
                               None if encoder == ALL else [encoder])
        if columns:
            out[f"{task}|{dataset}|{encoder}"] = {rid: _view_entry(a) for rid, a in board.aggregate(columns).items()}
    return out


def csv_text(board: Leaderboard) -> str:
    """Every cell of the board in long form, at full precision (what the page's CSV download holds)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in board.rows:
        for column in board.columns:
            cell = board.cell(row, column)
            if cell is None:
                continue
            writer.writerow({
                "subject": row.label, "kind": row.kind, "name": row.name, "version": row.version,
                "checkpoint_hash": row.checkpoint_hash, "content_hash": row.content_hash, "repo": row.repo,
                "revision": row.revision, "task": column.task, "task_version": column.task_version,
                "dataset": column.dataset, "metric": column.metric, "encoder": column.encoder,
                "comparability_key": column.comparability_key, "value": cell.value, "ci_low": cell.ci_low,
                "ci_high": cell.ci_high, "ci_level": cell.ci_level, "rank": cell.rank, "n_fake": cell.n_fake,
                "file": cell.file, "run_id": cell.run_id, "histosynth": cell.code.get("histosynth"),
                "git_commit": cell.code.get("git_commit"),
            })
    return buffer.getvalue()


def power_note(power: Power | None) -> str:
    """What a column resolves, or why it has no power (page headers, paper tables)."""
    if power is None:
        return ""
    if not power.ok:
        return f"no power: {power.reason}"
    return f"resolves differences of {format_number(power.resolvable)}"


def _header(column: Column, index: int, subtitle: str, power: Power | None) -> str:
    spec = metric_spec(column.metric)
    better = "higher is better" if spec.higher_is_better else "lower is better"
    note = power_note(power)
    title = (f"{column.metric}: {spec.unit}, {better}. Formula: {spec.reference}. Task {column.task} "
             f"v{column.task_version}; comparability key {column.comparability_key}. {note}")
    weak = power is not None and not power.ok
    return (f'<th data-col="{index}" data-task="{_e(column.task)}" data-dataset="{_e(column.dataset)}" '
            f'data-encoder="{_e(column.encoder)}" data-detail="{int(column.detail)}" '
            f'data-power="{int(not weak)}"{" class=nopower" if weak else ""} '
            f'data-hib="{int(spec.higher_is_better)}" data-key="{_e(column.comparability_key)}" title="{_e(title)}">'
            f'{_e(column.title)} {"&uarr;" if spec.higher_is_better else "&darr;"}'
            f'<small>{_e(subtitle)}</small><small>{_e(power.label if weak else note)}</small></th>')


def _cell(cell: Cell | None, row: Row, index: int, board: Leaderboard, weak: bool) -> str:
    gray = " nopower" if weak else ""
    if cell is None or cell.value is None:
        why = cell.undefined if cell is not None else "not measured"
        return f'<td class="num missing{gray}" data-col="{index}" data-value="" title="{_e(why)}">&ndash;</td>'
    ci = ""
    if cell.ci_low is not None and cell.ci_high is not None:
        level = f"{cell.ci_level:.0%} " if cell.ci_level else ""
        ci = f'<span class="ci">{level}[{format_number(cell.ci_low)}, {format_number(cell.ci_high)}]</span>'
    if board.ranked(row):
        rank = f'<span class="rank{" r1" if cell.rank == 1 else ""}">{cell.rank}</span>'
    elif row.id in board.disqualified:
        rank = f'<span class="rank" title="{_e(board.disqualified[row.id])}">dq</span>'
    else:
        rank = '<span class="rank" title="reference line, not ranked">ref</span>'
    title = f"{cell.file} (run {cell.run_id}); N fake {cell.n_fake}; histosynth {cell.code.get('histosynth')}"
    return (f'<td class="num{gray}" data-col="{index}" data-value="{cell.value!r}" data-rank="{cell.rank or ""}" '
            f'title="{_e(title)}">{format_number(cell.value)}{rank}{ci}</td>')


def kind_label(board: Leaderboard, row: Row) -> str:
    """What the Kind column says: reference line, disqualified (with why), or the subject's kind."""
    if row.id in board.disqualified:
        return f"disqualified ({board.disqualified[row.id]})"
    if row.kind == "real":
        return "real data (reference line)"
    if row.kind == "reference":
        return "reference line (ceiling)" if row.name == "real-heldout" else f"reference line ({row.name})"
    return row.kind


def _card(board: Leaderboard, row: Row, anchor: str) -> str:
    items = [("kind", row.kind), ("name", row.name), ("version", row.version),
             ("checkpoint hash", row.checkpoint_hash), ("scored data content hash", row.content_hash),
             ("Hub repo", f"{row.repo}@{row.revision}" if row.repo and row.revision else row.repo)]
    parts = [f'<article class="card" id="{anchor}"><h3>{_e(row.label)}</h3><ul>']
    parts += [f"<li>{_e(k)}: <code>{_e(v)}</code></li>" for k, v in items if v]
    url = hub_card_url(row)
    if url:
        parts.append(f'<li>card on the Hub: <a class="hub-card" href="{_e(url)}">{_e(url)}</a></li>')
    if row.kind == "reference":
        why = ("it passes the held-out real patches of {d} through: every score of its row is real data's, the "
               "ceiling" if row.name == "real-heldout" else "it returns the training patch of {d} whose map best "
               "matches each condition: the copy baseline the memorization gate must catch")
        parts.append(f"<li>reference line on {_e(row.dataset)}, not ranked: {_e(why.format(d=row.dataset))}. One row "
                     "per dataset, with the checkpoint hash of what it was fitted to there.</li>")
    meta = generator_meta(row)
    if meta is not None:
        parts.append(f"<li>generator: {_e(meta.summary)}; family {_e(meta.family)}; license {_e(meta.license)}</li>")
        parts.append(f"<li>paper: {_e(meta.paper)}</li>")
    files = sorted({c.file for c in board.cells.get(row.id, {}).values()})
    code = sorted({_code(c) for c in board.cells.get(row.id, {}).values()})
    parts.append(f"<li>results files: {', '.join(f'<code>{_e(f)}</code>' for f in files)}</li>")
    parts.append(f"<li>code: {_e('; '.join(code))}</li></ul>")
    bib = citation(row)
    if bib:
        parts.append(f"<details><summary>BibTeX</summary><pre>{_e(bib)}</pre></details>")
    parts.append("</article>")
    return "".join(parts)


def default_dataset(board: Leaderboard) -> str:
    """The dataset the page opens on: the one with the most generator rows (so a row per generator is shown first),
    ties broken by name; "*" when the board has none."""
    counts = {d: sum(1 for r in board.rows if r.ranked and any(board.cell(r, c) is not None
                                                              for c in board.columns if c.dataset == d))
              for d in board.datasets}
    return min(counts, key=lambda d: (-counts[d], d)) if counts else ALL


def default_task(board: Leaderboard, dataset: str, page_views: dict[str, dict[str, list]] | None = None) -> str:
    """The task tab the page opens on: the view of `dataset` that gives a Borda score to the most rows, "all tasks"
    on a tie. Generators are specialised (a completion model has no TSTR number), so the all-tasks view often
    aggregates nobody, and a first screen of "n/a" tells a reader nothing. `page_views`: `views(board)`, when the
    caller has it already."""
    page_views = views(board) if page_views is None else page_views

    def aggregated(task: str) -> int:
        return sum(entry[0] is not None for entry in page_views.get(f"{task}|{dataset}|{ALL}", {}).values())

    return max([ALL, *board.tasks], key=aggregated)


def render_page(board: Leaderboard, title: str = "histosynth leaderboard", dataset: str | None = None) -> str:
    """The whole page as one HTML string; it opens on `dataset` (default: `default_dataset`) and that dataset's
    `default_task`. The URL fragment can choose the view and find a subject:
    #task=tstr&dataset=sim-test&q=htd&subject=my-gan."""
    dataset = dataset or default_dataset(board)
    page_views = views(board)
    task = default_task(board, dataset, page_views)
    anchors = {row.id: f"card-{i}" for i, row in enumerate(board.rows)}
    fixed = ('<th data-hib="text">Subject</th><th data-hib="text">Kind</th>'
             '<th class="borda" data-hib="1" title="Borda count over the tasks of this view">Borda</th>'
             '<th class="mean-rank" data-hib="0" title="Mean rank over the tasks of this view">Mean rank</th>')
    offset = 4
    heads = "".join(_header(c, offset + i, board.subtitle(c), board.power.get(c.id))
                    for i, c in enumerate(board.columns))
    weak = [c.id in board.power and not board.power[c.id].ok for c in board.columns]
    body = []
    for row in board.rows:
        cells = "".join(_cell(board.cell(row, c), row, offset + i, board, weak[i]) for i, c in enumerate(board.columns))
        kind = kind_label(board, row)
        css = " class=reference" if not row.ranked else " class=disqualified" if row.id in board.disqualified else ""
        body.append(f'<tr data-row="{_e(row.id)}" data-kind="{_e(row.kind)}"{css}>'
                    f'<td data-value="{_e(row.label.lower())}"><a class="model-link" href="#{anchors[row.id]}">'
                    f'{_e(row.label)}</a></td><td data-value="{_e(row.kind)}">{_e(kind)}</td>'
                    f'<td class="num borda" data-value=""></td><td class="num mean-rank" data-value=""></td>{cells}</tr>')
    tabs = "".join(f'<button type="button" data-task="{_e(t)}" aria-selected="{"true" if t == task else "false"}">'
                   f'{"All tasks" if t == ALL else _e(t)}</button>' for t in [ALL, *board.tasks])

    def select(name: str, values: list[str]) -> str:
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        return (f'<label>{name} <select id="filter-{name}"><option value="{ALL}">all</option>{options}</select>'
                "</label>")

    code = sorted({_code(c) for cells in board.cells.values() for c in cells.values()})
    columns_info = "".join(
        f"<li><b>{_e(c.task)} v{c.task_version} / {_e(c.title)} / {_e(c.dataset)}</b>: key "
        f"<code>{_e(c.comparability_key)}</code><pre>{_e(json.dumps(c.comparability, indent=1, sort_keys=True))}</pre></li>"
        for c in board.columns)
    csv_href = "data:text/csv;charset=utf-8," + urllib.parse.quote(csv_text(board))
    cards = "".join(_card(board, row, anchors[row.id]) for row in board.rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="data:,"><style>{CSS}</style></head>
<body><h1>{_e(title)}</h1>
<p class="meta">{len(board.rows)} subjects, {len(board.columns)} columns from {len(board.files)} results files.
Code: {_e('; '.join(code))}. <a id="csv" download="histosynth-leaderboard.csv" href="{csv_href}">Download CSV</a></p>
<p class="rules">{_e(RULES)}</p>
<nav id="tabs">{tabs}</nav>
<div class="controls">{select("dataset", board.datasets)}{select("encoder", board.encoders)}
<label>find <input id="search" type="search" placeholder="subject name"></label>
<span><span id="shown"></span> rows shown</span></div>
<p id="empty" hidden>No results match these filters.</p>
<table id="board" data-default-dataset="{_e(dataset)}" data-default-task="{_e(task)}"><thead><tr>{fixed}{heads}</tr></thead><tbody>{"".join(body)}</tbody></table>
<h2>Subjects</h2><section id="cards">{cards}</section>
<h2>Columns: tasks, versions and comparability keys</h2><details><summary>{len(board.columns)} columns</summary>
<ul>{columns_info}</ul></details>
{_json_script("views", page_views)}
<script>{SCRIPT}</script>
</body></html>
"""


def build_page(board: Leaderboard, out: Path | str, title: str = "histosynth leaderboard",
               dataset: str | None = None) -> Path:
    """Write `out/index.html` atomically (histosynth.atomic); returns its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out / PAGE_NAME, render_page(board, title, dataset))
