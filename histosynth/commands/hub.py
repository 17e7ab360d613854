"""`histosynth publish` and `histosynth pull`: versioned datasets on the Hugging Face Hub (see histosynth.hub)."""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from histosynth import options as opt
from histosynth.cli import CommandError

AUTH_HINT = "log in with `hf auth login` or set HF_TOKEN (the token itself is never printed)"


def _hub_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the Hub client's HTTP and connection errors into one-line `error:` messages (exit code 2)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from huggingface_hub import constants
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return handler(args)
        except HfHubHTTPError as err:
            status = err.response.status_code if err.response is not None else None
            hint = f" ({AUTH_HINT})" if status in (401, 403) else ""
            raise CommandError(f"the Hub refused the request{hint}: {str(err).splitlines()[0]}") from err
        except (ConnectionError, TimeoutError) as err:
            raise CommandError(f"cannot reach the Hub at {constants.ENDPOINT}: {err}") from err
        except OSError as err:
            if type(err).__module__.startswith(("httpx", "huggingface_hub")):
                raise CommandError(f"cannot reach the Hub at {constants.ENDPOINT}: {err}") from err
            raise

    return run


@_hub_errors
def run_publish(args: argparse.Namespace) -> int:
    from histosynth.hub import publish

    publish(args.path, args.repo, args.version, private=args.private, dry_run=args.dry_run,
            log=functools.partial(print, flush=True))
    return 0


@_hub_errors
def run_pull(args: argparse.Namespace) -> int:
    from histosynth.hub import list_versions, parse_target, pull

    repo, version = parse_target(args.target)
    if version is None:
        known = ", ".join(map(str, list_versions(repo))) or "none yet"
        raise CommandError(f"name the version to pull: {repo}@vX.Y.Z (versions: {known})")
    pull(repo, version, args.out, overwrite=args.overwrite, log=functools.partial(print, flush=True))
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    publish = verbs.add_parser(
        "publish", help="release a dataset folder as a tagged version on the Hugging Face Hub",
        description="Validate a dataset folder (card, every shard, every row), then upload it to the dataset repo "
        "ORG/NAME in one commit and tag it VERSION. Published versions are immutable: an existing VERSION is refused "
        "before anything is uploaded. A rerun after an interruption finishes the same version. Authentication: "
        f"{AUTH_HINT}; HF_ENDPOINT selects another Hub.",
    )
    publish.add_argument("path", type=opt.existing_folder, metavar="DIR", help="dataset folder (README.md + data/*.parquet)")
    publish.add_argument("--repo", required=True, metavar="ORG/NAME", help="dataset repo to publish to (created if missing)")
    publish.add_argument("--version", required=True, metavar="vX.Y.Z", help="version tag, semver with a leading v")
    publish.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    publish.add_argument("--dry-run", action="store_true", help="validate and print what would be uploaded; write nothing")
    publish.set_defaults(handler=run_publish)

    pull = verbs.add_parser(
        "pull", help="download a published dataset version to a folder",
        description="Download ORG/NAME@vX.Y.Z into the Hugging Face cache (reused offline afterwards, with "
        "HF_HUB_OFFLINE=1) and copy it to --out, which appears complete or not at all. In Python: "
        "datasets.load_dataset('ORG/NAME', revision='vX.Y.Z') or histosynth.hub.load_samples(...).",
    )
    pull.add_argument("target", metavar="ORG/NAME@vX.Y.Z", help="dataset repo and version")
    pull.add_argument("--out", required=True, type=opt.output_folder, help="folder to write")
    pull.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    pull.set_defaults(handler=run_pull)
