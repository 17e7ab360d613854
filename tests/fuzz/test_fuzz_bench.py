"""Fuzz: bad benchmark inputs (missing, empty, damaged or degenerate sets; bad encoders, metrics, weights and
options) given to `bench fd` and `bench lpips-masked`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pytest
from fuzzkit import Case, check_case, copy, cut, random_bytes

from histosynth.data_cards.card import CardInfo
from histosynth.disk import write_dataset
from histosynth.schema import Provenance, Sample
from histosynth.sources import build_source


def constant_set(path: Path, value: int, n: int = 8, size: int = 32) -> Path:
    """`n` identical patches of one gray value: features with zero variance."""
    image = np.full((size, size, 3), value, np.uint8)
    write_dataset([Sample(image=image.copy(), provenance=Provenance("test", f"s{i}")) for i in range(n)], path, CardInfo("c", "c"))
    return path


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bench-sets")
    write_dataset(build_source("simulator", n=4, size=32, seed=1), root / "a", CardInfo("a", "a"))
    write_dataset(build_source("simulator", n=4, size=32, seed=2), root / "b", CardInfo("b", "b"))
    write_dataset([], root / "empty", CardInfo("e", "e"))
    write_dataset(build_source("simulator", n=1, size=32, seed=3), root / "one", CardInfo("o", "o"))
    constant_set(root / "zeros", 0)
    constant_set(root / "zeros2", 0)
    write_dataset(build_source("simulator", n=8, size=32, seed=4), root / "eight", CardInfo("8", "8"))
    rng = np.random.default_rng(5)
    masked = [replace(s, completion_mask=rng.random((32, 32)) > 0.5) for s in build_source("simulator", n=2, size=32, seed=1)]
    write_dataset(masked, root / "masked", CardInfo("m", "m"))
    return SimpleNamespace(root=root, **{p.name: p for p in root.iterdir()})


def fd_case(real: Callable[[Path, SimpleNamespace], Path], fake: Callable[[Path, SimpleNamespace], Path], named: str, *options: str):
    def make(tmp: Path, fx):
        out = tmp / "work" / "OUT.json"
        metrics = [] if "--metrics" in options else ["--metrics", "fd"]  # PRDC needs more samples than these sets hold
        argv = ["bench", "fd", "--real", real(tmp, fx), "--fake", fake(tmp, fx), "--bootstrap", "0", *metrics, *options, "--out", out]
        return argv, out, [named]
    return make


def valid(name: str) -> Callable[[Path, SimpleNamespace], Path]:
    return lambda tmp, fx: getattr(fx, name)


def damaged(change: Callable[[Path], object]) -> Callable[[Path, SimpleNamespace], Path]:
    def make(tmp: Path, fx) -> Path:
        path = copy(fx.b, tmp / "in" / "fake")
        change(path)
        return path
    return make


SHARD = "data/train-00000-of-00001.parquet"


def weights_file(content: Callable[[Path], object]) -> Callable[[Path, SimpleNamespace], Path]:
    def make(tmp: Path, fx) -> Path:
        path = tmp / "in" / "weights.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        content(path)
        return path
    return make


CASES: dict[str, Callable] = {
    "fake-missing": fd_case(valid("a"), lambda t, fx: t / "in" / "nothing", "nothing"),
    "fake-a-file": fd_case(valid("a"), lambda t, fx: (t / "in").mkdir() or (t / "in" / "f.txt").write_text("x") and t / "in" / "f.txt", "f.txt"),
    "fake-empty-folder": fd_case(valid("a"), lambda t, fx: (t / "in" / "fake").mkdir(parents=True) or t / "in" / "fake", "fake"),
    "fake-no-card": fd_case(valid("a"), damaged(lambda p: (p / "README.md").unlink()), "README.md"),
    "fake-bad-yaml": fd_case(valid("a"), damaged(lambda p: (p / "README.md").write_text("---\nlicense: [x\n---\n")), "README.md"),
    "fake-shard-truncated": fd_case(valid("a"), damaged(lambda p: cut(p / SHARD, 0.5)), "train-00000-of-00001.parquet"),
    "fake-shard-random-bytes": fd_case(valid("a"), damaged(lambda p: random_bytes(p / SHARD, 21)), "train-00000-of-00001.parquet"),
    "fake-no-shards": fd_case(valid("a"), damaged(lambda p: (p / SHARD).unlink()), "fake"),
    "real-empty-set": fd_case(valid("empty"), valid("b"), "empty"),
    "fake-empty-set": fd_case(valid("a"), valid("empty"), "empty"),
    "both-empty": fd_case(valid("empty"), valid("empty"), "empty"),
    "fake-one-sample": fd_case(valid("a"), valid("one"), "one"),
    "split-missing": fd_case(valid("a"), valid("b"), "test", "--split", "test"),
    "train-set-missing": fd_case(valid("a"), valid("b"), "nothing", "--train", "/nonexistent/nothing"),
    "encoder-unknown": fd_case(valid("a"), valid("b"), "no-such-encoder", "--encoders", "no-such-encoder"),
    "encoder-typo": fd_case(valid("a"), valid("b"), "incepton", "--encoders", "incepton"),
    "encoders-empty": fd_case(valid("a"), valid("b"), "encoder", "--encoders", ","),
    "encoder-gated-without-weights": fd_case(valid("a"), valid("b"), "uni", "--encoders", "uni"),
    "metric-unknown": fd_case(valid("a"), valid("b"), "is", "--metrics", "fd,is"),
    "metrics-empty": fd_case(valid("a"), valid("b"), "metric", "--metrics", ","),
    "bootstrap-negative": fd_case(valid("a"), valid("b"), "bootstrap", "--bootstrap", "-5"),
    "batch-size-zero": fd_case(valid("a"), valid("b"), "batch", "--batch-size", "0"),
    "weights-no-equals": fd_case(valid("a"), valid("b"), "effnet-lite0", "--weights", "effnet-lite0"),
    "weights-unknown-encoder": fd_case(valid("a"), valid("b"), "nope", "--weights", "nope=/tmp/x"),
    "weights-missing-file": fd_case(valid("a"), valid("b"), "missing.safetensors", "--weights",
                                    "effnet-lite0=/nonexistent/missing.safetensors"),
    "device-unknown": fd_case(valid("a"), valid("b"), "no-such-device", "--device", "no-such-device"),
}


def _weights_case(content: Callable[[Path], object]):
    def make(tmp: Path, fx):
        path = weights_file(content)(tmp, fx)
        out = tmp / "work" / "OUT.json"
        argv = ["bench", "fd", "--real", fx.a, "--fake", fx.b, "--bootstrap", "0", "--weights", f"effnet-lite0={path}", "--out", out]
        return argv, out, ["weights.safetensors"]
    return make


CASES |= {
    "weights-random-bytes": _weights_case(lambda p: random_bytes(p, 22, 4096)),
    "weights-empty-file": _weights_case(lambda p: p.write_bytes(b"")),
    "weights-a-text-file": _weights_case(lambda p: p.write_text("these are not weights")),
}


def lpips_case(real: Callable, fake: Callable, named: str, *options: str):
    def make(tmp: Path, fx):
        out = tmp / "work" / "OUT.json"
        return ["bench", "lpips-masked", "--real", real(tmp, fx), "--fake", fake(tmp, fx), *options, "--out", out], out, [named]
    return make


CASES |= {
    "lpips-no-completion-masks": lpips_case(valid("a"), valid("b"), "completion"),
    "lpips-fake-missing": lpips_case(valid("a"), lambda t, fx: t / "in" / "nothing", "nothing"),
    "lpips-empty-sets": lpips_case(valid("empty"), valid("empty"), "empty"),
    "lpips-mode-unknown": lpips_case(valid("masked"), valid("masked"), "no-such-mode", "--modes", "no-such-mode"),
    "lpips-modes-empty": lpips_case(valid("masked"), valid("masked"), "modes", "--modes", ","),
    "lpips-backbone-missing": lpips_case(valid("masked"), valid("masked"), "alex.pth", "--backbone", "/nonexistent/alex.pth"),
    "lpips-batch-size-zero": lpips_case(valid("masked"), valid("masked"), "batch", "--batch-size", "0"),
    "lpips-fewer-fake-rows": lpips_case(valid("masked"), valid("one"), "one"),
}

PENDING: dict[str, str] = {
}


@pytest.mark.parametrize("case", [Case(name, make, xfail=PENDING.get(name)).param() for name, make in CASES.items()])
def test_bad_bench_input(case, tmp_path, capsys, sets):
    check_case(case, tmp_path, capsys, sets, inputs=[sets.root, tmp_path / "in"])
    assert not (tmp_path / "work" / "OUT.png").exists()


@pytest.mark.filterwarnings("ignore::histosynth.benchmark.errors.SmallSampleWarning")
@pytest.mark.parametrize("real,fake", [("zeros", "zeros2"), ("eight", "zeros")], ids=["identical-all-zero-sets", "constant-fake-set"])
def test_degenerate_sets_warn_and_leave_prdc_undefined(real, fake, sets, tmp_path, capsys):
    """Zero-variance features are not an input error but must say so: a warning naming the
    constant set, and PRDC recorded as undefined (null), never as 0.0."""
    from histosynth.benchmark.errors import DegenerateFeaturesWarning
    from histosynth.benchmark.results import BenchmarkRun
    from histosynth.cli import main

    out = tmp_path / "run.json"
    with pytest.warns(DegenerateFeaturesWarning) as caught:
        code = main(["bench", "fd", "--real", str(getattr(sets, real)), "--fake", str(getattr(sets, fake)), "--bootstrap", "0",
                     "--metrics", "fd,prdc", "--out", str(out)])
    assert code == 0 and str(sets.zeros) in " ".join(str(w.message) for w in caught)
    prdc = [r for r in BenchmarkRun.load(out).results if r.metric in ("precision", "recall", "density", "coverage")]
    assert len(prdc) == 4 and all(r.value is None for r in prdc)
