import json

import pytest

from histosynth.benchmark.results import (
    BenchmarkRun,
    DataRef,
    MetricResult,
    ResultsFormatError,
    markdown_table,
    plot_metric_bars,
    results_table,
)


def make_run(name="htd", fd=12.5):
    return BenchmarkRun(
        task="fd",
        results=[MetricResult("fd", fd, "effnet-lite0", fd - 1, fd + 1, 0.95, 100, 90), MetricResult("kid", 0.01, "effnet-lite0")],
        data={"real": DataRef("real", "/r", "sha256:aa", 100), "fake": DataRef(name, "/f", "sha256:bb", 90, "v1.0.0")},
        encoders={"effnet-lite0": {"weights": "sha256:cc"}},
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
