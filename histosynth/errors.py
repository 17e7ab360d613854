"""The one family of errors that are the user's to fix (bad input files, bad flags, unknown names, missing
weights): the CLI prints their message as one `error: ...` line, exit 2. Anything else is a bug and keeps its
traceback. Subclasses keep ValueError / KeyError / FileNotFoundError as a second base where callers catch those."""


class UserFacingError(Exception):
    """An error whose message says what is wrong and how to fix it."""


class InputError(UserFacingError, ValueError):
    """A file, flag or value the user gave is malformed, out of range or too small (too few samples)."""


class UnknownNameError(UserFacingError, KeyError):
    """A name the user gave is not among the known ones; the message lists what is close."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingInputError(UserFacingError, FileNotFoundError):
    """A path the user named does not exist."""


class OutputExistsError(UserFacingError, FileExistsError):
    """The output path already exists and the user did not ask to overwrite it."""
