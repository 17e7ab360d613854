"""Leaderboard aggregation, paper tables and the static page, from real results files (tests/leaderboard_runs.py).

Expected ranks and aggregates are worked out by hand from the fixture's values and CIs (see each test)."""

from __future__ import annotations

import json
import re
import urllib.parse
from html.parser import HTMLParser

import pytest
from leaderboard_runs import (
    CODE,
    DISTRIBUTION,
    ENCODER,
    REAL,
    REAL_FD,
    REAL_SUBJECT,
    distribution_run,
    generator,
    other_key_run,
    row_id,
    write_runs,
)

from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult, ResultsFormatError, Subject
from histosynth.cli import main
from histosynth.data_cards.model import Version
from histosynth.errors import InputError
from histosynth.leaderboard.aggregate import (
    borda_points,
    build_leaderboard,
    ci_ranks,
    format_number,
    load_leaderboard,
    load_results,
)
from histosynth.leaderboard.page import csv_text, default_task, render_page
from histosynth.leaderboard.publish import check_suite_version
from histosynth.leaderboard.tables import latex_escape, render_table, table_columns

HTD, NO_COPY, PIX = (row_id(n) for n in DISTRIBUTION)
REAL_ROW = "real:histosynth/sim-heldout@v1.0.0"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return write_runs(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def board(results):
    return load_leaderboard(results)


def column(board, task, metric):
    (found,) = [c for c in board.columns if c.task == task and c.metric == metric]
    return found


def test_ci_tie_rule():
    # lower is better; A [0.9, 1.1] and B [1.0, 1.2] overlap: B ties A at 1. C overlaps nobody: competition rank 3.
    # D has no CI (a point) and overlaps nobody: 4. E's wide CI reaches up to A: rank 1 although its value is last.
    entries = [(1.0, 0.9, 1.1), (1.05, 1.0, 1.2), (2.0, 1.9, 2.1), (3.0, None, None), (4.0, 0.95, 5.0)]
    assert ci_ranks(entries, higher_is_better=False) == [1, 1, 3, 4, 1]
    # higher-is-better, without E: D (3.0) is best; C is 2nd; B 3rd; A overlaps B, so it ties B at 3
    assert ci_ranks(entries[:4], higher_is_better=True) == [3, 3, 2, 1]
    assert ci_ranks([(0.5, None, None), (0.5, None, None), (0.4, None, None)], True) == [1, 1, 3]  # exact ties
    assert borda_points([1, 1, 3]) == {1: 1, 3: 0}


def test_rows_columns_and_ranks(board):
    assert [r.id for r in board.rows][-1] == REAL_ROW  # real data last: the reference line
    assert {c.task for c in board.columns} == {"distribution", "tstr"}
    fd, precision, miou = (column(board, "distribution", "fd"), column(board, "distribution", "precision"),
                           column(board, "tstr", "miou"))
    # fd, lower better: htd 10 [9, 11]; htd-no-copy 10.5 [10.2, 12] overlaps htd -> tied at 1; pix2pix 3
    assert [board.cell(r, fd).rank for r in (HTD, NO_COPY, PIX)] == [1, 1, 3]
    # precision, higher better from the metric registry, no CIs: 0.8 > 0.7 > 0.6
    assert [board.cell(r, precision).rank for r in (NO_COPY, HTD, PIX)] == [1, 2, 3]
    assert [board.cell(r, miou).rank for r in (HTD, NO_COPY)] == [1, 2] and board.cell(PIX, miou) is None
    # real data is shown, better than every generator, and not ranked
    assert board.cell(REAL_ROW, fd).value == 2.0 and board.cell(REAL_ROW, fd).rank is None
    assert board.cell(REAL_ROW, miou).value == 0.60 and board.cell(REAL_ROW, miou).rank is None
    assert fd.dataset == miou.dataset == REAL.name


def test_borda_mean_rank_and_partial_coverage(board):
    agg = board.aggregate()
    # Borda points: fd {1: 1, 3: 0}, precision {1: 2, 2: 1, 3: 0}, miou {1: 1, 2: 0}; a task's score is the mean
    # over its columns. htd: distribution (1 + 1) / 2 + tstr 1 = 2; mean rank ((1 + 2) / 2 + 1) / 2 = 1.25.
    assert (agg[HTD].borda, agg[HTD].mean_rank) == (2.0, 1.25)
    # htd-no-copy: (1 + 2) / 2 + 0 = 1.5; mean rank ((1 + 1) / 2 + 2) / 2 = 1.5
    assert (agg[NO_COPY].borda, agg[NO_COPY].mean_rank) == (1.5, 1.5)
    # pix2pix has no TSTR number: null aggregates, so it cannot outrank full coverage
    assert (agg[PIX].borda, agg[PIX].mean_rank, agg[PIX].coverage, agg[PIX].columns) == (None, None, 2, 3)
    assert (agg[REAL_ROW].borda, agg[REAL_ROW].mean_rank) == (None, None)  # the reference line is never ranked
    # restricted to the distribution task, pix2pix is covered: Borda (0 + 0) / 2, mean rank (3 + 3) / 2
    dist = board.aggregate(board.select(tasks=["distribution"]))
    assert (dist[PIX].borda, dist[PIX].mean_rank) == (0.0, 3.0)



def test_a_column_of_only_real_data_is_not_aggregated(results):
    real_only = distribution_run(REAL_SUBJECT, *REAL_FD, n_fake=128)  # another key: a column only real data is in
    board = build_leaderboard(load_results(results) + [("real-64.json", real_only)])
    assert len(board.columns) == 5
    agg = board.aggregate()
    assert (agg[HTD].borda, agg[HTD].mean_rank, agg[HTD].columns) == (2.0, 1.25, 3)


def test_incomparable_runs_get_separate_columns(results, tmp_path):
    other = other_key_run()
    runs = load_results(results) + [("other.json", other)]
    board = build_leaderboard(runs)
    fds = [c for c in board.columns if c.metric == "fd"]
    assert len(fds) == 2 and len({c.comparability_key for c in fds}) == 2
    assert other.comparability_key in {c.comparability_key for c in fds}
    alone = next(c for c in fds if c.comparability_key == other.comparability_key)
    assert board.cell(HTD, alone).value == 12.0 and board.cell(HTD, alone).rank == 1
    assert board.cell(NO_COPY, alone) is None
    assert {board.subtitle(c) for c in fds} == {f"sim-test, distribution v1, {c.comparability_key[:11]}" for c in fds}
    assert board.subtitle(column(board, "tstr", "miou")) == "sim-test, tstr (deeplabv3plus) v1"  # no key: unambiguous
    assert other.comparability()["n_scored"] == {"fake": 32}  # the key differs by the scored set's N only


def test_bad_files_are_named(results, tmp_path):
    bad = tmp_path / "bad"
    write_runs(bad)
    doc = json.loads((bad / "distribution-htd.json").read_text())
    doc["results"][0]["higher_is_better"] = True  # a file cannot flip fd's direction
    (bad / "distribution-htd.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsFormatError, match=r"distribution-htd\.json: results\[0\]\.higher_is_better"):
        load_leaderboard(bad)
    (tmp_path / "empty" / ".subject.partial-123" / ".incomplete").mkdir(parents=True)  # a writer's partial folder
    (tmp_path / "empty" / ".subject.partial-123" / ".incomplete" / "half.json").write_text("{")
    with pytest.raises(InputError, match="empty: no results files"):
        load_leaderboard(tmp_path / "empty")
    # the same measurement in two files (a rerun) is one cell; the same subject and column with another number is
    # refused, naming both files
    dup = tmp_path / "dup"
    write_runs(dup)
    (dup / "copy.json").write_text((dup / "distribution-htd.json").read_text())
    board = load_leaderboard(dup)
    assert board.cell(HTD, column(board, "distribution", "fd")).file == "copy.json" and len(board.rows) == 4
    doc = json.loads((dup / "copy.json").read_text())
    doc["results"][0]["value"] = 10.25
    (dup / "copy.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match=r"distribution-htd\.json and copy\.json both score htd .* different numbers"):
        load_leaderboard(dup)


def test_unattributed_number_is_refused():
    run = BenchmarkRun("distribution", [MetricResult("fd", 1.0, "lite0", subject="train:x")],
                       {"real": REAL, "fake": DataRef("f", content_hash="sha256:f", n=16)},
                       {"fake": generator("htd")}, encoders=ENCODER, code=CODE)
    with pytest.raises(InputError, match=r"x\.json: metric 'fd' scores data role 'train:x'"):
        build_leaderboard([("x.json", run)])


def test_markdown_table_bold_best_and_citations(board):
    text = render_table(board, table_columns(board), "markdown")
    rows = {line[2:].split(" ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # fd: htd and htd-no-copy tie at rank 1 (CIs overlap): both bold; pix2pix not; ± half-width (11 - 9) / 2
    assert "**10.0 ± 1.00**" in rows["htd"] and "**10.5 ± 0.900**" in rows["htd-no-copy"]
    assert "20.0 ± 1.00" in rows["pix2pix"] and "**20.0" not in rows["pix2pix"]
    # the reference line: real data, never bold although its fd (2.0) is the best number
    (real,) = [line for line in rows.values() if "(reference)" in line]
    assert "2.00 ± 0.500" in real and "**" not in real
    # Borda / mean rank columns, pix2pix partial -> n/a
    assert "| 2.00 | 1.25 |" in rows["htd"] and "| n/a | n/a |" in rows["pix2pix"]
    assert rows["htd"].startswith("| htd 0.1.0 (") and "[htd2025]" in rows["htd"]
    assert "htd2025" in text and "```bibtex" in text and "isola2017pix2pix" in text


def test_latex_table_escapes_and_interval(tmp_path):
    run = BenchmarkRun("distribution", [MetricResult("fd", 3.0, "enc_v2&co", 2.5, 3.5, 0.95)],
                       {"real": DataRef("real_set%1", content_hash="sha256:r", n=8),
                        "fake": DataRef("f", content_hash="sha256:f", n=8)},
                       {"fake": generator("my_gen#1")}, encoders={"enc_v2&co": {"weights": "w"}}, code=CODE)
    board = build_leaderboard([("a.json", run)])
    text = render_table(board, table_columns(board), "latex", ci="interval")
    assert r"my\_gen\#1 0.1.0" in text and r"fd (enc\_v2\&co) $\downarrow$" in text and r"real\_set\%1" in text
    assert r"\textbf{3.00 [2.50, 3.50]}" in text
    body = "\n".join(line for line in text.splitlines() if not line.startswith("%"))
    assert "my_gen" not in body and "enc_v2&" not in body and "set%1" not in body
    assert latex_escape("a_b&c%d$e#f{g}h~i^j\\") == (r"a\_b\&c\%d\$e\#f\{g\}h\textasciitilde{}i"
                                                      r"\textasciicircum{}j\textbackslash{}")


def test_table_and_page_show_the_same_numbers(board):
    page = render_page(board)
    table = render_table(board, table_columns(board), "markdown")
    for row in board.rows:
        for col in board.columns:
            cell = board.cell(row, col)
            if cell is not None and cell.value is not None:
                assert format_number(cell.value) in table and f"{format_number(cell.value)}<span class=" in page


class _Structure(HTMLParser):
    """Collects scripts, styles, links and unbalanced tags of a page."""

    VOID = {"meta", "link", "br", "img", "input", "hr", "wbr", "source"}

    def __init__(self) -> None:
        super().__init__()
        self.stack, self.errors, self.resources, self.scripts, self.ids = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.append(attrs["id"])
        if tag == "script":
            self.scripts.append(attrs)
        if tag in ("script", "img", "iframe") and attrs.get("src"):
            self.resources.append(attrs["src"])
        if tag == "link":
            self.resources.append(attrs.get("href", ""))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_page_is_self_contained_and_well_formed(board, results, tmp_path):
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(tmp_path / "site")]) == 0
    assert sorted(p.name for p in (tmp_path / "site").iterdir()) == ["index.html"]  # nothing half-written left
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack
    assert all(not re.match(r"(https?:)?//", r) for r in parser.resources), parser.resources  # no CDN, no network
    assert all("src" not in s for s in parser.scripts) and "@import" not in page
    assert len(parser.ids) == len(set(parser.ids))
    views = json.loads(re.search(r'<script type="application/json" id="views">(.*?)</script>', page, re.S).group(1))
    assert views["*|*|*"][HTD][:3] == [2.0, "2.00", 1.25] and views["*|*|*"][PIX][0] is None
    href = re.search(r'id="csv" download="[^"]+" href="data:text/csv;charset=utf-8,([^"]+)"', page).group(1)
    assert urllib.parse.unquote(href) == csv_text(board)
    assert csv_text(board).count("\n") == 1 + 3 + 3 + 2 + 3  # header, htd, htd-no-copy, pix2pix, real data
    assert 'href="https://huggingface.co/datasets/histosynth/sim-heldout/tree/v1.0.0"' in page



def test_the_page_opens_on_the_task_that_ranks_the_most_rows(board, results):
    # all tasks: htd and htd-no-copy are aggregated (pix2pix has no TSTR number); distribution: all three
    assert default_task(board, REAL.name) == "distribution"
    page = render_page(board)
    assert 'data-default-task="distribution"' in page
    assert re.findall(r'data-task="([^"]+)" aria-selected="true"', page) == ["distribution"]
    # only the TSTR columns: tstr ranks two rows and so does the all-tasks view, which wins the tie
    tstr_only = build_leaderboard([(w, r) for w, r in load_results(results) if "tstr" in w])
    assert default_task(tstr_only, REAL.name) == "*"

def test_cli_table_and_errors(results, tmp_path, capsys):
    assert main(["leaderboard", "table", "--results", str(results), "--format", "latex", "--tasks", "tstr"]) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}{lrrr}" in out and "miou" in out and "fd" not in out.split("% Citations")[0]
    assert main(["leaderboard", "table", "--results", str(results), "--tasks", "nope"]) == 2
    assert "no results for task 'nope'" in capsys.readouterr().err
    assert main(["leaderboard", "build", "--results", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "argument --results: " + str(tmp_path / "missing") + ": no such folder" in capsys.readouterr().err


def test_release_tag_follows_the_suite_version(results):
    runs = load_results(results)
    assert check_suite_version(runs, Version.parse("v7.0.0")) is None  # plain bench runs: no suite, no constraint
    for _, run in runs:
        run.settings.update(suite="histosynth-bench", suite_version="1")
    assert check_suite_version(runs, Version.parse("v1.2.0")) == "histosynth-bench v1"
    with pytest.raises(InputError, match="v2.0.0 does not match the results' suite version histosynth-bench v1"):
        check_suite_version(runs, Version.parse("v2.0.0"))
    runs[0][1].settings["suite_version"] = "2"
    with pytest.raises(InputError, match=r"mix suite versions: histosynth-bench v1 \(.*\), histosynth-bench v2"):
        check_suite_version(runs, Version.parse("v1.0.0"))


def _with(results, *extra):
    return build_leaderboard(load_results(results) + list(extra))


def test_a_reference_row_that_beats_everyone_changes_no_rank(results, board):
    from histosynth.benchmark.results import Subject

    ceiling = Subject("generator", "real-heldout", "sha256:passthrough", version="0.1.0", checkpoint_hash="sha256:res")
    with_ref = _with(results, ("ref.json", distribution_run(ceiling, 0.5, (0.4, 0.6), 0.99)))
    (ref,) = [r for r in with_ref.rows if r.name == "real-heldout"]
    assert ref.kind == "reference" and not with_ref.ranked(ref)
    for col in board.columns:
        assert with_ref.cell(ref, col) is None or with_ref.cell(ref, col).rank is None
        for row in (HTD, NO_COPY, PIX):
            before, after = board.cell(row, col), with_ref.cell(row, col)
            assert (before.rank if before else None) == (after.rank if after else None)
    assert with_ref.aggregate()[HTD] == board.aggregate()[HTD] and with_ref.aggregate()[ref.id].borda is None


def test_a_memorizing_subject_is_disqualified_and_ranked_nowhere(results, board):
    copier = generator("copier")
    run = distribution_run(copier, 1.0, (0.5, 1.5), 0.99)
    run.results.append(MetricResult("memorization", 0.5, "lite0", 0.37, 0.63, 0.95, 16, 64))
    novel = generator("novel")
    clean = distribution_run(novel, 1.0, (0.5, 1.5), 0.99)
    clean.results.append(MetricResult("memorization", 0.02, "lite0", 0.0, 0.08, 0.95, 16, 64))
    tested = _with(results, ("copier.json", run), ("novel.json", clean))
    copier_id, novel_id = row_id("copier"), row_id("novel")
    assert "memorizes" in tested.disqualified[copier_id] and "0.1" in tested.disqualified[copier_id]
    assert novel_id not in tested.disqualified  # under the limit
    fd = column(tested, "distribution", "fd")
    assert tested.cell(copier_id, fd).rank is None and tested.cell(novel_id, fd).rank == 1
    assert tested.aggregate()[copier_id].borda is None


def test_a_two_seed_column_has_no_power_and_is_not_aggregated(results, board):
    two_seeds = BenchmarkRun.load(results / "sub" / "tstr.json")
    two_seeds.settings["seeds"] = [0, 1]
    tested = build_leaderboard([(w, r) for w, r in load_results(results) if not w.startswith("sub/")]
                               + [("two-seeds.json", two_seeds)])
    miou = column(tested, "tstr", "miou")
    assert not tested.power[miou.id].ok and "2 seeds" in tested.power[miou.id].reason
    assert tested.cell(HTD, miou).rank == 1  # still ranked in its own column
    agg = tested.aggregate()
    assert (agg[HTD].columns, agg[HTD].view_columns) == (2, 3)  # ranked on 2 of the 3 columns it is shown in
    assert agg[PIX].borda is not None  # nothing missing among the columns with power
    assert tested.power[column(tested, "distribution", "fd").id].resolvable == pytest.approx(1.0)


def test_a_column_of_an_older_task_version_is_stale_and_not_aggregated(results, board):
    older = BenchmarkRun.load(results / "sub" / "tstr.json")
    older.settings["model"] = "hovernet"  # whose task version (results.MODEL_TASK_VERSIONS) is above 1
    older.task_version = 1
    tested = build_leaderboard([(w, r) for w, r in load_results(results) if not w.startswith("sub/")]
                               + [("older.json", older)])
    power = tested.power[column(tested, "tstr", "miou").id]
    assert not power.ok and power.reason.startswith("stale: measured by tstr (hovernet) v1") and power.label == "stale"
    assert tested.aggregate()[HTD].columns == board.aggregate()[HTD].columns - 1
    assert "; stale" in render_table(tested, table_columns(tested), "markdown")



def test_an_fd_fitted_to_fewer_samples_than_feature_dimensions_has_no_power(board):
    from histosynth.benchmark.encoders import ENCODERS

    dim = ENCODERS.get("effnet-lite0").feature_dim

    def fd_power(n_fake: int, n_real: int):
        real = DataRef("sim-test", content_hash="sha256:real-sim", n=n_real)
        runs = [(f"{name}.json", distribution_run(generator(name), fd, ci, precision, n_fake, real, "effnet-lite0"))
                for name, (fd, ci, precision) in DISTRIBUTION.items()]
        tested = build_leaderboard(runs)
        return tested.power[column(tested, "distribution", "fd").id], tested

    short, tested = fd_power(dim - 1, dim)
    assert not short.ok and short.reason.startswith(f"{dim - 1} generated samples of {dim}-dimensional features")
    assert tested.power[column(tested, "distribution", "precision").id].ok  # the rule is FD's alone
    assert tested.aggregate()[HTD].columns == 1  # precision alone is aggregated
    real_short, _ = fd_power(dim, 96)
    assert not real_short.ok and real_short.reason.startswith(f"96 real samples of {dim}-dimensional")
    enough, _ = fd_power(dim, dim)
    assert enough.ok
    assert board.power[column(board, "distribution", "fd").id].ok  # an encoder no registry knows: no dimension


def test_label_consistency_is_filed_under_the_held_out_set_of_its_ceiling(results):
    # its segmenter trains on sim-train, its ceiling is read on sim-test: one dataset filter shows it beside FD
    train = DataRef("sim-train", content_hash="sha256:train-sim", n=32)
    fake = DataRef("htd", content_hash=generator("htd").content_hash, n=64)
    run = BenchmarkRun("label-consistency", [
        MetricResult("label_consistency_miou", 0.5, None, 0.45, 0.55, 0.95, 32, 64, subject="fake"),
        MetricResult("label_consistency_miou", 0.8, None, 0.75, 0.85, 0.95, 32, 16, subject="real-test")],
        {"real": train, "fake": fake, "real-test": REAL},
        {"fake": generator("htd"), "real-test": Subject("real", "sim-test", REAL.content_hash)},
        settings={"seed": 0}, code=dict(CODE))
    tested = build_leaderboard(load_results(results) + [("label-consistency.json", run)])
    consistency = column(tested, "label-consistency", "label_consistency_miou")
    assert consistency.dataset == column(tested, "distribution", "fd").dataset == REAL.name
    assert consistency in tested.select(datasets=[REAL.name])

def test_a_column_that_cannot_tell_real_data_from_nothing_has_no_power(results):
    weak = BenchmarkRun.load(results / "sub" / "tstr.json")
    for result in weak.results:
        result.value, result.ci_low, result.ci_high = 0.02, 0.0, 0.2
    tested = build_leaderboard([(w, r) for w, r in load_results(results) if not w.startswith("sub/")]
                               + [("weak.json", weak)])
    power = tested.power[column(tested, "tstr", "miou").id]
    assert not power.ok and "predicting nothing" in power.reason


def test_tables_and_page_show_reference_lines_disqualified_rows_and_columns_without_power(results):
    copier = generator("copier")
    run = distribution_run(copier, 1.0, (0.5, 1.5), 0.99)
    run.results.append(MetricResult("memorization", 0.5, "lite0", 0.37, 0.63, 0.95, 16, 64))
    two_seeds = BenchmarkRun.load(results / "sub" / "tstr.json")
    two_seeds.settings["seeds"] = [0, 1]
    tested = build_leaderboard([(w, r) for w, r in load_results(results) if not w.startswith("sub/")]
                               + [("copier.json", run), ("two-seeds.json", two_seeds)])
    text = render_table(tested, table_columns(tested), "markdown")
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    names = [line.split(" | ")[0] for line in lines[2:]]
    assert names[-2].startswith("| ~~copier") and "disqualified" in names[-2] and "(reference)" in names[-1]
    heads = lines[0].split(" | ")[3:]
    weak = [h.split("<br>")[0] for h in heads if "no power" in h]
    assert weak == ["memorization (lite0) ↓", "miou ↑"]  # two seeds; and nobody ranked on memorization here
    latex = render_table(tested, table_columns(tested), "latex")
    assert r"\sout{copier" in latex and latex.index(r"\sout{copier") < latex.rindex(r"\midrule")
    page = render_page(tested)
    assert 'class=disqualified' in page and 'class=nopower' in page and "reference line" in page


def test_real_rows_of_two_sets_are_told_apart_by_their_set():
    from histosynth.benchmark.results import Subject

    runs = []
    for folder, digest in (("sim-train", "sha256:train"), ("sim-test", "sha256:test")):
        real = Subject("real", "simulator", digest)
        run = distribution_run(real, *REAL_FD)
        run.data["fake"] = DataRef("real", content_hash=digest, n=64, location=folder)
        runs.append((f"{folder}.json", run))
    board = build_leaderboard(runs)
    labels = sorted(r.label for r in board.rows)
    assert labels == ["simulator: sim-test", "simulator: sim-train"]  # one source, two sets: two names
    assert all(not r.ranked for r in board.rows)
