"""Mergeable streaming first and second moments of feature vectors (mean and covariance) in float64.

Like EDM2's `calculate_metrics.py`, the state is a count, a sum and a sum of outer products, so statistics of
shards, batches or processes merge (up to rounding) into those of the whole set. Plain Σx and Σxxᵀ lose precision
to cancellation when the features have a large mean: cov = (Σxxᵀ - n μμᵀ)/(n-1) subtracts two numbers of size
n·|μ|² to get one of size n·σ², so about log10(|μ|²/σ²) digits are lost (μ ~ 1e3, σ ~ 1: a relative error of
~4e-9 in tests/unit/test_stats.py, against < 1e-13 here). So the sums here are of shifted data x - s, where the
shift s is the mean of the first batch seen (the classic "shifted data" algorithm; Chan, Golub & LeVeque 1983,
"Algorithms for computing the sample variance"). Merging re-expresses the other state's sums about this state's
shift. A shift can also be fixed up front (`shift=`), which makes every state a plain sum of the same quantities,
e.g. for an all-reduce across ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence, Union

import numpy as np

from histosynth.atomic import atomic_file
from histosynth.benchmark.errors import MetricInputError

if TYPE_CHECKING:
    import torch

FeatureArray = Union[np.ndarray, "torch.Tensor"]

FORMAT_VERSION = 1


def _describe_sample(row: int, ids: Sequence[str] | None, offset: int) -> str:
    if ids is not None:
        return f"sample {ids[row]!r} (index {offset + row})"
    return f"sample at index {offset + row}"


def as_feature_matrix(
    features: FeatureArray,
    name: str = "features",
    ids: Sequence[str] | None = None,
    offset: int = 0,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Return `features` (numpy array or torch tensor, shape (N, d)) as a numpy array of `dtype`.

    Raises MetricInputError for a wrong shape, an `ids` list of the wrong length, or NaN/inf values; the error names
    the first offending sample by its id when `ids` is given, else by its index (`offset` + row).
    """
    if hasattr(features, "detach"):  # torch tensor: any device, any float dtype (bfloat16 has no numpy twin)
        features = features.detach().double().cpu().numpy()
    array = np.asarray(features, dtype=dtype)
    if array.ndim != 2 or array.shape[1] == 0:
        raise MetricInputError(f"{name} must be a 2-D array (samples, dims), got shape {array.shape}")
    if ids is not None and len(ids) != array.shape[0]:
        raise MetricInputError(f"{name}: {len(ids)} ids for {array.shape[0]} samples")
    finite = np.isfinite(array)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        row = int(bad_rows[0])
        col = int(np.flatnonzero(~finite[row])[0])
        raise MetricInputError(
            f"{name}: non-finite value {array[row, col]} in {_describe_sample(row, ids, offset)}, feature {col} "
            f"({len(bad_rows)} sample(s) affected)"
        )
    return array


class StreamingStats:
    """Streaming, mergeable float64 mean and covariance of (N, d) feature batches.

    Use `update` per batch, `merge`/`merged` across shards or processes, then `mean` and `cov` (unbiased, N-1).
    `save`/`load` round-trip the exact state (plus a free-form JSON metadata dict) through an .npz file that
    also holds `mu`/`sigma` under pytorch-fid's names.
    """

    __hash__ = None  # mutable

    def __init__(
        self,
        dim: int | None = None,
        *,
        shift: np.ndarray | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.dim: int | None = dim
        self.count: int = 0
        self.metadata: dict[str, Any] = dict(metadata or {})
        self._shift: np.ndarray | None = None
        self._sum: np.ndarray | None = None  # Σ (x - shift)
        self._outer: np.ndarray | None = None  # Σ (x - shift)(x - shift)ᵀ
        if shift is not None:
            self._init_state(np.array(shift, dtype=np.float64).reshape(-1))

    def _init_state(self, shift: np.ndarray) -> None:
        if self.dim is not None and shift.shape[0] != self.dim:
            raise MetricInputError(f"shift has {shift.shape[0]} dims, stats have {self.dim}")
        if not np.isfinite(shift).all():
            raise MetricInputError("shift must be finite")
        self.dim = int(shift.shape[0])
        self._shift = shift
        self._sum = np.zeros(self.dim)
        self._outer = np.zeros((self.dim, self.dim))

    # ------------------------------------------------------------------ accumulation
    def update(self, features: FeatureArray, ids: Sequence[str] | None = None) -> "StreamingStats":
        """Add a batch of features (N, d); `ids` (one per row) only serve to name a bad sample in errors."""
        x = as_feature_matrix(features, "features", ids=ids, offset=self.count)
        if self.dim is not None and x.shape[1] != self.dim:
            raise MetricInputError(f"features have {x.shape[1]} dims, stats have {self.dim}")
        if x.shape[0] == 0:
            if self.dim is None:
                self.dim = int(x.shape[1])
            return self
        if self._shift is None:
            self._init_state(x.mean(axis=0))
        y = x - self._shift
        self._sum += y.sum(axis=0)
        self._outer += y.T @ y
        self.count += int(x.shape[0])
        return self

    @classmethod
    def from_features(
        cls,
        features: FeatureArray,
        ids: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> "StreamingStats":
        """Statistics of one (N, d) feature matrix."""
        return cls(metadata=metadata).update(features, ids)

    def merge(self, other: "StreamingStats") -> "StreamingStats":
        """Fold `other`'s samples into this state (in place; returns self). Metadata of `self` is kept."""
        if not isinstance(other, StreamingStats):
            raise TypeError(f"can only merge StreamingStats, got {type(other).__name__}")
        if other.dim is not None and self.dim is not None and other.dim != self.dim:
            raise MetricInputError(f"cannot merge stats of {other.dim} dims into stats of {self.dim} dims")
        if other.count == 0:
            if self.dim is None:
                self.dim = other.dim
            return self
        if self._shift is None:
            self._init_state(other._shift.copy())
        # Re-express other's sums about our shift: x - s = (x - t) + δ with δ = t - s.
        delta = other._shift - self._shift
        n, s = other.count, other._sum
        cross = np.outer(s, delta)
        self._outer += other._outer + cross + cross.T + n * np.outer(delta, delta)
        self._sum += s + n * delta
        self.count += n
        return self

    @classmethod
    def merged(cls, parts: Iterable["StreamingStats"], metadata: dict[str, Any] | None = None) -> "StreamingStats":
        """A new state holding the samples of all `parts` (e.g. per-shard or per-rank stats)."""
        out = cls(metadata=metadata)
        for part in parts:
            out.merge(part)
        return out

    def copy(self) -> "StreamingStats":
        """An independent copy of this state."""
        out = StreamingStats(self.dim, metadata=json.loads(json.dumps(self.metadata)))
        out.count = self.count
        if self._shift is not None:
            out._shift, out._sum, out._outer = self._shift.copy(), self._sum.copy(), self._outer.copy()
        return out

    # ------------------------------------------------------------------ results
    def _require(self, n: int, what: str) -> None:
        if self.count < n:
            raise MetricInputError(f"{what} needs at least {n} sample(s), the stats hold {self.count}")

    @property
    def mean(self) -> np.ndarray:
        """Sample mean, shape (d,)."""
        self._require(1, "the mean")
        return self._shift + self._sum / self.count

    @property
    def cov(self) -> np.ndarray:
        """Unbiased sample covariance (divides by N-1), shape (d, d), exactly symmetric."""
        self._require(2, "the covariance")
        centered = self._outer - np.outer(self._sum, self._sum) / self.count
        centered = (centered + centered.T) / 2
        return centered / (self.count - 1)

    @property
    def shift(self) -> np.ndarray | None:
        """The shift s the sums are taken about (None before any data)."""
        return None if self._shift is None else self._shift.copy()

    @property
    def sum(self) -> np.ndarray:
        """Σx (EDM2's `sum`); derived, so prefer `mean`/`cov` for accuracy."""
        if self._shift is None:
            return np.zeros(self.dim or 0)
        return self._sum + self.count * self._shift

    @property
    def sum_outer(self) -> np.ndarray:
        """Σxxᵀ (EDM2's `sum2`); derived, and subject to cancellation when used to form a covariance."""
        if self._shift is None:
            return np.zeros((self.dim or 0, self.dim or 0))
        cross = np.outer(self._sum, self._shift)
        return self._outer + cross + cross.T + self.count * np.outer(self._shift, self._shift)

    # ------------------------------------------------------------------ comparison
    def __eq__(self, other: object) -> bool:
        """Exact equality of the stored state (dim, count, shift, shifted sums); metadata is not compared."""
        if not isinstance(other, StreamingStats):
            return NotImplemented
        if (self.dim, self.count) != (other.dim, other.count) or (self._shift is None) != (other._shift is None):
            return False
        if self._shift is None:
            return True
        return (
            np.array_equal(self._shift, other._shift)
            and np.array_equal(self._sum, other._sum)
            and np.array_equal(self._outer, other._outer)
        )

    def allclose(self, other: "StreamingStats", rtol: float = 1e-12, atol: float = 0.0) -> bool:
        """Same dim and count, and mean/cov equal up to atol + rtol·(largest |entry|); independent of the shifts.

        The tolerance is scaled by each array's largest entry, not entrywise, since rounding errors in a
        covariance scale with its largest entries and near-zero entries would otherwise never match.
        """
        if self.dim != other.dim or self.count != other.count:
            return False
        if self.count == 0:
            return True
        pairs = [(self.mean, other.mean)] + ([(self.cov, other.cov)] if self.count >= 2 else [])
        return all(float(np.abs(a - b).max()) <= atol + rtol * float(np.abs(b).max()) for a, b in pairs)

    def __repr__(self) -> str:
        return f"StreamingStats(dim={self.dim}, count={self.count})"

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the state to `path` (.npz, written atomically); returns the path.

        Keys: format_version, dim (-1 if unknown), count, shift, shifted_sum, shifted_outer, metadata (JSON string),
        and, with at least 2 samples, mu and sigma (pytorch-fid's names) for other tools; `load` ignores them.
        """
        path = Path(path)
        try:
            metadata_json = json.dumps(self.metadata, sort_keys=True)
        except TypeError as exc:
            raise MetricInputError(f"stats metadata must be JSON-serializable: {exc}") from exc
        d = self.dim if self.dim is not None else -1
        empty = self._shift is None
        arrays: dict[str, np.ndarray] = {
            "format_version": np.array(FORMAT_VERSION),
            "dim": np.array(d),
            "count": np.array(self.count),
            "shift": np.zeros(0) if empty else self._shift,
            "shifted_sum": np.zeros(0) if empty else self._sum,
            "shifted_outer": np.zeros((0, 0)) if empty else self._outer,
            "metadata": np.array(metadata_json),
        }
        if self.count >= 2:
            arrays["mu"] = self.mean
            arrays["sigma"] = self.cov
        with atomic_file(path) as partial, open(partial, "wb") as handle:  # a handle: np.savez adds no suffix
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StreamingStats":
        """Read a state written by `save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            required = {"format_version", "dim", "count", "shift", "shifted_sum", "shifted_outer", "metadata"}
            missing = required - set(data.files)
            if missing:
                raise MetricInputError(f"{path}: not a StreamingStats file (missing {sorted(missing)})")
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise MetricInputError(f"{path}: stats format version {version}, this code reads {FORMAT_VERSION}")
            dim, count = int(data["dim"]), int(data["count"])
            out = cls(None if dim < 0 else dim, metadata=json.loads(str(data["metadata"])))
            if data["shift"].size:
                shift, s, outer = data["shift"], data["shifted_sum"], data["shifted_outer"]
                if shift.shape != (dim,) or s.shape != (dim,) or outer.shape != (dim, dim):
                    raise MetricInputError(f"{path}: arrays do not match dim={dim}")
                out._shift, out._sum, out._outer = (np.array(a, dtype=np.float64) for a in (shift, s, outer))
            elif count:
                raise MetricInputError(f"{path}: count={count} but no sums stored")
            out.count = count
        return out
