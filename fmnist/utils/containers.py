"""Config values as plain Python: what a model stores as hyperparameters must not hold OmegaConf containers (a
checkpoint then needs OmegaConf to load, and interpolations would resolve late)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from fmnist.utils.errors import UserError


def plain(value: Any) -> Any:
    """OmegaConf containers -> resolved dicts/lists; anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def as_list(value: Any, key: str) -> list:
    """A config value that takes one item or a list (`splits=test` or `splits=[val,test]`) as a list: a bare string
    would otherwise become its characters. A mapping, null or nested lists are refused, naming `key`; the caller checks
    the names."""
    items = list(plain(value)) if isinstance(value, ListConfig | list | tuple) else [value]
    if any(isinstance(item, DictConfig | ListConfig | dict | list | tuple) or item is None for item in items):
        raise UserError(f"{key}={value}: expected a name or a list of names, e.g. {key}=[a,b].")
    return items
