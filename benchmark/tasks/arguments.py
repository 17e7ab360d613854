"""Command-line helpers the tasks share: KEY=VALUE options, FOLDER@SPLIT dataset options, the checks that refuse a
too-small set or an unwritable chart before any work, and the report every task prints."""

from __future__ import annotations

from pathlib import Path

from histosynth.benchmark.results import BenchmarkRun
from histosynth.errors import InputError


def pairs(values: list[str], option: str, form: str) -> dict[str, str]:
    """`KEY=VALUE` option values as a dict; a malformed or repeated key names the option."""
    out: dict[str, str] = {}
    for pair in values:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise InputError(f"{option} takes {form}, got {pair!r}")
        if key in out:
            raise InputError(f"{option}: {key!r} is given twice")
        out[key] = value
    return out


def dataset_spec(text: str, split: str, option: str) -> tuple[Path, str]:
    """A dataset folder and split from FOLDER or FOLDER@SPLIT."""
    folder, sep, named = text.rpartition("@")
    if not sep or "/" in named:  # an @ inside the folder path names no split
        folder, named = text, split
    if not folder or not named:
        raise InputError(f"{option} takes FOLDER or FOLDER@SPLIT, got {text!r}")
    return Path(folder), named


def comma_list(text: str, option: str) -> list[str]:
    """The non-empty items of a comma-separated option (none at all is an error naming it)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise InputError(f"--{option}: name at least one (comma-separated)")
    return items


def check_enough(path: Path, split: str, option: str, minimum: int, why: str) -> None:
    """Refuse a set with too few samples before any encoder or model is loaded, naming the folder."""
    from histosynth.disk import count_samples, read_metadata

    read_metadata(path)
    n = count_samples(path, split)
    if n < minimum:
        raise InputError(f"{option} {path}: split {split!r} holds {n} sample(s); {why}")


def chart_path(out: Path) -> Path:
    """The bar chart's path beside the results file, checked as an output before any work."""
    from histosynth.atomic import check_output

    chart = out.with_suffix(".png")
    if chart == out:
        raise InputError(f"--out {out}: the results file cannot end in .png (the chart is written beside it as "
                         f"{chart.name})")
    return check_output(chart, folder=False, what="chart")


def report(run: BenchmarkRun, out: Path, metric: str) -> None:
    """Save the run to `out`, print its table, and draw `metric` as a bar chart beside it."""
    import pandas as pd

    from histosynth.benchmark.results import plot_metric_bars, results_table

    run.save(out)
    table = results_table([run])
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.to_string(index=False))
    chart = plot_metric_bars([run], metric, out.with_suffix(".png"))
    print(f"results: {out}\nchart:   {chart}\nwall time: {run.wall_time_s:.1f} s")
