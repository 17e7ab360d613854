"""`conditioner_from_config`: rebuild a saved model's conditioner from the dict its `config()` wrote."""

from __future__ import annotations

import inspect
from typing import Any

from histosynth.errors import InputError, UnknownNameError
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.centroids import CentroidMaps
from histosynth.generators.conditioning.compose import Compose
from histosynth.generators.conditioning.crops import HTDCrops
from histosynth.generators.conditioning.masked import MaskedImage
from histosynth.generators.conditioning.tissue import TissueOneHot

CONDITIONERS: dict[str, type[Conditioner]] = {c.name: c for c in (TissueOneHot, HTDCrops, CentroidMaps, MaskedImage)}


def conditioner_from_config(config: dict[str, Any]) -> Conditioner:
    """The conditioner `config` describes ({"name": ..., settings...}; Compose nests its members' configs)."""
    settings = dict(config)
    name = settings.pop("name", None)
    if name == Compose.name:
        return Compose([conditioner_from_config(c) for c in settings.get("conditioners", [])])
    if name not in CONDITIONERS:
        known = ", ".join([*CONDITIONERS, Compose.name])
        raise UnknownNameError(f"unknown conditioner {name!r} (known: {known})")
    cls = CONDITIONERS[name]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:] if p.kind in named]
    accepted = {p.name for p in params}
    unknown = sorted(set(settings) - accepted)
    missing = sorted(p.name for p in params if p.default is inspect.Parameter.empty and p.name not in settings)
    if unknown or missing:
        problem = f"unknown settings {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
        raise InputError(f"conditioner {name!r}: {problem} (it takes {', '.join(sorted(accepted)) or 'no settings'})")
    return cls(**settings)
