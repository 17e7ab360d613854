"""Find, read and fingerprint encoder weights without surprises.

Resolution order: (1) an explicit local file or folder, (2) the Hugging Face cache (HF repos) / the torch hub
cache (URL weights) / the installed package, (3) a download, only when not offline. Offline means
HF_HUB_OFFLINE is set: then the network is never touched and a missing file fails at once with one
`EncoderWeightsError` saying what is missing, its license/gating, and how to get it. The user's token is
used for gated repos but never printed, logged or put into a message.

Importing this module does not import torch or huggingface_hub (they are imported when needed).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from histosynth.benchmark.encoders.meta import EncoderMeta
from histosynth.errors import UserFacingError
from histosynth.registry import import_target

if TYPE_CHECKING:
    import torch

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".torch", ".ckpt")
RANDOM_INIT = "random-init"
_TRUE = {"1", "ON", "YES", "TRUE"}
_fingerprints: dict[tuple[str, int, int], str] = {}


class EncoderWeightsError(UserFacingError, RuntimeError):
    """Weights for an encoder are missing, inaccessible or do not fit; the message says how to fix it."""


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE asks for no network (read at call time, so tests may set it late)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().upper() in _TRUE
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def resolve_token(token: str | None = None) -> str | None:
    """The token to use for gated repos: the argument, else HF_TOKEN, else the one saved by `huggingface-cli login`."""
    if token:
        return token
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file must not turn into a different error
        return None


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder (where `load_state_dict_from_url` caches URL weights)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def how_to_get(meta: EncoderMeta) -> str:
    """Where `meta`'s weights come from, their license/gating, and the ways to provide them."""
    terms = f"license {meta.license}" + (", gated" if meta.gated else "")
    if meta.weights_kind == "hf":
        files = " or ".join(meta.weights_files)
        text = f"Hugging Face repo {meta.weights_source!r} (file {files}; {terms}). "
        if meta.gated:
            text += (
                f"Request access and accept the terms at https://huggingface.co/{meta.weights_source}, then log in "
                "(`huggingface-cli login`, or set HF_TOKEN / pass token=...). "
            )
        return text + (
            "Fill the Hugging Face cache by loading once with HF_HUB_OFFLINE unset, or download the file and pass "
            "its path (weights=/path/to/file or folder)."
        )
    if meta.weights_kind == "url":
        name = meta.weights_source.rsplit("/", 1)[-1]
        return (
            f"URL {meta.weights_source} ({terms}). Load once with HF_HUB_OFFLINE unset to download it into the torch "
            f"hub cache ({torch_hub_checkpoints() / name}), or download it yourself and pass its path "
            "(weights=/path/to/file)."
        )
    package = meta.weights_source.split(":", 1)[0].split(".", 1)[0]
    return f"the installed Python package {package!r} ({terms}); reinstall it, or pass the file's path (weights=...)."


def _fail(meta: EncoderMeta, what: str, token: str | None = None) -> EncoderWeightsError:
    message = f"encoder {meta.name!r}: {what}. Weights: {how_to_get(meta)}"
    return EncoderWeightsError(scrub(message, token))


def scrub(text: str, token: str | None) -> str:
    """`text` with the token (and anything that looks like an HF token) replaced by '***'."""
    if token:
        text = text.replace(token, "***")
    return re.sub(r"\bhf_[A-Za-z0-9]{20,}\b", "***", text)


def _from_folder(meta: EncoderMeta, folder: Path) -> Path:
    names = list(meta.weights_files)
    if meta.weights_kind == "url":
        names.append(meta.weights_source.rsplit("/", 1)[-1])
    for name in names:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) == 1:
        return found[0]
    listing = ", ".join(p.name for p in found) or "no weight files"
    raise _fail(meta, f"folder {folder} has {listing}; expected one of {names or list(WEIGHT_SUFFIXES)}")


def _hf_cached(meta: EncoderMeta, cache_dir: str | Path | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for repo in (meta.weights_source, *meta.weights_aliases):
        for name in meta.weights_files:
            hit = try_to_load_from_cache(repo, name, cache_dir=cache_dir)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    return None


def _hf_download(meta: EncoderMeta, token: str | None, cache_dir: str | Path | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError

    for name in meta.weights_files:
        try:
            return Path(hf_hub_download(meta.weights_source, name, token=token, cache_dir=cache_dir))
        except EntryNotFoundError:
            continue
        except GatedRepoError:
            state = "a token was given" if token else "no token was found"
            raise _fail(meta, f"access to the gated repo was refused ({state})", token) from None
        except RepositoryNotFoundError:
            state = "with the given token" if token else "without a token"
            raise _fail(meta, f"the repo was not found or is not accessible {state}", token) from None
        except Exception as error:  # network, disk, HTTP: one clear message, no retry loop of our own
            raise _fail(meta, f"download failed ({type(error).__name__}: {error})", token) from None
    raise _fail(meta, f"none of {list(meta.weights_files)} exists in the repo", token)


def _url_weights(meta: EncoderMeta) -> Path:
    name = meta.weights_source.rsplit("/", 1)[-1]
    target = torch_hub_checkpoints() / name
    if target.is_file():
        return target
    if hub_offline():
        raise _fail(meta, f"{name} is not in the torch hub cache and HF_HUB_OFFLINE is set (no download attempted)")
    from torch.hub import download_url_to_file

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_url_to_file(meta.weights_source, str(target), progress=True)  # writes a temp file, then renames
    except Exception as error:
        raise _fail(meta, f"download failed ({type(error).__name__}: {error})") from None
    return target


def resolve_weights(
    meta: EncoderMeta,
    weights: str | Path | None = None,
    token: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The local weight file for `meta`: explicit path, else cache/package, else a download unless offline."""
    if weights is not None:
        path = Path(weights).expanduser()
        if path.is_file():
            return path
        if path.is_dir():
            return _from_folder(meta, path)
        raise _fail(meta, f"the given weights path {str(path)!r} does not exist")
    if meta.weights_kind == "package":
        try:
            path = Path(import_target(meta.weights_source)())  # type: ignore[operator]
        except ImportError as error:
            raise _fail(meta, f"the package is not installed ({error})") from None
        if not path.is_file():
            raise _fail(meta, f"the package's weight file {path} is missing")
        return path
    if meta.weights_kind == "url":
        return _url_weights(meta)
    cached = _hf_cached(meta, cache_dir)
    if cached is not None:
        return cached
    if hub_offline():
        raise _fail(meta, "not in the Hugging Face cache and HF_HUB_OFFLINE is set (no download attempted)")
    token = resolve_token(token)
    return _hf_download(meta, token, cache_dir)


def describe_weights(meta: EncoderMeta, path: str | Path | None, user_given: bool, fingerprint: str) -> str:
    """Which weights a result was computed with, in words: the catalog's own weights, or the user's file.

    A user's file is only called the release file when its sha256 starts with the hash prefix that torch hub
    file names carry (`name-<sha256 prefix>.pth`); otherwise it is described as what it is, a local file.
    """
    if path is None:
        return "random initialization (no weights file)"
    default = meta.weights_label or f"{meta.weights_kind} {meta.weights_source}"
    if not user_given:
        return f"{default} ({meta.weights_source})" if meta.weights_label else default
    text = f"user-supplied file {Path(path).name} ({fingerprint})"
    if meta.weights_kind == "url":
        release = meta.weights_source.rsplit("/", 1)[-1]
        prefix = re.search(r"-([0-9a-f]{8,64})\.", release)
        if prefix and fingerprint.startswith(f"sha256:{prefix.group(1)}"):
            return f"{text}, the release file {release}: {default}"
    return f"{text}, not the catalog's weights ({default})"


def weights_fingerprint(path: str | Path | None) -> str:
    """'sha256:<hex>' of a weight file (for result provenance), or 'random-init' for None.

    Files in the Hugging Face cache are stored as blobs named by their sha256 (LFS), so that name is used
    without reading multi-GB files; other files are hashed once per (path, size, mtime).
    """
    if path is None:
        return RANDOM_INIT
    real = Path(path).resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return f"sha256:{real.name}"
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    if key not in _fingerprints:
        digest = hashlib.sha256()
        with open(real, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _fingerprints[key] = f"sha256:{digest.hexdigest()}"
    return _fingerprints[key]


def read_state_dict(path: str | Path, meta: EncoderMeta | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or torch pickle file (loaded with weights_only=True), unwrapped from
    {'state_dict': ...} / {'model': ...} containers."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        what = f"could not read weight file {path} ({type(error).__name__}: {error})"
        if meta is not None:
            raise _fail(meta, what) from None
        raise EncoderWeightsError(what) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise EncoderWeightsError(f"weight file {path} does not hold a flat name -> tensor state dict")
    return dict(state)
