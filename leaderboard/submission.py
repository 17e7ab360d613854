"""A leaderboard submission: a generator (registered name, checkpoint, optional plugin folder) or a dataset.

    # submission.yaml (paths are relative to this file)
    kind: generator            # or: dataset
    generator: my-gan          # its registered name: built in, or a plugin's entry point in histosynth.generators
    checkpoint: model/         # the folder `histosynth train` wrote
    plugin: plugin/            # optional: a folder holding the package and its .dist-info, a wheel (*.whl),
                               # or a source folder with pyproject.toml (built in the sandbox)
    title: My GAN (2026)       # optional display name (one line, at most 120 characters)
    citation: |                # optional: the BibTeX entry the page and paper tables cite
      @article{me2026gan, title = {My GAN}, author = {Me, A.}, journal = {arXiv}, year = {2026}}
    license: apache-2.0        # optional (`licence:`, its old spelling, is read too until histosynth 0.2)
    contact: me@example.org

    kind: dataset
    name: my-synthetic-set     # the subject's name on the board (default: the folder's name)
    dataset: synthetic-set/    # a histosynth dataset folder

Hub references (`hub:owner/name@revision`) are refused here with a message: pull them first
(`histosynth pull`), so the scorer only ever reads local, content-hashed folders. The guide for submitters is
docs/submitting.md; how a plugin is packaged and prepared: histosynth.leaderboard.plugin_package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from histosynth.deprecated import renamed_field, warn_renamed
from histosynth.errors import InputError
from histosynth.leaderboard.identity import check_name

KINDS = ("generator", "dataset")
MAX_FILE_BYTES = 64 << 10
FIELDS = {"generator": {"kind", "generator", "checkpoint", "plugin", "title", "citation", "license", "contact"},
          "dataset": {"kind", "name", "dataset", "title", "citation", "license", "contact"}}
MAX_TITLE = 120
MAX_CITATION = 8192
BIBTEX = re.compile(r"\A\s*@\w+\s*\{\s*[^,\s]+\s*,")


class SubmissionError(InputError):
    """A submission file is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class Submission:
    """A validated submission; paths are absolute."""

    kind: str
    source: Path  # the submission file
    generator: str | None = None
    checkpoint: Path | None = None
    plugin: Path | None = None
    dataset: Path | None = None
    name: str = ""  # the subject's name: the generator's, or a dataset's `name` (default: its folder's name)
    title: str | None = None
    citation: str | None = None
    license: str | None = None
    contact: str | None = None

    @property
    def label(self) -> str:
        """A short name for reports."""
        return self.title or self.name


renamed_field(Submission, "licence", "license")  # the British spelling, for one release


def _folder(data: dict[str, Any], key: str, base: Path, where: str, required: bool,
            wheel: bool = False) -> Path | None:
    value = data.get(key)
    if value is None:
        if required:
            raise SubmissionError(f"{where}: {key}: missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise SubmissionError(f"{where}: {key}: expected a folder path, got {value!r}")
    if value.startswith("hub:"):
        raise SubmissionError(f"{where}: {key}: Hub references are not scored directly; pull {value[4:]} first "
                              "(`histosynth pull`) and name the local folder")
    if "\0" in value:
        raise SubmissionError(f"{where}: {key}: the path holds a NUL character")
    path = (base / value).resolve()
    if wheel and path.name.endswith(".whl") and path.is_file():
        return path
    if not path.is_dir():
        raise SubmissionError(f"{where}: {key}: {path} is not a folder{' or a .whl file' if wheel else ''}")
    return path


def _check_text(data: dict[str, Any], where: str) -> None:
    """A title is one printable line; a citation is one BibTeX entry (it is printed on the page and in tables)."""
    title = data.get("title")
    if title is not None and (len(title) > MAX_TITLE or not title.isprintable() or not title.strip()):
        raise SubmissionError(f"{where}: title: one printable line of at most {MAX_TITLE} characters")
    citation = data.get("citation")
    if citation is not None:
        if len(citation) > MAX_CITATION or not BIBTEX.match(citation) or \
                any(not ch.isprintable() and ch not in "\n\t" for ch in citation):
            raise SubmissionError(f"{where}: citation: one BibTeX entry (@kind{{key, ...}}) of at most "
                                  f"{MAX_CITATION} characters")


def load_submission(path: Path | str) -> Submission:
    """Read and check a submission file (see the module docstring); errors name the file and the field."""
    where = str(Path(path).absolute())  # the name given: a link's target is not what the user typed
    try:
        path = Path(path).resolve()
    except (RuntimeError, OSError) as err:  # a symlink loop
        raise SubmissionError(f"{where}: cannot follow the link ({err})") from None
    if path.exists() and not path.is_file():
        raise SubmissionError(f"{where}: not a regular file (a submission file is a YAML file)")
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise SubmissionError(f"{where}: {path.stat().st_size} bytes; a submission file is at most {MAX_FILE_BYTES}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise SubmissionError(f"{where}: no such submission file") from err
    except OSError as err:
        raise SubmissionError(f"{where}: cannot read it ({err.strerror or err})") from err
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        raise SubmissionError(f"{where}: not valid YAML ({' '.join(str(err).split())})") from err
    if not isinstance(data, dict):
        raise SubmissionError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise SubmissionError(f"{where}: kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    if "licence" in data:  # the British spelling of `license:`, accepted for one release
        if "license" in data:
            raise SubmissionError(f"{where}: give `license:` only (`licence:` is its old spelling)")
        warn_renamed("licence", "license", f"{where}: field", stacklevel=2)
        data["license"] = data.pop("licence")
    unknown = sorted(set(data) - FIELDS[kind])
    if unknown:
        raise SubmissionError(f"{where}: unknown field(s) {unknown} for a {kind} submission; allowed: "
                              f"{', '.join(sorted(FIELDS[kind]))}")
    for key in ("title", "citation", "license", "contact"):
        if key in data and not isinstance(data[key], str):
            raise SubmissionError(f"{where}: {key}: expected text")
    _check_text(data, where)
    base = path.parent
    extra = {k: data.get(k) for k in ("title", "citation", "license", "contact")}
    if kind == "dataset":
        dataset = _folder(data, "dataset", base, where, True)
        name = data.get("name", dataset.name if dataset else None)
        try:
            check_name(name, f"{where}: name")
        except InputError as err:
            raise SubmissionError(f"{err}{'' if 'name' in data else ' (set `name:`; the folder name is not one)'}") from None
        return Submission("dataset", path, dataset=dataset, name=name, **extra)
    name = data.get("generator")
    try:
        check_name(name, f"{where}: generator")
    except InputError as err:
        raise SubmissionError(f"{err}: the generator's registered name") from None
    return Submission("generator", path, generator=name, checkpoint=_folder(data, "checkpoint", base, where, True),
                      plugin=_folder(data, "plugin", base, where, False, wheel=True), name=name, **extra)
