"""A typed name -> object registry with lazy "module:attr" entries.

Modeled on lm-evaluation-harness's registry: entries may be given as import strings so that listing a
registry (``histosynth ls``) never imports torch; the object is imported on first `get`.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from histosynth.errors import UnknownNameError

T = TypeVar("T")


class RegistryError(UnknownNameError):
    """A name not in a registry; the message says which and what is close."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: either the object itself or a lazy "module:attr" target, plus a one-line summary."""

    name: str
    target: T | str
    summary: str = ""

    @property
    def is_lazy(self) -> bool:
        return isinstance(self.target, str)


def import_target(target: str) -> object:
    """Import "package.module:attr" (attr may be dotted) and return the attribute."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"lazy registry target {target!r} must look like 'package.module:attr'")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Named objects of one kind (sources, class schemas, generators, encoders, ...)."""

    def __init__(self, kind: str, resolver: Callable[[str], T | None] | None = None,
                 patterns: Sequence[str] = ()) -> None:
        """`kind` names the registry in messages; `resolver` may build entries for pattern names on demand, and
        `patterns` describes those names for the unknown-name message (e.g. "<metric>_ratio_to_real")."""
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._loaded: dict[str, T] = {}
        self._resolver = resolver
        self.patterns = tuple(patterns)

    def register(self, name: str, target: T | str, summary: str = "") -> None:
        """Add `name`; `target` is the object or a lazy "module:attr" string. Duplicate names raise."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered (to {self._entries[name].target!r})")
        self._entries[name] = Entry(name, target, summary)

    def unregister(self, name: str) -> None:
        """Remove `name` (an entry added for a while, e.g. by a test); unknown names raise like `get`."""
        if name not in self._entries:
            raise RegistryError(self._unknown_message(name))
        del self._entries[name]
        self._loaded.pop(name, None)

    def decorator(self, name: str, summary: str = "") -> Callable[[T], T]:
        """Register the decorated object under `name`."""

        def wrap(obj: T) -> T:
            self.register(name, obj, summary)
            return obj

        return wrap

    def get(self, name: str) -> T:
        """The object for `name`, importing a lazy entry on first use; unknown names suggest the closest (a name
        that is not a string, e.g. from a JSON file, is unknown too)."""
        if not isinstance(name, str):
            raise RegistryError(self._unknown_message(name))
        if name in self._loaded:
            return self._loaded[name]
        entry = self._entries.get(name)
        if entry is None:
            built = self._resolver(name) if self._resolver else None
            if built is None:
                raise RegistryError(self._unknown_message(name))
            self._loaded[name] = built
            return built
        obj = import_target(entry.target) if isinstance(entry.target, str) else entry.target
        self._loaded[name] = obj  # type: ignore[assignment]
        return obj  # type: ignore[return-value]

    def _unknown_message(self, name: object) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5) if isinstance(name, str) else []
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        patterns = f"; and {', '.join(self.patterns)}" if self.patterns else ""
        return f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries)) or 'none'}{patterns})"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if name in self._entries:
            return True
        return self._resolver is not None and self._resolver(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[Entry[T]]:
        """All registered entries, sorted by name, without importing lazy ones."""
        return [self._entries[n] for n in sorted(self._entries)]
