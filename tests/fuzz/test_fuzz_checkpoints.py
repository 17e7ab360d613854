"""Fuzz: damaged model folders (weights, configs, missing parts) and bad sampling options given to `generate`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from fuzzkit import TRUNCATIONS, Case, check_case, copy, cut, random_bytes

WEIGHTS = "diffusion_pytorch_model.safetensors"


def generate(tmp: Path, fx, ckpt: Path, *options) -> tuple[list, Path]:
    out = tmp / "work" / "OUT"
    return ["generate", "htd", "--checkpoint", ckpt, "--conditions", fx.dataset, "--n", "2", "--steps", "1", *options,
            "--out", out], out


def ckpt_case(change: Callable[[Path], None] | None, named: str, *options: str):
    """A copy of the tiny checkpoint changed by `change`, given to generate with `options`."""
    def make(tmp: Path, fx):
        ckpt = copy(fx.ckpt, tmp / "in" / "ckpt")
        if change is not None:
            change(ckpt)
        argv, out = generate(tmp, fx, ckpt, *options)
        return argv, out, [named]
    return make


def _json(relative: str, fn: Callable[[object], object]) -> Callable[[Path], None]:
    def change(ckpt: Path) -> None:
        path = ckpt / relative
        path.write_text(json.dumps(fn(json.loads(path.read_text()))))
    return change


def _text(relative: str, fn: Callable[[str], str]) -> Callable[[Path], None]:
    return lambda ckpt: (ckpt / relative).write_text(fn((ckpt / relative).read_text()))


def _without(key: str) -> Callable[[dict], dict]:
    return lambda config: {k: v for k, v in config.items() if k != key}


CASES: dict[str, Callable] = {}
for part in ("unet", "controlnet"):
    weights = f"{part}/{WEIGHTS}"
    for how in TRUNCATIONS:
        CASES[f"{part}-weights-truncated-{how}"] = ckpt_case((lambda w, h: lambda c: cut(c / w, h))(weights, how), weights)
    for seed, size in ((1, None), (2, 100), (3, 20)):
        CASES[f"{part}-weights-random-bytes-{seed}"] = ckpt_case((lambda w, s, n: lambda c: random_bytes(c / w, s, n))(weights, seed, size), weights)
    CASES[f"{part}-weights-missing"] = ckpt_case((lambda w: lambda c: (c / w).unlink())(weights), f"ckpt/{part}")
    CASES[f"{part}-weights-a-folder"] = ckpt_case((lambda w: lambda c: ((c / w).unlink(), (c / w).mkdir()))(weights), weights)
    CASES[f"{part}-folder-missing"] = ckpt_case((lambda p: lambda c: shutil.rmtree(c / p))(part), part)
    config = f"{part}/config.json"
    CASES[f"{part}-config-truncated"] = ckpt_case((lambda f: lambda c: cut(c / f, 0.5))(config), config)
    CASES[f"{part}-config-empty"] = ckpt_case((lambda f: lambda c: cut(c / f, 0))(config), config)
    CASES[f"{part}-config-a-list"] = ckpt_case(_json(config, lambda c: [c]), config)
    CASES[f"{part}-config-missing"] = ckpt_case((lambda f: lambda c: (c / f).unlink())(config), config)
    CASES[f"{part}-config-channels-a-string"] = ckpt_case(_json(config, lambda c: c | {"block_out_channels": "wide"}), f"ckpt/{part}")
CASES |= {
    "config-truncated": ckpt_case(lambda c: cut(c / "config.json", 0.6), "config.json"),
    "config-trailing-comma": ckpt_case(_text("config.json", lambda t: t.rstrip().rstrip("}") + ",}"), "config.json"),
    "config-random-bytes": ckpt_case(lambda c: random_bytes(c / "config.json", 4, 300), "config.json"),
    "config-a-list": ckpt_case(_json("config.json", lambda c: [1, 2]), "config.json"),
    "config-missing": ckpt_case(lambda c: (c / "config.json").unlink(), "config.json"),
    "config-no-generator": ckpt_case(_json("config.json", _without("generator")), "config.json"),
    "config-no-model": ckpt_case(_json("config.json", _without("model")), "config.json"),
    "config-other-generator": ckpt_case(_json("config.json", lambda c: c | {"generator": "unconditional"}), "unconditional"),
    "config-unknown-generator": ckpt_case(_json("config.json", lambda c: c | {"generator": "no-such-model"}), "no-such-model"),
    "config-hash-mismatch": ckpt_case(_json("config.json", lambda c: c | {"checkpoint_hash": "sha256:" + "0" * 64}), "ckpt"),
    "config-resolution-negative": ckpt_case(_json("config.json", lambda c: c | {"model": c["model"] | {"resolution": -32}}), "config.json"),
    "config-components-unknown": ckpt_case(_json("config.json", lambda c: c | {"components": ["unet", "vae"]}), "vae"),
    "checkpoint-is-a-file": ckpt_case(lambda c: (shutil.rmtree(c), c.write_text("not a model")), "ckpt"),
    "checkpoint-missing": ckpt_case(lambda c: shutil.rmtree(c), "ckpt"),
    "checkpoint-empty-folder": ckpt_case(lambda c: (shutil.rmtree(c), c.mkdir()), "ckpt"),
    "n-zero": ckpt_case(None, "n", "--n", "0"),
    "n-negative": ckpt_case(None, "n", "--n", "-3"),
    "steps-zero": ckpt_case(None, "steps", "--steps", "0"),
    "sampler-unknown": ckpt_case(None, "no-such-sampler", "--sampler", "no-such-sampler"),
    "guidance-nan": ckpt_case(None, "guidance", "--guidance", "nan"),
    "eta-infinite": ckpt_case(None, "eta", "--eta", "inf"),
    "chunk-size-zero": ckpt_case(None, "chunk", "--chunk-size", "0"),
    "batch-size-zero": ckpt_case(None, "batch", "--batch-size", "0"),
    "device-unknown": ckpt_case(None, "no-such-device", "--device", "no-such-device"),
}

PENDING: dict[str, str] = {}


def _problem(name: str) -> str | None:
    """What the message must say besides the file: damaged weights and configs are called that."""
    if "-weights-truncated-" in name or "-weights-random-bytes-" in name:
        return r"safetensors|damaged|truncated|header"
    if "config-truncated" in name or "config-empty" in name or "config-trailing-comma" in name:
        return r"JSON|config"
    return None


@pytest.mark.parametrize("case", [Case(name, make, xfail=PENDING.get(name), problem=_problem(name)).param()
                                  for name, make in CASES.items()])
def test_damaged_checkpoint(case, tmp_path, capsys, valid_dataset, tiny_checkpoint):
    from types import SimpleNamespace

    check_case(case, tmp_path, capsys, SimpleNamespace(dataset=valid_dataset, ckpt=tiny_checkpoint), inputs=[tmp_path / "in"])
