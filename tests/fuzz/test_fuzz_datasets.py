"""Fuzz: malformed dataset folders (shards, rows, cards) given to every verb that reads a dataset."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzzkit import TRUNCATIONS, Case, check_case, copy, cut, random_bytes
from PIL import Image

SHARD = "train-00000-of-00001.parquet"


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _rewrite(shard: Path, change: Callable[[list[dict]], None], keep_schema: bool = True) -> None:
    """Rewrite the shard's rows after `change(rows)` (rows as Python dicts)."""
    table = pq.read_table(shard)
    rows = table.to_pylist()
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema) if keep_schema else pa.Table.from_pylist(rows), shard)


def _set(column: str, value) -> Callable[[list[dict]], None]:
    def change(rows: list[dict]) -> None:
        rows[1][column] = value(rows[1]) if callable(value) else value
    return change


def _nucleus(**fields) -> Callable[[list[dict]], None]:
    def change(rows: list[dict]) -> None:
        row = next(r for r in rows[1:] if r["nuclei"])
        row["nuclei"][0].update(fields)
    return change


def _drop_column(name: str) -> Callable[[Path], None]:
    def mutate(shard: Path) -> None:
        table = pq.read_table(shard)
        pq.write_table(table.drop_columns([name]), shard)
    return mutate


def _retype_column(name: str, values: list) -> Callable[[Path], None]:
    def mutate(shard: Path) -> None:
        table = pq.read_table(shard)
        index = table.schema.get_field_index(name)
        pq.write_table(table.set_column(index, name, pa.array(values[: table.num_rows])), shard)
    return mutate


rng = np.random.default_rng(11)
ROW_CHANGES: dict[str, Callable[[list[dict]], None]] = {
    "image-random-bytes": _set("image", {"bytes": rng.integers(0, 256, 300, dtype=np.uint8).tobytes(), "path": None}),
    "image-truncated-png": _set("image", lambda r: {"bytes": r["image"]["bytes"][:60], "path": None}),
    "image-empty-bytes": _set("image", {"bytes": b"", "path": None}),
    "image-rgba": _set("image", {"bytes": _png(np.zeros((32, 32, 4), np.uint8)), "path": None}),
    "image-16bit": _set("image", {"bytes": _png(np.zeros((32, 32), np.uint16)), "path": None}),
    "image-null": _set("image", None),
    "image-missing-path": _set("image", {"bytes": None, "path": "/nonexistent/patch.png"}),
    "tissue-wrong-size": _set("tissue", {"bytes": _png(np.ones((16, 32), np.uint8)), "path": None}),
    "tissue-unknown-ids": _set("tissue", {"bytes": _png(np.full((32, 32), 200, np.uint8)), "path": None}),
    "tissue-rgb": _set("tissue", {"bytes": _png(np.ones((32, 32, 3), np.uint8)), "path": None}),
    "tissue-without-schema": _set("tissue_schema", None),
    "tissue-schema-unknown": _set("tissue_schema", "no-such-schema"),
    "nuclei-class-out-of-schema": _nucleus(class_id=99),
    "nuclei-class-negative": _nucleus(class_id=-3),
    "nuclei-centroid-outside": _nucleus(x=500.0),
    "nuclei-centroid-nan": _nucleus(y=float("nan")),
    "nuclei-instances-garbage": _set("nuclei_instances", {"bytes": b"\x89PNG\r\n\x1a\nnot really", "path": None}),
    "nuclei-instances-wrong-count": _set("nuclei_instances", {"bytes": _png(np.zeros((32, 32), np.uint16)), "path": None}),
    "nuclei-schema-unknown": _set("nuclei_schema", "no-such-schema"),
    "nuclei-schema-tissue-kind": _set("nuclei_schema", "camelyon16"),
    "completion-mask-wrong-size": _set("completion_mask", {"bytes": _png(np.zeros((8, 8), np.uint8)), "path": None}),
}

SHARD_BYTES: dict[str, Callable[[Path], None]] = {
    **{f"shard-truncated-{how}": functools.partial(cut, how=how) for how in TRUNCATIONS},
    **{f"shard-random-bytes-{seed}": functools.partial(random_bytes, seed=seed, size=size) for seed, size in
       ((1, None), (2, 100), (3, 5000))},
}
SHARD_COLUMNS: dict[str, Callable[[Path], None]] = {
    "shard-unrelated-table": lambda p: pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), p),
    "shard-drop-image": _drop_column("image"),
    "shard-drop-tissue": _drop_column("tissue"),
    "shard-drop-nuclei": _drop_column("nuclei"),
    "shard-drop-source": _drop_column("source"),
    "shard-image-as-strings": _retype_column("image", ["not an image"] * 8),
    "shard-nuclei-as-ints": _retype_column("nuclei", list(range(8))),
    "shard-tissue-as-floats": _retype_column("tissue", [0.5] * 8),
}


def _readme_change(text: Callable[[str], str | bytes]) -> Callable[[Path], None]:
    def mutate(dataset: Path) -> None:
        readme = dataset / "README.md"
        new = text(readme.read_text(encoding="utf-8"))
        readme.write_bytes(new if isinstance(new, bytes) else new.encode("utf-8"))
    return mutate


CARD_CHANGES: dict[str, Callable[[Path], None]] = {
    "card-empty": _readme_change(lambda t: ""),
    "card-no-front-matter": _readme_change(lambda t: "# a dataset\n\nno metadata here\n"),
    "card-unterminated-front-matter": _readme_change(lambda t: t.replace("\n---", "\n", 1)),
    "card-yaml-unclosed-bracket": _readme_change(lambda t: t.replace("license: cc0-1.0", "license: [cc0-1.0", 1)),
    "card-yaml-tab-indent": _readme_change(lambda t: t.replace("  format_version: 1", "\tformat_version: 1", 1)),
    "card-yaml-bad-mapping": _readme_change(lambda t: t.replace("size_categories: n<1K", "size_categories: n<1K: x: y", 1)),
    "card-yaml-a-list": _readme_change(lambda t: "---\n- just\n- a list\n---\n"),
    "card-no-histosynth-block": _readme_change(lambda t: t.replace("histosynth:\n", "other:\n", 1)),
    "card-not-utf8": _readme_change(lambda t: b"---\nlicense: \xff\xfe\x00bad\n---\n"),
}

FOLDER_CHANGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "folder-no-readme": (lambda d: (d / "README.md").unlink(), "README.md"),
    "folder-readme-is-a-folder": (lambda d: ((d / "README.md").unlink(), (d / "README.md").mkdir()), "README.md"),
    "folder-no-data": (lambda d: [p.unlink() for p in (d / "data").iterdir()], "dataset"),
    "folder-shard-is-a-folder": (lambda d: ((d / "data" / SHARD).unlink(), (d / "data" / SHARD).mkdir()), SHARD),
    "folder-missing-shard-of-two": (lambda d: (d / "data" / SHARD).rename(d / "data" / "train-00000-of-00002.parquet"), "dataset"),
}


def dataset_mutations() -> list[tuple[str, Callable[[Path], None], str, str]]:
    """(name, mutate(dataset folder), what the error must name, kind: rows, columns, bytes, card or folder)."""
    cases = [(name, (lambda c: lambda d: _rewrite(d / "data" / SHARD, c))(change), SHARD, "rows")
             for name, change in ROW_CHANGES.items()]
    for kind, changes in (("columns", SHARD_COLUMNS), ("bytes", SHARD_BYTES)):
        cases += [(name, (lambda c: lambda d: c(d / "data" / SHARD))(change), SHARD, kind) for name, change in changes.items()]
    cases += [(name, change, "README.md", "card") for name, change in CARD_CHANGES.items()]
    cases += [(name, change, named, "folder") for name, (change, named) in FOLDER_CHANGES.items()]
    return cases


PROBLEMS = {  # what the message must also say, by kind of damage
    "bytes": r"parquet|unreadable",
    "card": r"YAML|front matter|UTF-8|histosynth",
    "columns": r"column|decode|expected|not a list",
}


def _verbs(tmp: Path, data: Path, ckpt: Path | None) -> dict[str, tuple[list, Path]]:
    out = tmp / "work" / "OUT"
    return {
        "show": (["data", "show", data, "--out", out.with_suffix(".png")], out.with_suffix(".png")),
        "sample": (["data", "sample", data, "--out", out, "--plot", tmp / "plot.png"], out),
        "train": (["train", "htd", "--data", data, "--preset", "tiny", "--steps", "1", "--out", out], out),
        "generate": (["generate", "htd", "--checkpoint", ckpt, "--conditions", data, "--n", "2", "--steps", "1", "--out", out], out),
    }


VERBS = ("show", "sample", "train", "generate")


def _cases() -> list:
    params = []
    for name, mutate, named, kind in dataset_mutations():
        for verb in VERBS:
            def make(tmp: Path, fx, mutate=mutate, named=named, verb=verb):
                data = copy(fx.dataset, tmp / "in" / "dataset")
                mutate(data)
                argv, out = _verbs(tmp, data, fx.ckpt)[verb]
                return argv, out, [named]
            params.append(Case(f"{verb}-{name}", make, problem=PROBLEMS.get(kind)).param())
    return params


@pytest.mark.parametrize("case", _cases())
def test_malformed_dataset(case, tmp_path, capsys, valid_dataset, request):
    ckpt = request.getfixturevalue("tiny_checkpoint") if case.name.startswith("generate-") else None
    check_case(case, tmp_path, capsys, SimpleNamespace(dataset=valid_dataset, ckpt=ckpt), inputs=[tmp_path / "in"])
