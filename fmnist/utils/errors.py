"""Errors caused by the user's input (config, files, checkpoints), shown as one clear message without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input that the user can fix; the message names the problem and the fix."""


class DataError(UserError):
    """A data file is missing, truncated, corrupt or of the wrong kind."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe or of the wrong kind."""
