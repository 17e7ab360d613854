"""Checks shared by the conditioners: a part they read must be in the batch, class ids must fit the model."""

from __future__ import annotations

import numpy as np

from histosynth.classes import IGNORE_ID
from histosynth.errors import InputError
from histosynth.generators.conditioning.batch import ConditionBatch

_FIELDS = {"tissue": "tissue", "crops": "tissue", "nuclei": "nuclei", "mask": "masks"}


def require(batch: ConditionBatch, part: str, reader: str) -> None:
    """Raise InputError unless `batch` carries `part` (crops are cut inside the tissue map, so they need it)."""
    if getattr(batch, _FIELDS[part]) is None:
        what = "tissue maps" if _FIELDS[part] == "tissue" else {"nuclei": "nuclei", "mask": "completion masks"}[part]
        raise InputError(f"{reader} reads the {part!r} part of each condition, but these conditions carry no {what}")


def check_class_ids(ids: np.ndarray, num_classes: int, what: str) -> None:
    """Raise InputError if a labeled id (not IGNORE_ID) is >= num_classes: the model has no channel for it."""
    labeled = ids[ids != IGNORE_ID]
    if labeled.size and int(labeled.max()) >= num_classes:
        raise InputError(f"{what} has class id {int(labeled.max())} but the model has {num_classes} classes")
