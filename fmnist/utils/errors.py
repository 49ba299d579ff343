"""Errors caused by the user's input (config, files, checkpoints), shown as one clear message without a traceback."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """Bad input that the user can fix; the message names the problem and the fix."""


class DataError(UserError):
    """A data file is missing, truncated, corrupt or of the wrong kind."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe or of the wrong kind."""


def config_int(cfg: Any, key: str, minimum: int | None = None) -> int:
    """cfg[key] as an int; UserError naming the key when it is not a whole number (or below `minimum`)."""
    value = cfg.get(key)
    try:
        number = int(value)
        if number != value and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            raise ValueError  # 2.5 would be truncated silently
    except (TypeError, ValueError):
        raise UserError(f"{key}={value}: expected a whole number.") from None
    if minimum is not None and number < minimum:
        raise UserError(f"{key}={value} must be at least {minimum}.")
    return number
