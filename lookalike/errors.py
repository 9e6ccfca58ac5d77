"""Errors a user can act on.

Everything the CLI and the server report to a person derives from :class:`LookalikeError`, whose message is one
line that says what went wrong and what to do. Anything else escaping is a bug, and the CLI shows it as such.
"""


class LookalikeError(Exception):
    """A problem with the user's input or environment, reported as one line (no traceback)."""


class ConfigError(LookalikeError):
    """A setting out of range or of the wrong kind. The message names the setting as Python spells it
    (``batch_size``); ``setting`` lets a face respell it (the CLI says ``--batch-size``)."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class ImageError(LookalikeError):
    """One image could not be used; indexing skips it and reports why, a query fails with this message."""


class IndexMissingError(LookalikeError):
    """There is no index where one was expected."""


class IndexMismatchError(LookalikeError):
    """The index was built with another model or pooling than the one asked for."""


class ModelUnavailableError(LookalikeError):
    """A backbone is unknown or its weights are not on this machine."""
