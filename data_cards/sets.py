"""Registry of released and planned datasets: one YAML spec per set in data_cards/cards/.

A spec names the set, its Hub repo, its versions (planned or released, with sample counts and, once released, the
tagged commit), its class schemas and the card text, including the exact commands that produce it from the real
data and weights. `histosynth ls datasets` lists them; `render_set_card` (histosynth.data_cards.card) renders a
spec's card. Loading needs only PyYAML: nothing here imports `datasets`, `huggingface_hub` or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from histosynth.data_cards.model import BenchmarkScore, CardInfo, Version
from histosynth.errors import InputError, UnknownNameError
from histosynth.registry import Registry

CARDS_DIR = Path(__file__).parent / "cards"
STATUSES = ("planned", "released")
_CARD_FIELDS = {f.name for f in fields(CardInfo)} - {"version", "repo"}
_SPEC_FIELDS = {"name", "repo", "summary", "tissue_schema", "nuclei_schema", "versions", "card", "recipe"}


class SpecError(InputError):
    """A dataset spec in data_cards/cards/ is malformed; the message names the file."""


@dataclass(frozen=True)
class VersionSpec:
    """One version of a set: planned (target counts) or released (counts, tagged commit, date)."""

    version: Version
    status: str
    samples: dict[str, int]
    commit: str | None = None
    date: str | None = None
    notes: str = ""


@dataclass
class DatasetSpec:
    """A released or planned dataset: where it lives, its versions, its schemas and its card."""

    name: str
    repo: str
    summary: str
    tissue_schema: str | None
    nuclei_schema: str | None
    versions: list[VersionSpec]
    card: dict[str, Any] = field(repr=False)
    path: Path | None = None

    @property
    def status(self) -> str:
        """"released" once any version is released, else "planned"."""
        return "released" if any(v.status == "released" for v in self.versions) else "planned"

    @property
    def latest(self) -> VersionSpec:
        """The highest version."""
        return max(self.versions, key=lambda v: v.version)

    def version(self, version: str) -> VersionSpec:
        """The entry for `version` (vX.Y.Z); unknown versions list the known ones."""
        wanted = Version.parse(version)
        for entry in self.versions:
            if entry.version == wanted:
                return entry
        raise UnknownNameError(f"dataset {self.name!r} has no version {version} (versions: {', '.join(str(v.version) for v in self.versions)})")

    def card_info(self, version: str | None = None) -> CardInfo:
        """The CardInfo to write this set with (e.g. `write_dataset(samples, out, spec.card_info("v1.0.0"))`)."""
        values = dict(self.card)
        values["benchmark"] = [BenchmarkScore(**b) for b in values.get("benchmark", [])]
        return CardInfo(**values, version=str(self.version(version).version if version else self.latest.version),
                        repo=self.repo)

    def line(self) -> str:
        """One line for `histosynth ls datasets`: versions (with status), repo, license, summary."""
        versions = ", ".join(f"{v.version} {v.status}" for v in sorted(self.versions, key=lambda v: v.version))
        return f"{versions} | {self.repo} | {self.card['license']} | {self.summary}"


def _fail(path: Path, problem: str) -> SpecError:
    return SpecError(f"{path}: {problem}")


def _version_spec(path: Path, raw: Any) -> VersionSpec:
    if not isinstance(raw, dict):
        raise _fail(path, f"each entry of `versions` must be a mapping, got {raw!r}")
    try:
        version = Version.parse(str(raw.get("version")))
    except ValueError as err:
        raise _fail(path, str(err)) from None
    status = raw.get("status")
    if status not in STATUSES:
        raise _fail(path, f"{version}: status must be one of {STATUSES}, got {status!r}")
    samples = raw.get("samples")
    if not isinstance(samples, dict) or not samples or not all(isinstance(n, int) and n >= 0 for n in samples.values()):
        raise _fail(path, f"{version}: `samples` must map each split to a count, got {samples!r}")
    commit = raw.get("commit")
    if status == "released" and not (isinstance(commit, str) and len(commit) == 40):
        raise _fail(path, f"{version}: a released version needs the 40-hex `commit` its tag points to")
    return VersionSpec(version, status, dict(samples), commit, raw.get("date"), raw.get("notes", ""))


def load_spec(path: Path | str) -> DatasetSpec:
    """Read and check one spec file (fields, versions, license rule, commands)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise _fail(path, f"invalid YAML ({err})") from None
    if not isinstance(raw, dict):
        raise _fail(path, "must be a YAML mapping")
    missing = [k for k in ("name", "repo", "summary", "versions", "card") if not raw.get(k)]
    if missing:
        raise _fail(path, f"missing {', '.join(missing)}")
    extra = sorted(set(raw) - _SPEC_FIELDS)
    if extra:
        raise _fail(path, f"unknown fields {extra} (known: {sorted(_SPEC_FIELDS)})")
    if raw["name"] != path.stem:
        raise _fail(path, f"name {raw['name']!r} must equal the file name {path.stem!r}")
    if raw["repo"].count("/") != 1:
        raise _fail(path, f"repo must be ORG/NAME, got {raw['repo']!r}")
    card = raw["card"]
    unknown = sorted(set(card) - _CARD_FIELDS) if isinstance(card, dict) else ["(not a mapping)"]
    if unknown:
        raise _fail(path, f"unknown card fields {unknown} (known: {sorted(_CARD_FIELDS)})")
    for key in ("pretty_name", "description", "license", "command"):
        if not card.get(key):
            raise _fail(path, f"card.{key} is required")
    versions = [_version_spec(path, v) for v in raw["versions"]]
    if len({v.version for v in versions}) != len(versions):
        raise _fail(path, "a version is listed twice")
    spec = DatasetSpec(raw["name"], raw["repo"], raw["summary"], raw.get("tissue_schema"), raw.get("nuclei_schema"),
                       versions, card, path)
    try:
        info = spec.card_info()
    except TypeError as err:
        raise _fail(path, f"card: {err}") from None
    problems = info.license_problems()
    if problems:
        raise _fail(path, problems[0])
    if raw.get("recipe"):  # the release is the recipe (histosynth recipe run THIS_FILE ...), which names the repo
        if "histosynth recipe run" not in info.command:
            raise _fail(path, "card.command must show the `histosynth recipe run` that releases it")
    elif f"--repo {spec.repo}" not in info.command or "histosynth publish" not in info.command:
        raise _fail(path, f"card.command must end with the `histosynth publish ... --repo {spec.repo}` that releases it")
    return spec


def load_specs(folder: Path | str = CARDS_DIR) -> list[DatasetSpec]:
    """Every spec in `folder`, sorted by name."""
    return [load_spec(p) for p in sorted(Path(folder).glob("*.yaml"))]


DATASETS: Registry[DatasetSpec] = Registry("dataset")
for _spec in load_specs():
    DATASETS.register(_spec.name, _spec, _spec.line())


def get_set(name: str) -> DatasetSpec:
    """The registered set called `name`; unknown names suggest close ones."""
    return DATASETS.get(name)


def unpublished(repo: str, version: str) -> str | None:
    """Why `repo@version` cannot be pulled when it is a registered set whose version is planned, not released (with
    the command that builds it); None otherwise (a released version, or a repo histosynth does not register)."""
    for name in DATASETS:
        spec = DATASETS.get(name)
        if spec.repo != repo:
            continue
        try:
            entry = spec.version(version)
        except (UnknownNameError, ValueError):
            return None
        if entry.status == "released":
            return None
        lines = [line.strip() for line in spec.card_info(version).command.splitlines()]
        command = "; ".join(line for line in lines if line.startswith("histosynth")) or "its card's command"
        return (f"{repo}@{entry.version} is planned, not published yet (histosynth ls datasets): nobody can pull it; "
                f"build it yourself with: {command}")
    return None
