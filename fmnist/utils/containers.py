"""Config values as plain Python: what a model stores as hyperparameters must not hold OmegaConf containers (a
checkpoint then needs OmegaConf to load, and interpolations would resolve late)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(value: Any) -> Any:
    """OmegaConf containers -> resolved dicts/lists; anything else unchanged."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value
