"""Errors caused by the user's input (config, files, checkpoints), and how a command reports them: one clear message
naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from omegaconf import DictConfig

log = logging.getLogger("fmnist")


class UserError(Exception):
    """Bad input that the user can fix; the message names the problem and the fix."""


class DataError(UserError):
    """A data file is missing, truncated, corrupt or of the wrong kind."""


class ConfigError(UserError):
    """A config value or key that cannot work (fmnist.utils.config_check)."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, unsafe or of the wrong kind."""


@contextmanager
def values_of(key: str, node: Mapping, accepts: str | None = None) -> Iterator[None]:
    """Turn the ValueError torch raises for a value of config node `key` (its types were checked before training)
    into a ConfigError that names the node's values."""
    try:
        yield
    except ValueError as error:
        given = " ".join(f"{key}.{k}={v}" for k, v in dict(node).items() if not str(k).startswith("_"))
        accepts = accepts or node.get("_target_")
        raise ConfigError(f"{key}: {error} (given: {given}); pass values {accepts} accepts.") from error


def config_int(cfg: Any, key: str, minimum: int | None = None, where: str = "") -> int:
    """cfg[key] as an int; UserError naming the key (after `where`, e.g. "metrics.") when it is not a whole number
    (or below `minimum`)."""
    value = cfg.get(key)
    key = where + key
    try:
        number = int(value)
        if number != value and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            raise ValueError  # 2.5 would be truncated silently
    except (TypeError, ValueError):
        raise UserError(f"{key}={value}: expected a whole number.") from None
    if minimum is not None and number < minimum:
        raise UserError(f"{key}={value} must be at least {minimum}.")
    return number


def find_user_error(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`, also when Hydra's instantiate wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_user_errors(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task(cfg)`; a UserError ends a single run with its message and exit code 2, no traceback wall.
    In a multirun, errors propagate so the sweeper records the trial as failed and goes on."""
    from hydra.errors import InstantiationException  # here: every module imports this file, not all of them Hydra

    try:
        return task(cfg)
    except (UserError, InstantiationException) as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise user_error from None
        exit_for_user_error(user_error)


def exit_for_user_error(error: Exception, logger: logging.Logger = log) -> NoReturn:
    """The end of a command that a user error stopped (every entry point and the sweeper): one message naming the
    problem and the fix, exit code 2, no traceback."""
    logger.error(f"{type(error).__name__}: {error}")
    sys.exit(2)
