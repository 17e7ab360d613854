"""The leaderboard page in a real browser, opened from file:// with the network blocked: sorting, task tabs,
dataset/encoder filters, a model-card link, no console errors, and the screenshot the README shows.

The committed page (docs/leaderboard/index.html, built from results/) opens and filters too; set
HISTOSYNTH_SCREENSHOT=docs/leaderboard.png to (re)write the README's screenshot from it."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from leaderboard_runs import DISTRIBUTION, write_runs

from histosynth.cli import main

REAL_LABEL = "histosynth/sim-heldout@v1.0.0"  # the real-data row: its Hub repo@revision
COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "leaderboard" / "index.html"  # from results/

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaderboard")
    results = write_runs(root / "results")
    assert main(["leaderboard", "build", "--results", str(results), "--out", str(root / "site")]) == 0
    return root / "site" / "index.html"


@pytest.fixture
def page(browser, site):
    yield from open_page(browser, site)


@pytest.fixture
def committed(browser):
    yield from open_page(browser, COMMITTED)


def open_page(browser, site: Path):
    """A fresh page on the site; any request that is not file:// or data: fails the test; console errors are kept."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.errors, page.remote = [], []
    page.on("console", lambda msg: msg.type == "error" and page.errors.append(msg.text))
    page.on("pageerror", lambda err: page.errors.append(str(err)))

    def route(r):
        if not r.request.url.startswith(("file:", "data:")):
            page.remote.append(r.request.url)
            return r.abort()
        return r.continue_()

    page.route("**/*", route)
    page.goto(site.as_uri())
    yield page
    assert page.errors == [], page.errors
    assert page.remote == [], page.remote
    context.close()


def visible_rows(page) -> list[str]:
    """Subject names (first word of the label) of the rows shown, in display order."""
    return page.eval_on_selector_all("#board tbody tr:not([hidden])",
                                     "rows => rows.map(r => r.cells[0].textContent.split(' ')[0])")


def column_values(page, title: str) -> list[float | None]:
    """Values of the visible rows in the column whose header starts with `title`, in display order."""
    return page.evaluate("""title => {
        const heads = Array.from(document.querySelectorAll('#board thead th'));
        const i = heads.findIndex(h => !h.hidden && h.textContent.startsWith(title));
        return Array.from(document.querySelectorAll('#board tbody tr:not([hidden])'))
            .map(r => r.cells[i].dataset.value === '' ? null : parseFloat(r.cells[i].dataset.value));
    }""", title)


def test_default_order_is_borda_and_sorting_by_a_column(page):
    # it opens on the distribution tab, the view that ranks every generator (pix2pix has no TSTR number); Borda
    # there, best first: htd-no-copy (fd 1st, precision 1st), htd (1st, 2nd), pix2pix; real data after
    assert page.get_attribute("#tabs button[data-task='distribution']", "aria-selected") == "true"
    assert visible_rows(page) == ["htd-no-copy", "htd", "pix2pix", REAL_LABEL]
    page.click("#board thead th:has-text('precision (lite0)')")  # first click: best first (higher is better)
    values = column_values(page, "precision (lite0)")
    assert values == sorted(values, reverse=True) and len(values) == 4
    assert visible_rows(page) == [REAL_LABEL, "htd-no-copy", "htd", "pix2pix"]  # real data 0.9 is shown in place
    page.click("#board thead th:has-text('fd (lite0)')")  # lower is better: ascending
    assert column_values(page, "fd (lite0)") == [2.0, 10.0, 10.5, 20.0]
    page.click("#board thead th:has-text('fd (lite0)')")  # second click reverses
    assert column_values(page, "fd (lite0)") == [20.0, 10.5, 10.0, 2.0]
    assert page.get_attribute("#board thead th:has-text('fd (lite0)')", "aria-sort") == "descending"


def test_task_tab_and_filters(page):
    page.click("#tabs button[data-task='tstr']")
    assert set(visible_rows(page)) == {"htd", "htd-no-copy", REAL_LABEL}  # pix2pix has no TSTR number
    heads = page.eval_on_selector_all("#board thead th:not([hidden])", "hs => hs.map(h => h.textContent)")
    assert heads[4:] == ["miou ↑sim-test, tstr (deeplabv3plus) v1resolves differences of 0.0500"]
    # in the tstr view, the aggregates are the tstr column's: htd rank 1 (Borda 1), htd-no-copy rank 2 (Borda 0)
    borda = page.eval_on_selector_all("#board tbody tr:not([hidden]) td.borda", "cs => cs.map(c => c.textContent)")
    assert dict(zip(visible_rows(page), borda, strict=True)) == {"htd": "1.00", "htd-no-copy": "0", REAL_LABEL: "n/a"}
    page.click("#tabs button[data-task='*']")
    assert set(visible_rows(page)) == {*DISTRIBUTION, REAL_LABEL}
    page.select_option("#filter-encoder", "-")  # encoder-free columns only: the TSTR mIoU
    assert set(visible_rows(page)) == {"htd", "htd-no-copy", REAL_LABEL}
    page.select_option("#filter-encoder", "lite0")
    page.select_option("#filter-dataset", "sim-test")
    assert len(visible_rows(page)) == 4 and page.is_hidden("#empty")


def test_model_link_leads_to_its_card(page):
    page.click("#board tbody tr[data-row^='generator:htd@'] a.model-link")
    anchor = page.evaluate("location.hash")
    assert anchor.startswith("#card-")
    card = page.locator(anchor)
    assert card.is_visible() and page.evaluate("document.querySelector(':target').id") == anchor[1:]
    text = card.inner_text()
    assert text.startswith("htd 0.1.0") and "checkpoint hash" in text and "distribution-htd.json" in text
    assert "paper: Semantic and Visual Crop-Guided" in text  # a registered generator: metadata from the registry


def test_csv_download_and_screenshot(page, tmp_path):
    with page.expect_download() as download:
        page.click("#csv")
    saved = tmp_path / "board.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("subject,kind,name") and len(lines) == 12
    assert_screenshot(page, tmp_path / "leaderboard.png")


def assert_screenshot(page, target: Path) -> None:
    page.screenshot(path=str(target), full_page=False)
    width, height = struct.unpack(">II", target.read_bytes()[16:24])  # PNG IHDR
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (width, height) == (1280, 900)


def test_the_committed_leaderboard_opens_filters_and_is_the_readme_screenshot(committed, tmp_path):
    from histosynth.generators.registry import builtin_generators

    committed.click("#tabs button[data-task='distribution']")
    committed.select_option("#filter-dataset", "sim-test")
    shown = set(visible_rows(committed))
    assert set(builtin_generators()) - {"harp-inpaint"} <= shown  # harp-inpaint only completes: no distribution
    committed.click("#board thead th:not([hidden]):has-text('kid (effnet-lite0)')")  # lower is better: ascending
    kid = [v for v in column_values(committed, "kid (effnet-lite0)") if v is not None]
    assert kid == sorted(kid) and len(kid) >= 9
    assert_screenshot(committed, Path(os.environ.get("HISTOSYNTH_SCREENSHOT") or tmp_path / "committed.png"))


def test_a_new_subject_is_found_by_search_and_by_the_url_fragment(page, site):
    page.fill("#search", "pix")
    assert visible_rows(page) == ["pix2pix"]
    page.fill("#search", "")
    assert len(visible_rows(page)) == 4
    page.goto(site.as_uri() + "#task=distribution&subject=htd-no-copy")
    page.reload()
    highlighted = page.eval_on_selector_all("#board tbody tr.highlight", "rs => rs.map(r => r.cells[0].textContent)")
    assert len(highlighted) == 1 and highlighted[0].startswith("htd-no-copy")
    assert page.get_attribute("#tabs button[data-task='distribution']", "aria-selected") == "true"


def test_the_committed_page_opens_on_one_dataset_with_one_row_per_generator(committed):
    dataset = committed.eval_on_selector("#filter-dataset", "s => s.value")
    assert dataset != "*"
    names = [n for n in visible_rows(committed) if n not in ("real-heldout", "copy-nearest", "simulator", "embedded")]
    assert len(names) == len(set(names))  # one row per generator on the page's first screen


def test_the_committed_page_ranks_no_reference_row_and_shows_what_each_ranked_column_resolves(committed):
    committed.click("#tabs button[data-task='*']")
    committed.select_option("#filter-dataset", "*")
    references = committed.eval_on_selector_all(
        "#board tbody tr.reference", "rs => rs.map(r => [r.cells[0].textContent, r.cells[2].textContent, "
        "Array.from(r.querySelectorAll('.rank')).map(b => b.textContent)])")
    assert {name.split(" ")[0] for name, _, _ in references} >= {"real-heldout", "copy-nearest"}
    for name, borda, badges in references:
        assert borda == "n/a" and set(badges) <= {"ref"}, (name, borda, badges)  # a line, never a rank
    heads = committed.eval_on_selector_all(
        "#board thead th[data-task]", "hs => hs.map(h => [h.dataset.power, h.dataset.detail, h.textContent])")
    aggregated = [text for power, detail, text in heads if power == "1" and detail == "0"]
    assert aggregated and all("resolves differences of" in text for text in aggregated)