"""Content-addressed on-disk cache of numpy arrays: cell embeddings, nuclei segmentations, fitted models.

Entries are keyed by a sha256 of everything that determines them (image bytes, encoder name and weights
fingerprint, cell size, parameters, code version), never by a user-chosen name, so a changed input or setting
can never return a stale entry. Each entry is one `.npz` file written atomically (`histosynth.atomic`), so a
crash leaves either the whole entry or nothing; an unreadable entry (e.g. a disk that filled up) counts as a miss
and is recomputed. This is what makes pseudo-labeling resumable: a rerun after a crash reads back what was done
and computes only the rest.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from histosynth.atomic import write_bytes_atomic
from histosynth.cache_dirs import cache_dir


def default_cache_dir() -> Path:
    """The pseudo-label cache: `labels/` under histosynth's cache root (`histosynth.cache_dirs`)."""
    return cache_dir("labels")


def content_key(*parts: bytes | str | int | float | np.ndarray | None) -> str:
    """sha256 hex digest of the parts (length-prefixed and typed, so ("ab", "c") and ("a", "bc") differ)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            arr = np.ascontiguousarray(part)
            head = f"nd:{arr.dtype.str}:{arr.shape}".encode()
            data = arr.tobytes()
        elif isinstance(part, bytes):
            head, data = b"b", part
        else:
            head, data = type(part).__name__.encode(), repr(part).encode()
        digest.update(len(head).to_bytes(8, "little") + head + len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


class ArrayCache:
    """A folder of `<key[:2]>/<key>.npz` entries, each a dict of named arrays; counts hits, misses and writes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def path(self, key: str) -> Path:
        """Where entry `key` lives."""
        if len(key) < 8 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"cache keys are hex digests, got {key!r}")
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays of entry `key`, or None when absent or unreadable (an unreadable file is removed)."""
        path = self.path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return arrays

    def put(self, key: str, arrays: Mapping[str, np.ndarray], compress: bool = False) -> None:
        """Store `arrays` under `key` atomically (`histosynth.atomic`); `compress` suits sparse label maps."""
        buffer = io.BytesIO()
        (np.savez_compressed if compress else np.savez)(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        write_bytes_atomic(self.path(key), buffer.getvalue())
        self.writes += 1

    def get_or_compute(
        self, key: str, compute: Callable[[], Mapping[str, np.ndarray]], compress: bool = False
    ) -> dict[str, np.ndarray]:
        """Entry `key`, computing and storing it first when it is missing.

        The returned arrays are always those read back from disk, so a first run and a resumed run see
        byte-identical values.
        """
        found = self.get(key)
        if found is not None:
            return found
        self.put(key, compute(), compress=compress)
        stored = self.get(key)
        self.hits -= 1  # reading back what we just wrote is not a hit
        if stored is None:
            raise OSError(f"{self.path(key)}: cache entry could not be read back after writing it")
        return stored

    def stats(self) -> str:
        """'H hits, M misses, W written' for logs."""
        return f"{self.hits} hits, {self.misses} misses, {self.writes} written"
