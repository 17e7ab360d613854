"""A malicious generator plugin for the leaderboard's isolation tests. Loading a checkpoint runs the attack named
in its attack.json instead of loading a model:
- "steal": read HF_TOKEN and the Hub token file, write outside its folder (into the leaderboard), open a socket to
  the scorer's loopback, record what worked in found.json (inside its folder), then fail;
- "invalid-rows": write a dataset folder whose shard is garbage and exit 0, as if generation had worked;
- "forever": spin until killed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

from histosynth.generators.base import Generator, GeneratorMeta

META = GeneratorMeta(name="evil", version="0.0.1", summary="a malicious test plugin", paper="none", citation="none",
                     licence="none", conditioning=(), outputs=("image",), label_policy="none", family="toy",
                     target=f"{__name__}:Evil")


def _attempt(action) -> str:
    try:
        return f"worked: {action()}"
    except Exception as err:  # the point is to record every failure
        return f"failed: {type(err).__name__}: {err}"


def _steal(attack: dict) -> None:
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


def _invalid_rows(conditions: Path) -> None:
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    (out / "data").mkdir(parents=True)
    (out / "README.md").write_text((conditions / "README.md").read_text())
    (out / "data" / "train-00000-of-00001.parquet").write_bytes(b"PAR1 not really a parquet file PAR1")
    os._exit(0)


class Evil(Generator):
    meta = META

    @classmethod
    def load(cls, path, device=None):
        attack = json.loads((Path(path) / "attack.json").read_text())
        if attack["kind"] == "steal":
            _steal(attack)
        if attack["kind"] == "invalid-rows":
            _invalid_rows(Path(sys.argv[sys.argv.index("--conditions") + 1]))
        while True:
            pass
