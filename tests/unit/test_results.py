import json

import pytest

from histosynth.benchmark.results import (
    BenchmarkRun,
    DataRef,
    MetricResult,
    ResultsFormatError,
    Subject,
    markdown_table,
    plot_metric_bars,
    results_table,
)


def make_run(name="htd", fd=12.5, n_fake=90, weights="sha256:cc"):
    return BenchmarkRun(
        task="distribution",
        results=[MetricResult("fd", fd, "effnet-lite0", fd - 1, fd + 1, 0.95, 100, n_fake),
                 MetricResult("kid", 0.01, "effnet-lite0")],
        data={"real": DataRef("real", "/r", "sha256:aa", 100),
              "fake": DataRef(name, f"/data/{name}", f"sha256:{name}", n_fake, "v1.0.0")},
        subjects={"fake": Subject("generator", name, f"sha256:{name}", "0.1.0", "sha256:ee")},
        encoders={"effnet-lite0": {"weights": weights, "preprocess": "resize-224"}},
        wall_time_s=3.0,
    )


def test_round_trip_and_provenance(tmp_path):
    run = make_run()
    path = run.save(tmp_path / "run.json")
    back = BenchmarkRun.load(path)
    assert back == run
    assert back.code["histosynth"] and "torch" in back.code


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("results"), "results: missing"),
    (lambda d: d["results"][0].pop("value"), r"results\[0\].value: missing"),
    (lambda d: d["results"][1].update(value="0.1"), r"results\[1\].value: expected int/float"),
    (lambda d: d["data"]["fake"].pop("content_hash"), "data.fake.content_hash: missing"),
    (lambda d: d.update(schema_version=99), "schema_version 99 is not supported"),
    (lambda d: d["results"][0].update(metric="fid"), r"results\[0\].metric: unknown metric 'fid'"),
    (lambda d: d["results"][0].update(higher_is_better=True), r"results\[0\].higher_is_better: .*contradicts"),
    (lambda d: d["data"]["fake"].update(location="/home/me/htd"), "data.fake.location: .* absolute local path"),
    (lambda d: d["subjects"]["fake"].update(kind="model"), "subjects.fake.kind: 'model' is not one of"),
    (lambda d: d["subjects"]["fake"].pop("content_hash"), "subjects.fake.content_hash: missing"),
    (lambda d: d.update(task="fd"), "task: unknown task 'fd'"),
    (lambda d: d["data"]["real"].update(n=7), "comparability_key: .* does not match"),
])
def test_schema_errors_name_the_field(tmp_path, mutate, message):
    data = make_run().to_dict()
    mutate(data)
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ResultsFormatError, match=message):
        BenchmarkRun.load(tmp_path / "bad.json")


def test_nan_values_are_refused_on_save(tmp_path):
    with pytest.raises(ValueError):
        make_run(fd=float("nan")).save(tmp_path / "x.json")
    assert not list(tmp_path.iterdir())


def test_table_and_chart(tmp_path):
    runs = [make_run("htd", 10.0), make_run("uncond", 30.0)]
    table = results_table(runs)
    assert list(table[table.metric == "fd"]["value"]) == [10.0, 30.0]
    assert table.iloc[0]["CI"] == "[9, 11]"
    markdown = markdown_table(table).splitlines()
    assert markdown[0].startswith("| data | metric | encoder | value |") and "| htd | fd | effnet-lite0 | 10 | [9, 11] |" in markdown[2]
    out = plot_metric_bars(runs, "fd", tmp_path / "fd.png")
    assert out.stat().st_size > 5000
    with pytest.raises(ValueError, match="no 'lpips' results"):
        plot_metric_bars(runs, "lpips", tmp_path / "x.png")


def test_undefined_values_are_null_only_with_a_reason(tmp_path):
    run = make_run()
    run.results.append(MetricResult("precision", None, "effnet-lite0", extra={"undefined": "all k-NN balls are empty"}))
    back = BenchmarkRun.load(run.save(tmp_path / "run.json"))
    assert back.results[-1].value is None and "empty" in back.results[-1].extra["undefined"]
    assert "undefined" in list(results_table([back])["value"])
    data = json.loads((tmp_path / "run.json").read_text())
    data["results"][-1]["extra"] = {}
    with pytest.raises(ResultsFormatError, match=r"results\[2\].value: null without extra.undefined"):
        BenchmarkRun.from_dict(data, "run.json")


def test_saved_file_has_no_local_path_and_directions_from_the_registry(tmp_path):
    text = make_run().save(tmp_path / "run.json").read_text()
    assert "/data/htd" not in text and '"location": "htd"' in text
    back = BenchmarkRun.load(tmp_path / "run.json")
    assert [r.higher_is_better for r in back.results] == [False, False]
    assert back.subjects["fake"].checkpoint_hash == "sha256:ee" and back.task_version == 1


def test_comparability_key_separates_what_cannot_share_a_table():
    base = make_run("htd").comparability_key
    assert make_run("other-generator", fd=40.0).comparability_key == base  # same task, encoder, reference, N
    assert make_run("htd", n_fake=50).comparability_key != base  # FD is biased by N
    assert make_run("htd", weights="sha256:dd").comparability_key != base  # other encoder weights


def test_v1_files_migrate(tmp_path):
    v1 = {"schema_version": 1, "task": "distribution", "results": [
              {"metric": "fd", "value": 3.0, "encoder": "effnet-lite0", "higher_is_better": None}],
          "data": {"real": {"name": "real", "path": "/abs/real", "content_hash": "sha256:aa", "n": 10},
                   "fake": {"name": "syn", "path": "/abs/syn", "content_hash": "sha256:bb", "n": 10}},
          "encoders": {"effnet-lite0": {"weights": "sha256:cc"}}}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    run = BenchmarkRun.load(tmp_path / "v1.json")
    assert run.data["fake"].location == "syn" and run.subjects["fake"].kind == "dataset"
    assert run.results[0].higher_is_better is False and run.settings["migrated_from_schema"] == 1
    assert "/abs/" not in run.save(tmp_path / "v2.json").read_text()
    v1["task"] = "fd"
    with pytest.raises(ResultsFormatError, match="v1 task 'fd' has no v2 equivalent"):
        BenchmarkRun.from_dict(v1, "old.json")


def _nuclei_run(task_version=None, pq=0.3, model="hovernet"):
    """A TSTR run as the nuclei task writes it (settings.model says which downstream model it trains)."""
    data = {"train:real": DataRef("real", "/r", "sha256:rr", 20), "test": DataRef("test", "/t", "sha256:tt", 10)}
    subjects = {"train:real": Subject("real", "real", "sha256:rr")}
    return BenchmarkRun("tstr", [MetricResult("pq", pq, subject="train:real")], data, subjects,
                        settings={"model": model, "preset": "tiny", "train": {"steps": 2}, "seeds": [0],
                                  "schema": "pannuke"}, task_version=task_version)


def test_the_nuclei_task_has_its_own_version_and_old_files_stay_apart(tmp_path):
    from histosynth.benchmark.results import MODEL_TASK_VERSIONS, TASK_VERSIONS, current_task_version
    from histosynth.leaderboard.aggregate import build_leaderboard

    new = _nuclei_run()
    assert new.task_version == MODEL_TASK_VERSIONS["hovernet"] == 2
    assert _nuclei_run(model="deeplabv3plus").task_version == TASK_VERSIONS["tstr"] == 1  # the tissue task: unchanged
    assert current_task_version("seg", {"model": "hovernet"}) == 2 and current_task_version("distribution") == 1
    old = BenchmarkRun.load(_nuclei_run(task_version=1, pq=0.06).save(tmp_path / "old.json"))  # a v1 file
    assert old.task_version == 1 and old.comparability()["task_version"] == 1
    assert old.comparability_key != new.comparability_key  # otherwise identical: only the version differs
    board = build_leaderboard([("old.json", old), ("new.json", new)])
    pq_columns = sorted((c.task_version, c.comparability_key) for c in board.columns if c.metric == "pq")
    assert [v for v, _ in pq_columns] == [1, 2]  # two columns, never one merged column


def test_committed_nuclei_results_of_version_one_still_load():
    from pathlib import Path

    from histosynth.benchmark.results import current_task_version

    files = sorted((Path(__file__).resolve().parents[2] / "results").glob("*/*/tstr-nuclei.json"))
    assert files
    for path in files:
        run = BenchmarkRun.load(path)  # the stored comparability key still matches
        assert run.task_version in (1, current_task_version("tstr", run.settings)) and run.settings["model"] == "hovernet"


def test_the_thread_count_of_a_trained_model_is_comparable_and_older_files_keep_their_key():
    from histosynth.benchmark.results import BenchmarkRun, DataRef, MetricResult

    def run(settings):
        return BenchmarkRun("label-consistency", [MetricResult("label_consistency_miou", 0.5)],
                            {"real": DataRef("train", content_hash="sha256:a", n=8)},
                            settings={"resolution": 64, "steps": 10, "seed": 0, "schema": "s", "segmenter": "x",
                                      **settings})

    older, one, two = run({}), run({"threads": 1}), run({"threads": 2})
    assert len({older.comparability_key, one.comparability_key, two.comparability_key}) == 3
    assert "threads" not in older.comparability()["settings"]
    assert one.comparability()["settings"]["threads"] == 1
