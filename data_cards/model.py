"""The card model: what a dataset card says, dataset versions, and the license rule. Standard library only.

Kept free of `datasets`/`huggingface_hub` so that the registry of released sets (`histosynth ls datasets`)
loads without them; rendering and validation live in `histosynth.data_cards.card`.

License rule: a dataset made from real data carries the license of that data when it is share-alike (PanNuke,
PANDA, Lizard and MoNuSAC are CC BY-NC-SA 4.0, so every synthetic set derived from them is too: non-commercial,
attribution, same license for derivatives); otherwise the card states the license it was given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import total_ordering

from histosynth.deprecated import renamed_names, warn_renamed
from histosynth.errors import InputError

SOURCE_LICENSES: dict[str, str] = {
    "camelyon16": "cc0-1.0",
    "panda": "cc-by-nc-sa-4.0",
    "pannuke": "cc-by-nc-sa-4.0",
    "lizard": "cc-by-nc-sa-4.0",
    "monusac": "cc-by-nc-sa-4.0",
    "consep": "apache-2.0",
    "embedded": "cc0-1.0",
    "simulator": "cc0-1.0",
}
"""Hub license id of the data behind each histosynth source (kept equal to each source's `meta.license` by a test)."""

SHARE_ALIKE = {"cc-by-nc-sa-4.0", "cc-by-sa-4.0", "cc-by-nc-sa-3.0", "cc-by-sa-3.0"}

LICENSE_NAMES: dict[str, str] = {
    "cc0-1.0": "CC0 1.0 (public domain dedication)",
    "cc-by-4.0": "CC BY 4.0",
    "cc-by-nc-4.0": "CC BY-NC 4.0",
    "cc-by-nc-sa-4.0": "CC BY-NC-SA 4.0",
    "cc-by-sa-4.0": "CC BY-SA 4.0",
    "apache-2.0": "Apache 2.0",
    "mit": "MIT",
    "other": "other (see below)",
}

DEFAULT_TASKS = ("image-segmentation", "image-to-image")


def source_license(name: str) -> str | None:
    """The Hub license id of a source dataset named in a card (`panda` or `extended|panda`), None if unknown."""
    return SOURCE_LICENSES.get(name.split("|")[-1].strip().lower())


def required_license(source_datasets: list[str]) -> str | None:
    """The license a derivative of these sources must carry (a share-alike source imposes its own), else None.

    Raises ValueError when two sources impose different share-alike licenses: no license satisfies both.
    """
    imposed = sorted({lic for lic in map(source_license, source_datasets) if lic in SHARE_ALIKE})
    if len(imposed) > 1:
        raise InputError(f"sources {source_datasets} impose incompatible share-alike licenses {imposed}")
    return imposed[0] if imposed else None


def default_license(source_datasets: list[str]) -> str:
    """The license to give a set derived from these sources: the imposed one, the common one, or "other"."""
    required = required_license(source_datasets)
    if required:
        return required
    known = {source_license(s) for s in source_datasets}
    return known.pop() if len(known) == 1 and None not in known else "other"


def license_name(license: str) -> str:
    """Readable name of a Hub license id."""
    return LICENSE_NAMES.get(license, license)


_VERSION = re.compile(r"v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")


@total_ordering
@dataclass(frozen=True)
class Version:
    """A released dataset version, strictly semver with a leading v: vMAJOR.MINOR.PATCH (the Hub tag name)."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> "Version":
        """Parse "v1.2.3"; anything else (1.2.3, v1.2, v1.2.3-rc1, v01.2.3) is a ValueError saying the format."""
        match = _VERSION.fullmatch(str(text).strip())
        if match is None:
            raise InputError(f"version must look like vMAJOR.MINOR.PATCH (e.g. v1.0.0), got {text!r}")
        return cls(*(int(g) for g in match.groups()))

    @classmethod
    def is_version(cls, text: str) -> bool:
        """True if `text` is a version tag (other tags in a repo are ignored)."""
        return _VERSION.fullmatch(text) is not None

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"

    def __lt__(self, other: "Version") -> bool:
        return (self.major, self.minor, self.patch) < (other.major, other.minor, other.patch)


@dataclass
class BenchmarkScore:
    """One score of a set, e.g. FD under an encoder; `reference` says who measured it and how."""

    metric: str
    value: float
    encoder: str = ""
    ci: str = ""  # e.g. "[70.1, 74.0] (95%, bootstrap)"
    reference: str = ""  # "histosynth bench v0.1.0" or "reported by <paper> for the authors' model"
    measured: bool = True  # False: a published reference figure, not measured on this set


@dataclass
class CardInfo:
    """What a card says about a dataset beyond what is counted while writing it (features, sizes, classes).

    Fields left empty get a neutral default sentence in the rendered card; the generation fields (generator
    onwards) are what make a card describe a synthetic set.
    """

    pretty_name: str
    description: str
    license: str = "other"
    source: str = ""  # prose: the source data, with its citation and URL
    source_datasets: list[str] = field(default_factory=list)  # histosynth source names, e.g. ["panda"]
    command: str = ""  # the exact command(s) that produce the set
    tags: list[str] = field(default_factory=list)
    limitations: str = ""
    citation: str = ""  # BibTeX of what to cite (generator paper, source data)
    generator: str = ""
    generator_version: str = ""
    checkpoint_hash: str = ""
    conditioning_source: str = ""
    seeds: str = ""
    intended_use: str = ""
    benchmark: list[BenchmarkScore] = field(default_factory=list)
    version: str = ""  # the release this card describes (vX.Y.Z), when known
    repo: str = ""  # where it is published (ORG/NAME), when known
    task_categories: list[str] = field(default_factory=lambda: list(DEFAULT_TASKS))

    @property
    def synthetic(self) -> bool:
        """True when the images were generated (a generator is named)."""
        return bool(self.generator)

    def hub_source_datasets(self) -> list[str]:
        """The Hub's `source_datasets` values: "original" for data made from nothing else, else "extended|<name>"."""
        if not self.source_datasets:
            return ["original"]
        return [s if "|" in s or s == "original" else f"extended|{s}" for s in self.source_datasets]

    def licence_problems(self) -> list[str]:
        """Deprecated: `license_problems`."""
        warn_renamed("licence_problems", "license_problems", "CardInfo")
        return self.license_problems()

    def license_problems(self) -> list[str]:
        """Why this card's license does not follow its source data (empty when it does)."""
        try:
            required = required_license(self.source_datasets)
        except ValueError as err:
            return [str(err)]
        if required and self.license != required:
            names = [s for s in self.source_datasets if source_license(s) == required]
            return [f"license is {self.license!r} but the source data ({', '.join(names)}) is {license_name(required)}, "
                    f"share-alike: a dataset derived from it must be licensed {required!r}"]
        return []


# The British spellings of these names, for one release.
__getattr__ = renamed_names(__name__, {"SOURCE_LICENCES": "SOURCE_LICENSES", "LICENCE_NAMES": "LICENSE_NAMES",
                                       "source_licence": "source_license", "required_licence": "required_license",
                                       "default_licence": "default_license", "licence_name": "license_name"}, globals())
