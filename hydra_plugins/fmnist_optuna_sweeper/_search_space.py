"""Hydra's sweep syntax -> Optuna distributions, and a sampled value -> the override that sets it.

interval(a, b)              FloatDistribution(a, b)
int(interval(a, b))         IntDistribution(a, b)          (both ends included)
tag(log, interval(a, b))    ... with log=True
range(a, b, s)              Int/FloatDistribution(a, last, step=s): exactly the values Hydra's range() lists
                            (`b` excluded, like Python's range)
choice(x, y, ...) / x,y     CategoricalDistribution; lists, dicts and strings that need quoting are kept as
                            their override text ("[[32,64],[128]]"), since Optuna's choices must be scalars
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    QuotedString,
    RangeSweep,
    ValueType,
)
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from fmnist.utils.errors import UserError

SCALAR = (bool, int, float, str, type(None))


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution]  # parameter (config key) -> distribution
    fixed: list[str]  # plain overrides every trial gets (from params without a sweep, and the command line)
    choice_text: dict[str, dict[Any, str]]  # categorical parameter -> {Optuna choice: override text}
    prefix: dict[str, str] = field(default_factory=dict)  # "+" / "++" of a swept key the config lacks

    def overrides(self, params: dict[str, Any]) -> list[str]:
        """The overrides that put a trial's sampled params into the job's config."""
        out = []
        for key, value in params.items():
            text = self.choice_text.get(key, {}).get(value)
            out.append(f"{self.prefix.get(key, '')}{key}={text if text is not None else format_number(value)}")
        return out

    def grid(self) -> dict[str, list[Any]]:
        """The GridSampler's search space: every value of every parameter (choice() and range() only)."""
        space = {}
        for key, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                space[key] = list(dist.choices)
            elif isinstance(dist, IntDistribution):
                space[key] = list(range(dist.low, dist.high + 1, dist.step))
            elif dist.step is not None:
                n = round((dist.high - dist.low) / dist.step) + 1
                space[key] = [round(dist.low + i * dist.step, 12) for i in range(n)]
            else:
                raise UserError(
                    f"hydra.sweeper.params.{key}: the grid sampler needs a finite set of values; "
                    "use choice(...) or range(...) instead of interval(...)."
                )
        return space


def format_number(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # round-trips exactly, e.g. 0.0012345678901234567 or 1e-05
    return str(value)


def _plain(value: Any) -> Any:
    if isinstance(value, QuotedString):
        return value.text
    return value


def _categorical(key: str, sweep: ChoiceSweep, override: Override) -> tuple[CategoricalDistribution, dict[Any, str]]:
    texts = list(override.sweep_string_iterator())  # each choice as override text, quoted where needed
    values = [_plain(v) for v in sweep.list]
    if sweep.shuffle:
        raise UserError(f"{key}: shuffle() has no meaning for an Optuna search; drop it.")
    if all(isinstance(v, SCALAR) for v in values) and len({(type(v), v) for v in values}) == len(values):
        choices = values
    else:
        choices = texts  # lists/dicts: Optuna stores the override text itself
    if len(set(map(str, choices))) != len(choices):
        raise UserError(f"{key}: choice(...) lists a value twice.")
    return CategoricalDistribution(choices), dict(zip(choices, texts, strict=True))


def _numeric(key: str, sweep: IntervalSweep | RangeSweep) -> BaseDistribution:
    log = "log" in sweep.tags
    unknown = sweep.tags - {"log"}
    if unknown:
        raise UserError(f"{key}: unknown tag(s) {sorted(unknown)}; the only tag understood is `log`.")
    if isinstance(sweep, IntervalSweep):
        low, high = sweep.start, sweep.end
        if low is None or high is None or not low < high:
            raise UserError(f"{key}: interval(low, high) needs low < high, got interval({low}, {high}).")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    if sweep.shuffle:
        raise UserError(f"{key}: shuffle() has no meaning for an Optuna search; drop it.")
    values = list(sweep.range())
    if len(values) < 2 or sweep.step <= 0:
        raise UserError(f"{key}: range({sweep.start}, {sweep.stop}, {sweep.step}) must list at least 2 values.")
    integers = all(isinstance(v, int) for v in (sweep.start, sweep.stop, sweep.step))
    if log and not (integers and sweep.step == 1):
        raise UserError(f"{key}: a log-scaled range() must be integers with step 1 (Optuna's rule); "
                        "use tag(log, interval(...)) for floats.")  # fmt: skip
    if integers:
        return IntDistribution(values[0], values[-1], step=int(sweep.step), log=log)
    return FloatDistribution(float(values[0]), float(values[-1]), step=float(sweep.step), log=log)


def parse_search_space(params: dict[str, Any] | None, arguments: list[str]) -> SearchSpace:
    """`hydra.sweeper.params` (key -> sweep expression) plus the command line's overrides (which win)."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    parser = OverridesParser.create()
    by_key: dict[str, Override] = {}
    try:
        overrides = parser.parse_overrides(lines)
    except OverrideParseException as e:
        raise UserError(f"hydra.sweeper.params or a command-line sweep: {e}") from None
    for override in overrides:
        by_key[override.key_or_group] = override  # a later override of the same key replaces the earlier
    distributions, fixed, choice_text, prefix = {}, [], {}, {}
    for key, override in by_key.items():
        value = override.value()
        if override.value_type is ValueType.GLOB_CHOICE_SWEEP:
            raise UserError(f"{key}: glob() is not supported by the Optuna sweeper; list the options with choice().")
        if not override.is_sweep_override():
            fixed.append(override.input_line or f"{override.get_key_element()}={override.get_value_element_as_str()}")
        elif override.is_delete():
            raise UserError(f"{override.input_line}: a deletion (~) cannot be swept.")
        elif isinstance(value, ChoiceSweep):
            distributions[key], choice_text[key] = _categorical(key, value, override)
        elif isinstance(value, IntervalSweep | RangeSweep):
            distributions[key] = _numeric(key, value)
        else:
            raise UserError(f"{override.input_line}: unsupported sweep.")
        if key in distributions and (override.is_add() or override.is_force_add()):
            prefix[key] = "++" if override.is_force_add() else "+"
    return SearchSpace(distributions, fixed, choice_text, prefix)


def describe(dist: BaseDistribution) -> str:
    """One line per parameter for the sweep log."""
    if isinstance(dist, CategoricalDistribution):
        return f"choice {list(dist.choices)}"
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    extra = " log" if dist.log else (f" step {dist.step}" if dist.step else "")
    return f"{kind} [{dist.low}, {dist.high}]{extra}"


def is_finite_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def quote(text: str) -> str:
    """A string as a quoted Hydra override value."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def single_run_overrides(config: DictConfig, space: SearchSpace, options: Callable[[str], list[str]]) -> list[str]:
    """The overrides that repeat a trial as a plain run: the sweep's config group choices (e.g. aug=basic, chosen
    by the search space) and the command line's fixed overrides, without the search space itself (which would
    start another sweep) — so the repeat also scores the test split, as a final run should. `options(group)` lists
    a group's configs: an optional default whose config does not exist is left out."""

    def group_of(override: str) -> str:
        return override.split("=", 1)[0].lstrip("+~")

    skip = {"hparams_search", "hydra", "paths", "dataset"}  # dataset: chosen by `data`, not by the user
    choices = OmegaConf.to_container(config.hydra.runtime.choices)
    groups = [
        f"{g}={c}"
        for g, c in choices.items()
        if c is not None and g not in skip and not g.startswith("hydra/") and c in options(g)
    ]
    given = {group_of(o) for o in space.fixed} | set(space.distributions)  # set by the command line or a trial
    return [o for o in groups if group_of(o) not in given] + [o for o in space.fixed if group_of(o) not in skip]
