"""`CONDITIONERS` (name -> conditioner class, a Registry) and `conditioner_from_config`, which rebuilds a saved
model's conditioner from the dict its `config()` wrote."""

from __future__ import annotations

import inspect
from typing import Any

from histosynth.errors import InputError
from histosynth.generators.conditioning.base import Conditioner
from histosynth.generators.conditioning.centroids import CentroidMaps
from histosynth.generators.conditioning.compose import Compose
from histosynth.generators.conditioning.crops import HTDCrops
from histosynth.generators.conditioning.masked import MaskedImage
from histosynth.generators.conditioning.tissue import TissueOneHot
from histosynth.registry import Registry

CONDITIONERS: Registry[type[Conditioner]] = Registry("conditioner")
for _cls in (TissueOneHot, HTDCrops, CentroidMaps, MaskedImage, Compose):
    CONDITIONERS.register(_cls.name, _cls, (_cls.__doc__ or "").strip().splitlines()[0])


def conditioner_from_config(config: dict[str, Any]) -> Conditioner:
    """The conditioner `config` describes ({"name": ..., settings...}; Compose nests its members' configs)."""
    settings = dict(config)
    cls = CONDITIONERS.get(settings.pop("name", None))
    if cls is Compose:
        return Compose([conditioner_from_config(c) for c in settings.get("conditioners", [])])
    name = cls.name
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = [p for p in list(inspect.signature(cls.__init__).parameters.values())[1:] if p.kind in named]
    accepted = {p.name for p in params}
    unknown = sorted(set(settings) - accepted)
    missing = sorted(p.name for p in params if p.default is inspect.Parameter.empty and p.name not in settings)
    if unknown or missing:
        problem = f"unknown settings {', '.join(unknown)}" if unknown else f"missing {', '.join(missing)}"
        raise InputError(f"conditioner {name!r}: {problem} (it takes {', '.join(sorted(accepted)) or 'no settings'})")
    return cls(**settings)
