"""Base class of errors that are the user's to fix (missing weights, bad input files): the CLI prints their
message without a traceback."""


class UserFacingError(Exception):
    """An error whose message says what is wrong and how to fix it."""
