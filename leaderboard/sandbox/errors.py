"""Why a sandboxed run could not happen: never a failure of the submission itself."""

from __future__ import annotations

from histosynth.errors import UserFacingError

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`, or `make sandbox-deps` as "
                "root; Fedora: `sudo dnf install bubblewrap`)")


class SandboxUnavailable(UserFacingError, RuntimeError):
    """This machine cannot isolate submitted code (no bubblewrap, no user namespaces, no way to bound processes);
    submissions are then never run at all."""


class SandboxError(UserFacingError, RuntimeError):
    """The sandbox could not be set up for one run (not a failure of the submission)."""
