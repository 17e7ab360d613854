"""Fuzz: bad options and inputs of `bench seg`, `bench tstr` and `bench complete`: each refused before any model
is trained or any patch scored (a learning rate of NaN, a device this machine lacks, a crop larger than the patches,
a limit of 0, an output path that is a folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from fuzzkit import Case, check_case


def missing_cuda() -> str:
    """A CUDA device this machine does not have: plain `cuda` without a GPU, else one index past the last GPU."""
    import torch

    return f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"


Options = Callable[[Path, Path], list]  # (the valid dataset, a scratch folder of inputs) -> options


def seg_case(options: Options, named: str, out_name: str = "OUT.json"):
    def make(tmp: Path, fx):
        scratch = tmp / "in"
        scratch.mkdir(exist_ok=True)
        (scratch / "notes.txt").write_text("a file")
        out = tmp / "work" / out_name
        argv = ["bench", "seg", "--train", fx, "--test", f"{fx}@train", "--seeds", "1", "--steps", "1",
                *options(fx, scratch), "--out", out]
        return argv, out, [named]
    return make


def tstr_case(options: Options, named: str):
    def make(tmp: Path, fx):
        scratch = tmp / "in"
        scratch.mkdir(exist_ok=True)
        out = tmp / "work" / "OUT.json"
        argv = ["bench", "tstr", "--real-train", fx, "--test", f"{fx}@train", "--seeds", "1", "--steps", "1",
                *options(fx, scratch), "--out", out]
        return argv, out, [named]
    return make


def complete_case(options: Options, named: str):
    def make(tmp: Path, fx):
        scratch = tmp / "in"
        scratch.mkdir(exist_ok=True)
        (scratch / "notes.txt").write_text("a file")
        out = tmp / "work" / "OUT.json"
        given = options(fx, scratch)
        argv = ["bench", "complete", "--real", fx, "--completed", fx, "--bootstrap", "0", *given,
                *([] if "--out" in given else ["--out", out])]
        return argv, out, [named]
    return make


def opts(*values) -> Options:
    return lambda fx, scratch: list(values)


SEG: dict[str, tuple[Options, str, str | None]] = {
    "lr-nan": (opts("--lr", "nan"), "--lr", "finite number > 0"),
    "lr-negative": (opts("--lr", "-1"), "--lr", "> 0"),
    "lr-zero": (opts("--lr", "0"), "--lr", "> 0"),
    "lr-infinite": (opts("--lr", "inf"), "--lr", "finite"),
    "lr-overflow": (opts("--lr", "1e400"), "--lr", "finite"),
    "lr-text": (opts("--lr", "fast"), "--lr", None),
    "device-cuda-not-here": (lambda fx, s: ["--device", missing_cuda()], "--device", "CUDA"),
    "device-cuda-negative-index": (opts("--device", "cuda:-1"), "--device", None),
    "device-unknown": (opts("--device", "tpu"), "--device", None),
    "device-empty": (opts("--device", ""), "--device", None),
    "device-mps": (opts("--device", "mps"), "--device", "MPS"),
    "device-meta": (opts("--device", "meta"), "--device", "not supported"),
    "crop-4096-on-32-px": (opts("--crop", "4096"), "--crop 4096", "larger than the 32 px patches"),
    "crop-48-on-32-px": (opts("--crop", "48"), "--crop 48", "larger than the 32 px patches"),
    "crop-zero": (opts("--crop", "0"), "--crop", None),
    "crop-negative": (opts("--crop", "-16"), "--crop", None),
    "crop-nan": (opts("--crop", "nan"), "--crop", None),
    "crop-absurd": (opts("--crop", "10000000"), "--crop", "memory"),
    "seeds-zero": (opts("--seeds", "0"), "--seeds", None),
    "seeds-negative": (opts("--seeds", "-1"), "--seeds", None),
    "seeds-absurd": (opts("--seeds", "100000"), "--seeds", None),
    "seed-negative": (opts("--seed", "-1"), "--seed", None),
    "seed-huge": (opts("--seed", "9" * 400), "--seed", None),
    "steps-zero": (opts("--steps", "0"), "--steps", None),
    "steps-exponent": (opts("--steps", "1e3"), "--steps", None),
    "batch-size-zero": (opts("--batch-size", "0"), "--batch-size", None),
    "checkpoint-every-zero": (opts("--checkpoint-every", "0"), "--checkpoint-every", None),
    "threads-zero": (opts("--threads", "0"), "--threads", None),
    "threads-absurd": (opts("--threads", "100000"), "--threads", None),
    "model-unknown": (opts("--model", "unet"), "--model", None),
    "preset-unknown": (opts("--preset", "huge"), "--preset", None),
    "weights-missing": (lambda fx, s: ["--weights", s / "nothing.pth"], "nothing.pth", "no such file"),
    "weights-a-folder": (lambda fx, s: ["--weights", s], "in", "not a regular file"),
    "checkpoints-a-file": (lambda fx, s: ["--checkpoints", s / "notes.txt"], "notes.txt", "file"),
    "map-without-equals": (opts("--map", "stroma"), "--map", None),
    "test-missing": (lambda fx, s: ["--test", s / "nothing"], "nothing", None),
    "test-split-missing": (lambda fx, s: ["--test", f"{fx}@test"], "test", None),
    "test-empty-split-name": (lambda fx, s: ["--test", f"{fx}@"], "--test", None),
}


def _seg_with(change: Callable[[list], list], named: str, problem: str | None = None):
    """A seg case whose whole argv is changed (train or out arguments)."""
    def make(tmp: Path, fx):
        argv, out, names = seg_case(opts(), named)(tmp, fx)
        return change(argv), out, names
    return make


def _replace(argv: list, flag: str, value) -> list:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


SEG_ARGV = {
    "train-missing": (lambda a: _replace(a, "--train", Path(a[a.index("--out") + 1]).parent.parent / "in" / "nothing"),
                      "nothing", None),
    "train-a-file": (lambda a: _replace(a, "--train", Path(a[a.index("--out") + 1]).parent.parent / "in" / "notes.txt"),
                     "notes.txt", None),
    "out-an-existing-folder": (lambda a: _replace(a, "--out", Path(a[a.index("--out") + 1]).parent.parent / "in"),
                               "in", "is a folder"),
    "out-current-folder": (lambda a: _replace(a, "--out", "."), "--out", "current folder"),
    "out-under-a-file": (lambda a: _replace(a, "--out", Path(a[a.index("--out") + 1]).parent.parent / "in" /
                                            "notes.txt" / "r.json"), "notes.txt", "not a folder"),
    "out-name-too-long": (lambda a: _replace(a, "--out", Path(a[a.index("--out") + 1]).parent / ("r" * 300 + ".json")),
                          "--out", "bytes"),
}

TSTR: dict[str, tuple[Options, str, str | None]] = {
    "train-without-name": (lambda fx, s: ["--train", str(fx)], "--train", "NAME=FOLDER"),
    "train-named-real": (lambda fx, s: ["--train", f"real={fx}"], "real", None),
    "train-twice": (lambda fx, s: ["--train", f"a={fx}", "--train", f"a={fx}"], "--train", "twice"),
    "train-missing-folder": (lambda fx, s: ["--train", f"a={s / 'nothing'}"], "nothing", None),
    "train-empty-name": (lambda fx, s: ["--train", f"={fx}"], "--train", None),
    "lr-nan": (lambda fx, s: ["--train", f"a={fx}", "--lr", "nan"], "--lr", "finite"),
    "device-cuda-not-here": (lambda fx, s: ["--train", f"a={fx}", "--device", missing_cuda()], "--device", "CUDA"),
    "crop-4096-on-32-px": (lambda fx, s: ["--train", f"a={fx}", "--crop", "4096"], "--crop 4096", "larger than"),
    "real-train-missing": (lambda fx, s: ["--train", f"a={fx}", "--real-train", s / "nothing"], "nothing", None),
    "seeds-zero": (lambda fx, s: ["--train", f"a={fx}", "--seeds", "0"], "--seeds", None),
}

COMPLETE: dict[str, tuple[Options, str, str | None]] = {
    "limit-zero": (opts("--limit", "0"), "--limit", r"\[1, "),
    "limit-negative": (opts("--limit", "-1"), "--limit", r"\[1, "),
    "limit-text": (opts("--limit", "all"), "--limit", None),
    "limit-fraction": (opts("--limit", "1.5"), "--limit", None),
    "limit-absurd": (opts("--limit", "1000000000000"), "--limit", None),
    "bootstrap-one": (opts("--bootstrap", "1"), "--bootstrap", "0 .no interval."),
    "bootstrap-negative": (opts("--bootstrap", "-1"), "--bootstrap", None),
    "batch-size-zero": (opts("--batch-size", "0"), "--batch-size", None),
    "device-cuda-not-here": (lambda fx, s: ["--device", missing_cuda()], "--device", "CUDA"),
    "seed-negative": (opts("--seed", "-1"), "--seed", None),
    "modes-unknown": (opts("--modes", "pixel"), "pixel", None),
    "modes-empty": (opts("--modes", ","), "--modes", None),
    "net-unknown": (opts("--net", "resnet"), "--net", None),
    "backbone-missing": (lambda fx, s: ["--backbone", s / "alex.pth"], "alex.pth", "no such file"),
    "completed-missing": (lambda fx, s: ["--completed", s / "nothing"], "nothing", "no such folder"),
    "completed-a-file": (lambda fx, s: ["--completed", s / "notes.txt"], "notes.txt", "not a folder"),
    "real-not-a-dataset": (lambda fx, s: ["--real", s], "README.md", "missing"),
    "split-missing": (opts("--split", "test"), "test", None),
    "out-an-existing-folder": (lambda fx, s: ["--out", s], "in", "is a folder"),
    "out-a-png": (lambda fx, s: ["--out", s / "r.png"], "r.png", r"\.png"),
    "chart-path-a-folder": (lambda fx, s: (Path(s / "r.png").mkdir(), ["--out", s / "r.json"])[1], "r.png", "is a folder"),
}

CASES = [Case(f"seg-{name}", seg_case(options, named), problem=problem) for name, (options, named, problem) in SEG.items()]
CASES += [Case(f"seg-{name}", _seg_with(change, named), problem=problem) for name, (change, named, problem) in SEG_ARGV.items()]
CASES += [Case(f"tstr-{name}", tstr_case(options, named), problem=problem) for name, (options, named, problem) in TSTR.items()]
CASES += [Case(f"complete-{name}", complete_case(options, named), problem=problem)
          for name, (options, named, problem) in COMPLETE.items()]


@pytest.mark.parametrize("case", [c.param() for c in CASES])
def test_bad_downstream_input(case, tmp_path, capsys, valid_dataset):
    check_case(case, tmp_path, capsys, valid_dataset, inputs=[valid_dataset, tmp_path / "in"])
