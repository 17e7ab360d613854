"""Versioned datasets on the Hugging Face Hub: publish a dataset folder as a tagged version, pull one back.

A dataset folder (histosynth.disk) already has the Hub repo layout, so a version is exactly that folder:

- `publish` validates the folder first (card, every shard readable, every row a valid Sample), refuses a version
  tag that exists (published versions are immutable) before writing anything, then makes ONE `create_commit` of
  the folder on top of the main head it inspected (`parent_commit`, so a concurrent push fails the commit instead
  of being overwritten) and tags it with `create_tag`. Files on main that the folder no longer has are deleted in
  the same commit, so main is always exactly one version.
- Resuming: LFS blobs uploaded by an interrupted run are already on the server and are not sent again; if the
  commit landed but the tag did not, main's files have the folder's hashes and the rerun tags that commit
  instead of committing again.
- `pull` downloads a tag with `snapshot_download` into the HF cache (so it works offline afterwards) and copies
  it atomically to a folder; `load_samples` streams Samples through `datasets.load_dataset(revision=tag)`.

The token comes from huggingface_hub (HF_TOKEN or `hf auth login`); nothing here reads or prints it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NoReturn

import pyarrow as pa
from datasets import Features
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, RepoFile, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from tqdm.auto import tqdm

from histosynth.atomic import atomic_directory
from histosynth.data_cards.card import validate_card
from histosynth.data_cards.model import Version
from histosynth.disk import DATA_DIR, SIDECAR_FILES, DatasetFormatError, open_shard, read_metadata, shard_paths
from histosynth.errors import InputError, OutputExistsError
from histosynth.rows import row_to_sample
from histosynth.schema import Sample, SampleValidationError

REPO_TYPE = "dataset"
CARD = "README.md"
IGNORED = (".gitattributes",)  # the repo keeps its own (LFS rules); never uploaded, never deleted
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_HASH_CHUNK = 8 * 2**20

Log = Callable[[str], None]


class PublishError(InputError):
    """A publish or pull was refused or failed; the message says why and what to do. Nothing is left half-done."""


@dataclass(frozen=True)
class LocalFile:
    """One file of a dataset folder, with the two hashes the Hub compares (LFS sha256, git blob sha1)."""

    path: str  # in the repo, posix
    local: Path
    size: int
    sha256: str
    git_sha1: str

    def matches(self, remote: RepoFile) -> bool:
        """True if the remote file has exactly this content."""
        if remote.lfs is not None:
            return remote.lfs.sha256 == self.sha256
        return remote.blob_id == self.git_sha1


@dataclass
class CheckedFolder:
    """A dataset folder that passed `validate_folder`: its files and sample counts."""

    folder: Path
    files: list[LocalFile]
    split_sizes: dict[str, int]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


@dataclass
class PublishResult:
    """What `publish` did (or, with dry_run, would do)."""

    repo: str
    version: Version
    files: list[LocalFile]
    uploads: list[str]  # paths new or changed relative to main
    deletions: list[str]  # paths on main that the folder does not have
    commit: str | None = None  # the tagged commit (None for a dry run)
    created_repo: bool = False
    reused_commit: bool = False  # main already held the folder (an interrupted run's commit): tagged, no new commit
    dry_run: bool = False


@dataclass
class PullResult:
    """A pulled version: where it is and which commit it is."""

    repo: str
    version: Version
    commit: str
    path: Path
    files: list[str] = field(default_factory=list)


def check_repo_id(repo: str) -> str:
    """`repo` if it looks like ORG/NAME, else a ValueError that says so."""
    if not _REPO_ID.fullmatch(repo or ""):
        raise InputError(f"repo must look like ORG/NAME, got {repo!r}")
    return repo


def parse_target(text: str) -> tuple[str, Version | None]:
    """Split "ORG/NAME@vX.Y.Z" into (repo, version); the version part is optional."""
    repo, sep, version = text.partition("@")
    return check_repo_id(repo), Version.parse(version) if sep else None


def file_hashes(path: Path) -> tuple[str, str]:
    """(sha256, git blob sha1) of a file, in one read."""
    size = path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            sha256.update(chunk)
            sha1.update(chunk)
    return sha256.hexdigest(), sha1.hexdigest()


def _card_splits(folder: Path, card) -> dict[str, tuple[str, int | None]]:
    """split -> (data_files pattern, num_examples declared in dataset_info) from the card's default config."""
    files = MetadataConfigs.from_dataset_card_data(card.data)["default"]["data_files"]
    if not (isinstance(files, list) and all(isinstance(e, dict) and isinstance(e.get("path"), str) for e in files)):
        raise DatasetFormatError(f"{folder / CARD}: the default config's data_files must list one {{split, path}} "
                                 "per split, as histosynth writes them")
    info = DatasetInfosDict.from_dataset_card_data(card.data)["default"]
    declared = {name: split.num_examples for name, split in (info.splits or {}).items()}
    return {e["split"]: (e["path"], declared.get(e["split"])) for e in files}


def validate_folder(folder: Path | str, progress: bool = True) -> CheckedFolder:
    """Check that a folder is a complete, valid histosynth dataset before it is published.

    The card must validate (histosynth.data_cards.card.validate_card); the folder may hold only README.md and the
    data/ shards its configs name, every split complete (-of-N); each shard's features must equal the card's;
    every row is read (streamed, one row group at a time) and must decode to a valid Sample of the card's
    schemas; row counts must equal the card's. Raises DatasetFormatError / CardValidationError naming the file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a folder")
    meta = read_metadata(folder)
    try:
        card = validate_card((folder / CARD).read_text(encoding="utf-8"))
    except ValueError as err:
        raise DatasetFormatError(f"{folder / CARD}: {err}") from err
    splits = _card_splits(folder, card)
    paths = sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    relative = [p.relative_to(folder).as_posix() for p in paths]
    unexpected = [r for r in relative if r != CARD and r not in IGNORED and r not in SIDECAR_FILES
                  and not (r.startswith(f"{DATA_DIR}/") and r.endswith(".parquet") and r.count("/") == 1)]
    if unexpected:
        raise DatasetFormatError(f"{folder}: unexpected files {unexpected}; a dataset folder holds README.md, "
                                 f"{DATA_DIR}/*.parquet and optionally {', '.join(SIDECAR_FILES)} (publish uploads exactly that)")
    shards = {split: shard_paths(folder, split) for split in splits}
    orphans = [r for r in relative if r.endswith(".parquet") and not any(fnmatch.fnmatch(r, pat) for pat, _ in splits.values())]
    if orphans:
        raise DatasetFormatError(f"{folder}: shards {orphans} belong to no split of the card's configs ({sorted(splits)})")
    features = DatasetInfosDict.from_dataset_card_data(card.data)["default"].features
    schemas = {"tissue": meta["histosynth"].get("tissue_schema"), "nuclei": meta["histosynth"].get("nuclei_schema")}
    split_sizes: dict[str, int] = {}
    footers = {s: [open_shard(p) for p in paths_] for s, paths_ in shards.items()}
    total = sum(f.metadata.num_rows for files in footers.values() for f in files)
    with tqdm(total=total, desc="validating rows", unit="row", disable=not progress, leave=False) as bar:
        for split, files in footers.items():
            count = 0
            for path, parquet in zip(shards[split], files, strict=False):
                name = path.relative_to(folder).as_posix()
                if Features.from_arrow_schema(parquet.schema_arrow) != features:
                    raise DatasetFormatError(f"{folder / name}: its columns/features differ from the card's dataset_info")
                try:
                    for group in range(parquet.num_row_groups):
                        for row in parquet.read_row_group(group).to_pylist():
                            _check_row(row, f"{folder / name} row {count}", schemas)
                            count += 1
                            bar.update()
                except (pa.ArrowInvalid, OSError) as err:
                    raise DatasetFormatError(f"{folder / name}: unreadable parquet shard ({err})") from err
            declared = splits[split][1]
            if declared is not None and declared != count:
                raise DatasetFormatError(f"{folder / CARD}: declares {declared} {split} samples but the shards hold {count}")
            split_sizes[split] = count
    files = [LocalFile(r, p, p.stat().st_size, *file_hashes(p)) for r, p in zip(relative, paths, strict=False) if r not in IGNORED]
    return CheckedFolder(folder, files, split_sizes)


def _check_row(row: dict, where: str, schemas: dict[str, str | None]) -> None:
    """A raw parquet row must decode to a valid Sample whose schemas are the card's."""
    try:
        sample = row_to_sample(row)
    except (SampleValidationError, KeyError, TypeError, ValueError) as err:
        raise DatasetFormatError(f"{where}: not a valid Sample ({err})") from err
    used = {"tissue": sample.tissue_schema, "nuclei": sample.nuclei.schema if sample.nuclei is not None else None}
    for label, name in used.items():
        if name is not None and name != schemas[label]:
            raise DatasetFormatError(f"{where}: {label} schema {name!r} but the card declares {schemas[label]!r}")


def list_versions(repo: str, api: HfApi | None = None) -> dict[Version, str]:
    """The published versions of a dataset repo (its vX.Y.Z tags) -> tagged commit, oldest first."""
    refs = (api or HfApi()).list_repo_refs(check_repo_id(repo), repo_type=REPO_TYPE)
    return dict(sorted((Version.parse(t.name), t.target_commit) for t in refs.tags if Version.is_version(t.name)))


def _remote_files(api: HfApi, repo: str, revision: str) -> dict[str, RepoFile]:
    tree = api.list_repo_tree(repo, revision=revision, recursive=True, repo_type=REPO_TYPE)
    return {f.path: f for f in tree if isinstance(f, RepoFile)}


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def publish(
    folder: Path | str,
    repo: str,
    version: str | Version,
    private: bool = False,
    dry_run: bool = False,
    log: Log = print,
    api: HfApi | None = None,
) -> PublishResult:
    """Publish a dataset folder as version `version` (vX.Y.Z) of the dataset repo `repo` (ORG/NAME).

    Validates everything first; refuses an existing version before any write; one commit + one tag; reruns after
    an interruption finish the same version (see the module docstring). `dry_run` validates, inspects the repo
    and reports the files, writing nothing. Returns what was (or would be) done.
    """
    version = version if isinstance(version, Version) else Version.parse(version)
    check_repo_id(repo)
    checked = validate_folder(folder)
    splits = ", ".join(f"{n:,} {s}" for s, n in checked.split_sizes.items())
    log(f"validated {checked.folder}: {splits} samples in {len(checked.files)} files ({_size(checked.total_bytes)})")
    validate_card((checked.folder / CARD).read_text(encoding="utf-8"), remote=True)
    return publish_checked(checked, repo, version, f"{splits} samples", private, dry_run, log, api)


def publish_checked(
    checked: CheckedFolder,
    repo: str,
    version: Version,
    summary: str,
    private: bool = False,
    dry_run: bool = False,
    log: Log = print,
    api: HfApi | None = None,
) -> PublishResult:
    """The commit-and-tag half of `publish`, for a folder the caller has already validated (a dataset folder, or
    the leaderboard's results files): refuses an existing version, one commit, one tag, resumable. `summary` says
    what the version holds, in the commit description and tag message."""
    check_repo_id(repo)
    api = api or HfApi()
    try:
        refs = api.list_repo_refs(repo, repo_type=REPO_TYPE)
    except RepositoryNotFoundError:
        refs = None
    head, remote, versions = None, {}, {}
    if refs is not None:
        versions = {t.name: t.target_commit for t in refs.tags}
        if str(version) in versions:
            later = [str(v) for v in sorted(map(Version.parse, filter(Version.is_version, versions))) if v > version]
            hint = f"publish a new version (latest is {later[-1]})" if later else "publish a new version, e.g. " \
                   f"v{version.major}.{version.minor}.{version.patch + 1}"
            raise PublishError(f"{repo} already has version {version} (commit {versions[str(version)][:12]}); "
                               f"published versions are immutable: {hint}. Nothing was uploaded.")
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        if head is not None:
            remote = _remote_files(api, repo, head)
    local = {f.path: f for f in checked.files}
    uploads = [p for p, f in local.items() if p not in remote or not f.matches(remote[p])]
    deletions = sorted(p for p in remote if p not in local and p not in IGNORED)
    reuse = head is not None and not uploads and not deletions
    published = sorted((Version.parse(t) for t in versions if Version.is_version(t)))
    if published and version < published[-1]:
        log(f"note: {version} is older than the latest version {published[-1]}; main will hold {version}")

    result = PublishResult(repo, version, checked.files, uploads, deletions, dry_run=dry_run)
    if dry_run:
        if refs is None:
            log(f"dry run: would create the dataset repo {repo}{' (private)' if private else ''}")
        else:
            log(f"dry run: {repo} exists, main at {head[:12] if head else 'none'}, versions: {', '.join(map(str, published)) or 'none'}")
        for f in checked.files:
            state = "upload" if f.path in uploads else "unchanged on main"
            log(f"  {f.path}  {_size(f.size)}  ({state})")
        for path in deletions:
            log(f"  {path}  (delete: not in the folder)")
        action = "tag main's head" if reuse else "make one commit of these files on main and tag it"
        log(f"dry run: would {action} as {version}; nothing was uploaded")
        return result

    if refs is None:
        api.create_repo(repo, repo_type=REPO_TYPE, private=private, exist_ok=True)
        result.created_repo = True
        log(f"created dataset repo {repo}{' (private)' if private else ''}")
        head = api.dataset_info(repo).sha
        remote = _remote_files(api, repo, head)
        result.uploads = [p for p, f in local.items() if p not in remote or not f.matches(remote[p])]
        result.deletions = sorted(p for p in remote if p not in local and p not in IGNORED)
    elif private and not api.dataset_info(repo).private:
        log(f"note: {repo} exists and is public; --private does not change it")

    if reuse:
        result.commit, result.reused_commit = head, True
        same = [t for t, c in versions.items() if c == head]
        why = f"the commit of {', '.join(same)}" if same else "left by an interrupted publish"
        log(f"main already holds exactly these files (commit {head[:12]}, {why}): tagging it, no new commit")
    else:
        operations = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=str(f.local)) for f in checked.files]
        operations += [CommitOperationDelete(path_in_repo=p) for p in result.deletions]
        log(f"uploading {len(result.uploads)} of {len(checked.files)} files, deleting {len(result.deletions)}, in one commit")
        try:
            info = api.create_commit(
                repo, operations, commit_message=f"Release {version}",
                commit_description=f"histosynth publish {checked.folder.name}: {summary}",
                repo_type=REPO_TYPE, parent_commit=head,
            )
        except HfHubHTTPError as err:
            if err.response is not None and err.response.status_code == 412:
                raise PublishError(f"main of {repo} moved while publishing (someone else committed); nothing was "
                                   f"committed. Rerun to publish {version} on top of the new head.") from err
            raise
        result.commit = info.oid
        log(f"committed {info.oid[:12]}")
    try:
        api.create_tag(repo, tag=str(version), revision=result.commit, repo_type=REPO_TYPE,
                       tag_message=f"histosynth {version}: {summary}")
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code == 409:
            raise PublishError(f"{version} was tagged in {repo} by someone else while publishing; check "
                               f"`list_repo_refs` and publish a new version") from err
        raise
    log(f"tagged {version} -> {result.commit[:12]}: {repo}@{version}")
    return result


def pull(repo: str, version: str | Version, out: Path | str, overwrite: bool = False, log: Log = print) -> PullResult:
    """Download version `version` of `repo` into the HF cache and copy it atomically to the folder `out`.

    Works offline (HF_HUB_OFFLINE=1) once the version is in the cache. `out` appears complete or not at all; an
    existing `out` is refused unless `overwrite`.
    """
    version = version if isinstance(version, Version) else Version.parse(version)
    check_repo_id(repo)
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; refusing to overwrite it (pass overwrite=True / --overwrite)")
    try:
        snapshot = Path(snapshot_download(repo, repo_type=REPO_TYPE, revision=str(version)))
    except (RevisionNotFoundError, RepositoryNotFoundError, LocalEntryNotFoundError) as err:
        _refuse_unpublished(repo, version, err)
        _explain_missing(repo, version, err)
    copied = []
    with atomic_directory(out, overwrite=overwrite) as partial:
        for source in sorted(snapshot.rglob("*")):
            relative = source.relative_to(snapshot).as_posix()
            if source.is_dir() or relative in IGNORED:
                continue
            target = partial / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)  # follows the cache's symlinks to its blobs
            copied.append(relative)
        read_metadata(partial)
        card = validate_card((partial / CARD).read_text(encoding="utf-8"))
        for split in _card_splits(partial, card):
            shard_paths(partial, split)
    log(f"pulled {repo}@{version} (commit {snapshot.name[:12]}): {len(copied)} files -> {out}")
    return PullResult(repo, version, snapshot.name, out, copied)


def _refuse_unpublished(repo: str, version: Version, err: BaseException) -> None:
    """When `repo@version` could not be had and it is a planned-but-unpublished set of histosynth's registry, say so
    with the command that builds it (offline, the failed download would blame the network). A version that is on
    the Hub (one published by that command, say) is pulled like any other."""
    from histosynth.data_cards.sets import unpublished

    why = unpublished(repo, str(version))
    if why is not None:
        raise PublishError(why) from err


def _explain_missing(repo: str, version: Version, err: BaseException) -> NoReturn:
    """Raise the PublishError that says why `repo@version` could not be downloaded."""
    if isinstance(err, RevisionNotFoundError):
        try:
            known = ", ".join(map(str, list_versions(repo))) or "none"
        except HfHubHTTPError:
            known = "unknown"
        raise PublishError(f"{repo} has no version {version} (versions: {known})") from err
    if isinstance(err, RepositoryNotFoundError):
        raise PublishError(f"dataset repo {repo} not found (or private: log in with `hf auth login` or set HF_TOKEN)") from err
    raise PublishError(f"{repo}@{version} is not in the local HF cache and the Hub cannot be reached "
                       f"(offline?): pull it once while online") from err


def load_samples(repo: str, version: str | Version, split: str = "train", streaming: bool = False) -> Iterator[Sample]:
    """Samples of one split of a published version, through `datasets.load_dataset(repo, revision=version)`."""
    import datasets

    version = version if isinstance(version, Version) else Version.parse(version)
    check_repo_id(repo)
    try:
        rows = datasets.load_dataset(repo, revision=str(version), split=split, streaming=streaming)
    except Exception as err:  # datasets' not-found and offline errors vary by version; only a planned set is reworded
        _refuse_unpublished(repo, version, err)
        raise
    for row in rows:
        yield row_to_sample(row)
