"""What a type hint accepts from a config, in words: `int | None` is 'a whole number or null', and `true` is no number.
fmnist.utils.config_check checks every `_target_` node's values with it."""

from __future__ import annotations

import collections.abc as abc
import os
import types
import typing
from enum import Enum
from typing import Any, Literal, Union

from omegaconf import DictConfig, ListConfig

SCALARS = {bool: bool, int: int, float: int | float, str: str | int}  # what the config may give for each hint
WORDS = {int: "a whole number", float: "a number", bool: "true or false", str: "a string", type(None): "null",
         dict: "a mapping", abc.Mapping: "a mapping", list: "a list", tuple: "a list", abc.Sequence: "a list",
         abc.Iterable: "a list"}  # fmt: skip
PLURALS = {int: "whole numbers", float: "numbers", str: "strings", bool: "true/false values"}


def describe(hint: Any) -> str:
    """A type hint in words: `int | None` -> 'a whole number or null'."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        words = [describe(a) for a in typing.get_args(hint)]
        return " or ".join(dict.fromkeys([w for w in words if w[0].islower()] or words))  # not 'a number or Tensor'
    origin, args = typing.get_origin(hint), [a for a in typing.get_args(hint) if a is not Ellipsis]
    if WORDS.get(origin) == "a list" and len(args) == 1 and args[0] in PLURALS:
        return f"a list of {PLURALS[args[0]]}"  # widths=[a,b]: a list, but of the wrong things
    return WORDS.get(origin or hint, getattr(hint, "__name__", str(hint)))


def accepts(hint: Any, value: Any) -> bool:
    """Whether `value` (from the config) can be passed where `hint` is expected. Lenient where a config cannot be
    judged (nested `_target_` nodes, classes built from mappings, Literal values the code resolves first)."""
    if isinstance(value, DictConfig) and "_target_" in value:
        return True  # instantiated into an object before the call
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if hint is Any or isinstance(hint, typing.TypeVar) or origin is Literal or (origin or hint) is abc.Callable:
        return True  # Literal: e.g. precision=auto is resolved before the Trainer sees it, which then checks it
    if hint is type(None) or value is None:
        return hint is type(None) and value is None
    if hint in SCALARS:  # true is no number; an int is a float; `name=2024` is a string
        return isinstance(value, SCALARS[hint]) and (hint is bool or not isinstance(value, bool))
    container = origin or hint
    if not isinstance(container, type):
        return True  # a typing construct this check does not know: the target judges
    if issubclass(container, abc.Mapping):
        return isinstance(value, DictConfig | dict)
    if issubclass(container, abc.Iterable) and not issubclass(container, str):
        if not isinstance(value, ListConfig | list | tuple):
            return isinstance(value, DictConfig) and container is abc.Iterable
        element = Union[tuple(a for a in args if a is not Ellipsis)] if args else Any  # noqa: UP007
        return all(accepts(element, v) for v in value)
    if isinstance(value, (container, DictConfig, ListConfig)):
        return True
    return isinstance(value, str) and issubclass(container, os.PathLike | Enum)  # a path or an enum member's name
