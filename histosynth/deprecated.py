"""Old spellings of public names, kept working for one release with a DeprecationWarning.

histosynth spells American (license, color, memorization, optimizer, normalize, labeled), as the names it must
match outside do (the Hub card's `license`, the `memorization` metric, torch's optimizers). Names that outsiders may
already use under the British spelling (a plugin's `GeneratorMeta(licence=...)`, a submission's `licence:` field,
`histosynth.labels.PseudoLabeller`, ...) still work until the next minor release, and warn once per call site.

    renamed_field(GeneratorMeta, "licence", "license")     # the keyword and the attribute
    __getattr__ = renamed_names(__name__, {"PseudoLabeller": "PseudoLabeler"}, globals())
    __getattr__ = replaced_names(__name__, {"OLD_TABLE": ("NEW_REGISTRY", lambda: view_of_new_registry())})
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable

REMOVED_IN = "histosynth 0.2"


def warn_renamed(old: str, new: str, where: str, stacklevel: int = 3) -> None:
    """Warn that `old` (in `where`) is now `new`."""
    warnings.warn(f"{where}: {old!r} is deprecated and will be removed in {REMOVED_IN}; use {new!r}",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_field(cls: type, old: str, new: str) -> type:
    """Let dataclass `cls` take keyword `old` for its field `new` and read `obj.old` as `obj.new`, each with a
    DeprecationWarning. Returns `cls`."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if old in kwargs:
            if new in kwargs:
                raise TypeError(f"{cls.__name__}: give {new!r}, not both {new!r} and {old!r}")
            warn_renamed(old, new, cls.__name__)
            kwargs[new] = kwargs.pop(old)
        init(self, *args, **kwargs)

    def getter(self: Any) -> Any:
        warn_renamed(old, new, cls.__name__)
        return getattr(self, new)

    cls.__init__ = __init__  # type: ignore[misc]
    setattr(cls, old, property(getter, doc=f"Deprecated: use `{new}`."))
    return cls


def renamed_names(module: str, renamed: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` that resolves each old name of `renamed` (old -> new) to the new one, warning."""

    def __getattr__(name: str) -> Any:
        if name in renamed:
            warn_renamed(name, renamed[name], module)
            return namespace[renamed[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__


def replaced_names(module: str, replaced: dict[str, tuple[str, Callable[[], Any]]]) -> Callable[[str], Any]:
    """A module `__getattr__` for names whose replacement is not the same object under a new name: each old name of
    `replaced` maps to (what to use now, a function giving a stand-in for the old value), warning."""

    def __getattr__(name: str) -> Any:
        if name in replaced:
            new, stand_in = replaced[name]
            warn_renamed(name, new, module)
            return stand_in()
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
