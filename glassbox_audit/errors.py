"""Errors the tool reports to users as one clear line.

Every error raised for bad input names the file, folder or configuration key at fault, so
the CLI can print ``str(error)`` alone and exit non-zero without a traceback.
"""

import errno

__all__ = ["RESOURCE_ERRNOS", "GlassBoxError", "ConfigError", "DataError", "ModelError", "StoreError"]

# Write failures of the machine rather than of the program (a full disk or quota, a read-only
# or failing drive, missing permissions): reported as one line naming the file.
RESOURCE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS, errno.EACCES,
                             errno.EPERM})


class GlassBoxError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 2

    def __init__(self, message: object = "", *args: object):
        # A non-UTF-8 file name arrives as lone surrogates, which a UTF-8 terminal, log file
        # or database refuses: the message names such bytes as \xNN so it can always be shown.
        text = str(message)
        try:
            text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(text, *args)


class ConfigError(GlassBoxError):
    """A configuration key or value is wrong (unknown key, wrong type, impossible value)."""


class DataError(GlassBoxError):
    """An input image, mask or folder cannot be used."""


class ModelError(GlassBoxError):
    """A stored model is missing, corrupt or does not match the configuration."""


class StoreError(GlassBoxError):
    """The metrics database or an audit version folder cannot be written or read."""
