"""A malicious generator plugin for the leaderboard's isolation tests. Loading a checkpoint runs the attack named in
its attack.json instead of loading a model:
- "steal": read HF_TOKEN and the Hub token file, write outside its folder (into the leaderboard), open a socket to
  the scorer's loopback, record what worked in found.json (inside its folder), then fail;
- "escape": every escape of evil_attacks.py, recorded in found.json, then fail;
- "evade": behave (write valid rows) when the conditions look like `submit --check`'s mock data, else "escape";
- "rows": write valid rows (copied from the conditions) whose provenance claims what attack.json says (another
  generator, another subject's checkpoint hash, a path in the hash) and exit 0, as if generation had worked;
- "invalid-rows": write a dataset folder whose shard is garbage and exit 0;
- "fifo": put a FIFO where the shard should be; "bomb": a small shard that decompresses to gigabytes;
- "many-files": write files until stopped; "forever": spin until killed.
The plugin folder also holds a sitecustomize.py that would mark every process it ran in: it must never run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

from histosynth.generators.base import Generator, GeneratorMeta

META = GeneratorMeta(name="evil", version="0.0.1", summary="a malicious test plugin", paper="none", citation="none",
                     license="none", conditioning=(), outputs=("image",), label_policy="none", family="toy",
                     target=f"{__name__}:Evil")


def _argument(flag: str) -> str:
    return sys.argv[sys.argv.index(flag) + 1]


def _attempt(action) -> str:
    try:
        return f"worked: {action()}"
    except Exception as err:  # the point is to record every failure
        return f"failed: {type(err).__name__}: {err}"


def _steal(attack: dict) -> None:
    import socket

    from huggingface_hub import constants

    found = {
        "env_token": os.environ.get("HF_TOKEN"),
        "token_file": _attempt(lambda: Path(attack["token_file"]).read_text()),
        "default_token_file": _attempt(lambda: Path(constants.HF_TOKEN_PATH).read_text()),
        "write_outside": _attempt(lambda: Path(attack["outside"]).write_text("pwned")),
        "socket": _attempt(lambda: socket.create_connection(("127.0.0.1", attack["port"]), timeout=3).close()),
    }
    Path("found.json").write_text(json.dumps(found))
    raise RuntimeError("evil: attack done")


def _escape(attack: dict) -> None:
    import evil_attacks

    Path("found.json").write_text(json.dumps(evil_attacks.run_all(attack["targets"])))
    raise RuntimeError("evil: attack done")


def _write_rows(conditions: Path, out: Path, provenance: dict) -> None:
    from histosynth.data_cards.card import CardInfo
    from histosynth.disk import iter_samples, write_dataset

    n = int(_argument("--n"))
    given = list(iter_samples(conditions))
    rows = []
    for index in range(n):  # condition i mod M, as `histosynth generate` assigns them
        sample = given[index % len(given)]
        rows.append(dataclasses.replace(sample, provenance=dataclasses.replace(sample.provenance, **provenance)))
    write_dataset(rows, out, CardInfo("evil", "rows with forged provenance"))


def _shard_folder(conditions: Path) -> Path:
    out = Path(_argument("--out"))
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text((conditions / "README.md").read_text())
    return out / "data" / "train-00000-of-00001.parquet"


def _bomb(conditions: Path) -> None:
    """A parquet shard of the card's columns, one row per row group as many rows as asked for, whose image bytes
    decompress to 512 MiB each (zstd on zeros, no dictionary): about 2 GiB from a file of kilobytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    shard = _shard_folder(conditions)
    schema = pq.read_schema(next((conditions / "data").glob("*.parquet")))
    block = bytes(512 << 20)
    with pq.ParquetWriter(shard, schema, compression="zstd", use_dictionary=False) as writer:
        for _ in range(int(_argument("--n"))):
            columns = [pa.array([{"bytes": block, "path": None}], type=f.type) if f.name == "image"
                       else pa.nulls(1, f.type) for f in schema]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))


class Evil(Generator):
    meta = META

    @classmethod
    def load(cls, path, device=None):
        attack = json.loads((Path(path) / "attack.json").read_text())
        kind = attack["kind"]
        conditions = Path(_argument("--conditions"))
        if kind == "evade":
            looks_like_check = len(list((conditions / "data").glob("*.parquet"))) == 1 and \
                (conditions / "README.md").read_text().count("mock train") > 0
            kind = "rows" if looks_like_check else "escape"
        if kind == "steal":
            _steal(attack)
        if kind == "escape":
            _escape(attack)
        if kind == "rows":
            honest = {"generator": "evil", "generator_version": META.version, "checkpoint_hash": "sha256:" + "0" * 64}
            _write_rows(conditions, Path(_argument("--out")), attack.get("provenance", honest))
            os._exit(0)
        if kind == "invalid-rows":
            _shard_folder(conditions).write_bytes(b"PAR1 not really a parquet file PAR1")
            os._exit(0)
        if kind == "fifo":
            os.mkfifo(_shard_folder(conditions))
            os._exit(0)
        if kind == "bomb":
            _bomb(conditions)
            os._exit(0)
        if kind == "many-files":
            flood = Path(_argument("--out"))
            flood.mkdir(parents=True)
            for i in range(100_000):
                (flood / f"{i}").touch()
            os._exit(0)
        while True:
            pass
