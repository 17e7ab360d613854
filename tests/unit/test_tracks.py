"""Named benchmark tracks (histosynth.leaderboard.tracks): built once with their data's bytes checked, scored against
by name with the track's threads and its reference cache, so a submission's results restate no real-data row and
the real rows are never recomputed."""

import json
import shutil

import pytest
from plugin_paths import PLUGINS
from sandbox_required import sandbox  # noqa: F401 (fixture)

from histosynth.benchmark.suite import variant
from histosynth.cli import main
from histosynth.errors import InputError, MissingInputError
from histosynth.leaderboard.scoring import score_submission
from histosynth.leaderboard.submission import load_submission
from histosynth.leaderboard.tracks import TRACKS, build_track, check_hashes, get_track, open_track
from histosynth.recipes.kinds import handlers
from histosynth.recipes.runner import run_recipe
from histosynth.recipes.spec import load_recipe


@pytest.fixture(scope="module")
def tiny_track(tmp_path_factory):
    track = get_track("sim-v1", "tiny")
    folder = tmp_path_factory.mktemp("track")
    build_track(track, folder, handlers(), log=lambda _: None)
    return track, folder


def test_the_recorded_sim_v1_data_is_what_its_recipe_makes(tmp_path):
    track = TRACKS.get("sim-v1")
    recipe = load_recipe(track.recipe_path, track.scale, {})
    run_recipe(recipe, tmp_path, handlers(), until="source-conditions", log=lambda _: None)
    assert check_hashes(track, tmp_path) == dict(track.hashes)


def test_a_built_track_records_its_bytes_and_refuses_other_ones(tiny_track, tmp_path, capsys):
    track, folder = tiny_track
    recorded = json.loads((folder / "hashes.json").read_text())
    assert set(recorded) == {"train", "test", "conditions"}
    built = open_track(track, folder)
    assert built.train.is_dir() and (built.references / "real-heldout").is_dir() and built.reference_cache.is_dir()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = next((copy / track.sets["test"] / "data").glob("*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"\0")
    with pytest.raises(InputError, match=r"the data is not the track's \(test: "):
        open_track(track, copy)
    with pytest.raises(MissingInputError, match="histosynth bench track build sim-v1"):
        open_track(track, tmp_path / "nowhere")
    capsys.readouterr()
    assert main(["bench", "track", "ls"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("sim-v1", "embedded-v1", "camelyon16-v1", "panda-v1")), listed
    with pytest.raises(InputError, match="--input camelyon16=PATH"):
        build_track(TRACKS.get("camelyon16-v1"), tmp_path / "c16", handlers())


@pytest.mark.usefixtures("sandbox")
def test_a_submission_on_a_track_reuses_its_real_rows_and_restates_none(tiny_track, tmp_path):
    track, folder = tiny_track
    built = open_track(track, folder)
    cached = sorted(p.relative_to(built.reference_cache) for p in built.reference_cache.rglob("*") if p.is_file())
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"generator": "evil"}))
    honest = {"generator": "evil", "generator_version": "0.0.1", "checkpoint_hash": "sha256:" + "ab" * 32}
    (model / "attack.json").write_text(json.dumps({"kind": "rows", "provenance": honest}))
    (tmp_path / "s.yaml").write_text(f"kind: generator\ngenerator: evil\ncheckpoint: model\n"
                                     f"plugin: {PLUGINS / 'evil_dist'}\ntitle: Evil Painter (2026)\n"
                                     "citation: '@article{evil2026, title = {Evil}, author = {Doe, J.}, year = {2026}}'\n")
    from histosynth.benchmark.suite import References

    refs = References(built.train, built.test, built.conditions)
    results = tmp_path / "results"
    shutil.copytree(built.references, results)
    report = score_submission(load_submission(tmp_path / "s.yaml"), refs, variant(track.variant), results,
                              tmp_path / "work", threads=track.threads, reference_cache=built.reference_cache,
                              keep_work=True, log=lambda _: None)
    assert report.ok, report.summary()
    in_sandbox = tmp_path / "work" / "suite" / "home" / "cache" / "references"
    assert sorted(p.relative_to(in_sandbox) for p in in_sandbox.rglob("*") if p.is_file()) == cached  # nothing new
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.leaderboard.aggregate import load_leaderboard

    for path in (results / report.subject).glob("*.json"):
        run = BenchmarkRun.load(path)
        assert {r.subject or "fake" for r in run.results} <= {"fake", "train:synthetic"}
        assert run.settings.get("threads") in (None, 1)
    board = load_leaderboard(results)  # beside the reference rows, in the same columns, without a conflict
    evil = next(r for r in board.rows if r.name == "evil")
    ref = next(r for r in board.rows if r.name == "real-heldout")
    shared = [c for c in board.columns if board.cell(evil, c) is not None and board.cell(ref, c) is not None]
    assert {c.task for c in shared} >= {"distribution", "label-consistency"}
    from histosynth.leaderboard.page import render_page
    from histosynth.leaderboard.tables import render_table, table_columns

    assert evil.label.startswith("Evil Painter (2026) (")  # the submission's title, with the scorer's hash
    table = render_table(board, table_columns(board, tasks=["distribution"]), "markdown")
    assert "Evil Painter (2026)" in table and "[evil2026]" in table and "author = {Doe, J.}" in table
    assert "Evil Painter (2026)" in render_page(board) and "@article{evil2026" in render_page(board)
