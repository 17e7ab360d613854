"""Fuzz: bad `data masks` arguments (counts and sizes no machine can hold, which used to run for ever, an output
that is an existing file) and bad numeric options of `data build` (test fractions that leave a split empty, sizes,
counts, resolutions): each refused before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from fuzzkit import Case, check_case

Make = Callable[[Path, Path], list]  # (the valid dataset, a scratch folder of inputs) -> argv after the verb


def masks_case(options: Make, named: str, out_name: str = "OUT"):
    def make(tmp: Path, fx):
        scratch = tmp / "in"
        scratch.mkdir(exist_ok=True)
        (scratch / "notes.txt").write_text("a file, not a dataset")
        out = tmp / "work" / out_name
        given = options(fx, scratch)
        argv = ["data", "masks", *given, *([] if "--out" in given else ["--out", out])]
        return argv, out, [named]
    return make


def build_case(options: Make, named: str):
    def make(tmp: Path, fx):
        scratch = tmp / "in"
        scratch.mkdir(exist_ok=True)
        (scratch / "notes.txt").write_text("a file, not a dataset")
        out = tmp / "work" / "OUT"
        given = options(fx, scratch)
        argv = ["data", "build", "--source", "simulator", "--n", "2", "--size", "32", *given,
                *([] if "--out" in given else ["--out", out])]
        return argv, out, [named]
    return make


def opts(*values) -> Make:
    return lambda fx, scratch: list(values)


MASKS: dict[str, tuple[Make, str, str | None]] = {
    "size-100000": (opts("--n", "1", "--size", "100000"), "--size", "memory"),
    "size-16385": (opts("--n", "1", "--size", "16385"), "--size", None),
    "n-a-trillion": (opts("--n", "1000000000000", "--size", "32"), "--n", r"\[1, 10000000\]"),
    "n-and-size-huge": (opts("--n", "1000000000000", "--size", "100000"), "--n", None),
    "n-zero": (opts("--n", "0", "--size", "32"), "--n", r"\[1, "),
    "n-negative": (opts("--n", "-1", "--size", "32"), "--n", None),
    "n-nan": (opts("--n", "nan", "--size", "32"), "--n", None),
    "n-fraction": (opts("--n", "1.5", "--size", "32"), "--n", None),
    "n-exponent": (opts("--n", "1e3", "--size", "32"), "--n", None),
    "n-400-digits": (opts("--n", "9" * 400, "--size", "32"), "--n", None),
    "n-empty": (opts("--n", "", "--size", "32"), "--n", None),
    "size-zero": (opts("--n", "2", "--size", "0"), "--size", None),
    "size-negative": (opts("--n", "2", "--size", "-32"), "--size", None),
    "size-tiny": (opts("--n", "2", "--size", "2"), "--size", None),
    "size-nan": (opts("--n", "2", "--size", "nan"), "--size", None),
    "size-float": (opts("--n", "2", "--size", "32.0"), "--size", None),
    "size-without-n": (opts("--size", "32"), "--n", None),
    "n-without-size": (opts("--n", "2"), "--size", None),
    "size-with-dataset": (lambda fx, s: ["--dataset", fx, "--size", "32"], "--size", None),
    "dataset-missing": (lambda fx, s: ["--dataset", s / "nothing"], "nothing", "no such folder"),
    "dataset-a-file": (lambda fx, s: ["--dataset", s / "notes.txt"], "notes.txt", "not a folder"),
    "dataset-not-a-dataset": (lambda fx, s: ["--dataset", s], "README.md", "missing"),
    "dataset-split-missing": (lambda fx, s: ["--dataset", fx, "--split", "test"], "test", None),
    "version-unknown": (opts("--n", "2", "--size", "32", "--version", "v99"), "v99", None),
    "out-an-existing-file": (lambda fx, s: ["--n", "2", "--size", "32", "--out", s / "notes.txt"], "notes.txt",
                             "exists and is a file"),
    "out-an-existing-file-no-overwrite": (lambda fx, s: ["--n", "2", "--size", "32", "--no-overwrite", "--out",
                                                         s / "notes.txt"], "notes.txt", "is a file"),
    "out-under-a-file": (lambda fx, s: ["--n", "2", "--size", "32", "--out", s / "notes.txt" / "m"], "notes.txt",
                         "not a folder"),
    "out-current-folder": (opts("--n", "2", "--size", "32", "--out", "."), "--out", "current folder"),
    "out-empty": (opts("--n", "2", "--size", "32", "--out", ""), "--out", "current folder"),
    "out-name-too-long": (lambda fx, s: ["--n", "2", "--size", "32", "--out", s / ("m" * 256)], "--out", "bytes"),
    "out-existing-no-overwrite": (lambda fx, s: ["--n", "2", "--size", "32", "--no-overwrite", "--out", fx], "dataset",
                                  "already exists"),
}

BUILD: dict[str, tuple[Make, str, str | None]] = {
    "test-fraction-1e-9": (opts("--split-by", "slide", "--test-fraction", "1e-9"), "--test-fraction", r"\[0.01, 0.99\]"),
    "test-fraction-0.9999999": (opts("--split-by", "slide", "--test-fraction", "0.9999999"), "--test-fraction",
                                r"\[0.01, 0.99\]"),
    "test-fraction-0": (opts("--split-by", "slide", "--test-fraction", "0"), "--test-fraction", None),
    "test-fraction-1": (opts("--split-by", "slide", "--test-fraction", "1"), "--test-fraction", None),
    "test-fraction-nan": (opts("--split-by", "slide", "--test-fraction", "nan"), "--test-fraction", None),
    "test-fraction-negative": (opts("--split-by", "region", "--test-fraction", "-0.25"), "--test-fraction", None),
    "test-fraction-percent": (opts("--split-by", "region", "--test-fraction", "25%"), "--test-fraction", None),
    "test-fraction-without-split": (opts("--test-fraction", "0.25"), "--test-fraction", "--split-by"),
    "split-by-unknown": (opts("--split-by", "patient"), "--split-by", None),
    "region-size-zero": (opts("--split-by", "region", "--region-size", "0"), "--region-size", None),
    "split-seed-negative": (opts("--split-by", "slide", "--split-seed", "-1"), "--split-seed", None),
    "size-100000": (opts("--size", "100000"), "--size", "memory"),
    "size-zero": (opts("--size", "0"), "--size", None),
    "n-negative": (opts("--n", "-1"), "--n", None),
    "n-a-trillion": (opts("--n", "1000000000000"), "--n", None),
    "n-zero": (opts("--n", "0"), "--n 0", "at least one sample"),
    "mpp-zero": (opts("--mpp", "0"), "--mpp", None),
    "mpp-nan": (opts("--mpp", "nan"), "--mpp", None),
    "mpp-negative": (opts("--mpp", "-0.5"), "--mpp", None),
    "mpp-infinite": (opts("--mpp", "inf"), "--mpp", None),
    "seed-negative": (opts("--seed", "-3"), "--seed", None),
    "stride-zero": (opts("--stride", "0"), "--stride", None),
    "min-tissue-above-one": (opts("--min-tissue", "1.5"), "--min-tissue", None),
    "min-tissue-nan": (opts("--min-tissue", "nan"), "--min-tissue", None),
    "source-unknown": (opts("--source", "nope"), "--source", None),
    "out-an-existing-file": (lambda fx, s: ["--out", s / "notes.txt"], "notes.txt", "exists and is a file"),
    "out-under-a-file": (lambda fx, s: ["--out", s / "notes.txt" / "d"], "notes.txt", "not a folder"),
    "out-current-folder": (opts("--out", "."), "--out", "current folder"),
    "cache-an-existing-file": (lambda fx, s: ["--pseudolabel", "--cache", s / "notes.txt"], "notes.txt", "is a file"),
}

CASES = [Case(f"masks-{name}", masks_case(options, named), problem=problem) for name, (options, named, problem) in MASKS.items()]
CASES += [Case(f"build-{name}", build_case(options, named), problem=problem) for name, (options, named, problem) in BUILD.items()]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_masks_or_build_option(case, tmp_path, capsys, valid_dataset):
    check_case(case, tmp_path, capsys, valid_dataset, inputs=[valid_dataset, tmp_path / "in"])
    assert (tmp_path / "in" / "notes.txt").read_text() == "a file, not a dataset"
