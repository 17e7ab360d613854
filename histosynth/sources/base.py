"""The source contract: anything that yields validated `Sample`s of real (or simulated) tissue."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator

from histosynth.deprecated import renamed_field
from histosynth.errors import InputError, UserFacingError
from histosynth.schema import Sample


@dataclass(frozen=True)
class SourceMeta:
    """What a source is, where it comes from and under which license; shown by `histosynth ls sources`."""

    name: str
    description: str
    license: str
    url: str = ""
    citation: str = ""
    native_mpp: float | None = None
    tissue_schema: str | None = None
    nuclei_schema: str | None = None
    pseudolabel_by_default: bool = False  # `data build` pseudo-labels it unless told not to (the embedded sample)


renamed_field(SourceMeta, "licence", "license")  # the British spelling, for one release


class Source(ABC):
    """Yields Samples one at a time (streaming: never the whole set in memory)."""

    meta: ClassVar[SourceMeta]

    @abstractmethod
    def __iter__(self) -> Iterator[Sample]:
        """The samples, in a deterministic order."""

    def __len__(self) -> int:
        """Number of samples when known cheaply (progress bars); sources that cannot tell raise TypeError."""
        raise TypeError(f"source {self.meta.name!r} does not know its length in advance")

    @property
    def skipped(self) -> Counter[str]:
        """{why: how many} of the inputs this source passed over ("images smaller than 256 px": 3), so that an
        empty result can say which filter dropped what; filled while iterating."""
        return self.__dict__.setdefault("_skipped", Counter())


class EmptySourceError(UserFacingError):
    """A source yielded no sample at all; the message says which filters dropped how many inputs."""


def require_samples(source: Source, described: str) -> Iterator[Sample]:
    """The samples of `source`, raising EmptySourceError at the end if there were none.

    Raised from inside the iteration, so a writer consuming it (an atomic folder) publishes nothing.
    `described` names the input for the message (e.g. "--path /data/imgs").
    """
    count = 0
    for sample in source:
        count += 1
        yield sample
    if count == 0:
        reasons = (", ".join(f"{n} {why}" for why, n in source.skipped.items())
                   or "nothing in the input passed the source's filters (check --size, --stride, --min-tissue, --mpp)")
        raise EmptySourceError(f"{described}: 0 samples from source {source.meta.name!r}: {reasons}")


def construct(cls: type[Source], options: dict[str, Any]) -> Source:
    """Build a source from CLI-style options; None means "not given, use the default".

    An option that was given but that this source does not take is an error (a typo or a wrong source),
    not something to drop silently.
    """
    params = inspect.signature(cls).parameters
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(given) - set(params))
    if unknown:
        takes = ", ".join(p for p in params if p != "self")
        raise InputError(f"source {cls.meta.name!r} does not take {', '.join('--' + u.replace('_', '-') for u in unknown)} (it takes: {takes})")
    return cls(**given)
