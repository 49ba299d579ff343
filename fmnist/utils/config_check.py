"""Wrong config values end in one message naming the key, the value given and what is expected, and exit code 2,
before anything expensive runs. Generic: every node with a `_target_` is checked against its target's signature and
type hints; what only the target can judge (`trainer.max_epochs=-3`, a dropout of 1.5) is named by its node when
instantiating it fails; Hydra's composition errors (an unknown key or option) get the closest valid name."""

from __future__ import annotations

import collections.abc as abc
import contextlib
import difflib
import functools
import inspect
import os
import re
import sys
import typing
from typing import Any

from hydra.errors import CompactHydraException, InstantiationException, MissingConfigException, OverrideParseException
from hydra.utils import get_object
from lightning.fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fmnist.utils.errors import ConfigError, UserError, exit_for_user_error, find_user_error
from fmnist.utils.type_hints import accepts, describe

# top-level keys of the entry configs (conf/*.yaml) that are read directly, not through a `_target_`
TOP_LEVEL = {"seed": int | None, "threads": int | None, "test": bool, "top_k": int, "batch_size": int,
             "n_per_class": int, "grid_per_class": int, "save_inputs": bool, "temperature_scaling": bool,
             "calibrate_members": bool, "calibrate": bool}  # fmt: skip
AT_LEAST_ONE = ("threads", "top_k", "batch_size", "n_per_class")
CONFIG_CAUSED = (TypeError, ValueError, MisconfigurationException)  # what a target raises for a value it refuses
FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra's switch: "1" re-raises errors instead of printing them and exiting 1
REQUIRED_EXAMPLES = {  # what to give for a value the entry config leaves required (???)
    "ckpt_path": "ckpt_path=<a run directory, a run's checkpoints/*.ckpt or a .safetensors model file; models/ "
    "holds the shipped ones>",
    "images": "images=<file, folder or glob>, e.g. images=photo.jpg or images='shots/*.jpg'",
    "runs": "the finished runs, e.g. 'runs=[<run>,<run>]' or 'runs=outputs/train/runs/*'",
    "teacher.runs": "the teachers' runs or model files, e.g. 'teacher.runs=[<run>,<run>]'",
}


# --- the checks ------------------------------------------------------------------------------------------------
def closest(name: str, candidates: abc.Iterable[str]) -> str | None:
    return next(iter(difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)), None)


def _value(node: DictConfig | ListConfig, key: Any) -> tuple[bool, Any]:
    """(True, the resolved value), or (False, None) when it is missing or does not resolve (reported elsewhere)."""
    with contextlib.suppress(Exception):  # a failing interpolation is the resolver's to report
        return True, node[key]
    return False, None


def target_nodes(node: Any, path: str = "") -> abc.Iterator[tuple[str, DictConfig]]:
    """Every node with a `_target_`, nested ones included, with its key path (Hydra's own `hydra:` node skipped)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        keys = [k for k in node if not (path == "" and k == "hydra")]
    elif isinstance(node, ListConfig):
        keys = range(len(node))
    else:
        return
    for key in keys:
        ok, value = _value(node, key)
        if ok:
            yield from target_nodes(value, f"{path}.{key}" if path else str(key))


def signature_of(target: str) -> tuple[inspect.Signature, dict[str, Any], dict[str, Any]] | None:
    """The target's call signature, type hints and defaults; None when it cannot be imported or inspected. A class's
    base classes' too: **kwargs passed on to them (the Distiller's to the Classifier) are checked like its own."""
    try:
        obj = get_object(target)
        signature = inspect.signature(obj)
    except Exception:  # not importable: instantiating it reports that
        return None
    hints, defaults = {}, {}
    classes = reversed(obj.__mro__) if inspect.isclass(obj) else ()
    for function in [c.__init__ for c in classes if "__init__" in vars(c)] or [obj]:
        with contextlib.suppress(Exception):  # unresolvable annotations: check the names only
            defaults.update({n: p.default for n, p in inspect.signature(function).parameters.items()})
            hints.update(typing.get_type_hints(function))
    return signature, hints, defaults


def check_node(path: str, node: DictConfig) -> None:
    ok, target = _value(node, "_target_")
    inspected = signature_of(str(target)) if ok else None
    if inspected is None:
        return
    signature, hints, defaults = inspected
    params = {n: p for n, p in signature.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    for key in map(str, node):
        if key.startswith("_") and key.endswith("_"):
            continue  # Hydra's own keys: _target_, _partial_, _recursive_, _convert_, _args_
        ok, value = _value(node, key)
        shown = f"{path}.{key}={value}"
        if key not in params and not takes_any:
            guess = closest(key, params)
            hint = f"; did you mean {path}.{guess}?" if guess else f"; it takes: {', '.join(params)}"
            raise ConfigError(f"{shown}: {target} has no parameter '{key}'{hint}")
        hint = hints.get(key)
        if not ok or hint is None or (value is None and defaults.get(key, inspect.Parameter.empty) is None):
            continue
        if not accepts(hint, value):
            raise ConfigError(f"{shown}: expected {describe(hint)} ({key} of {target}).")


def check_arguments(path: str, function: abc.Callable, given: abc.Mapping) -> None:
    """A config mapping passed on as keyword arguments (e.g. aug.affine to random_affine) checked against the
    function's parameters and type hints like a `_target_` node: an unknown key or a wrong type is one ConfigError."""
    check_node(path, OmegaConf.create({"_target_": f"{function.__module__}.{function.__qualname__}", **given}))


def check_config_values(cfg: DictConfig) -> None:
    """Refuse a config whose values cannot work, with one message naming the key: required values left out,
    top-level settings of the wrong type, and every `_target_` node against its target's signature."""
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        example = REQUIRED_EXAMPLES.get(missing[0], f"{missing[0]}=<value>")
        raise ConfigError(f"{missing[0]} is required: add {example} to the command.")
    for key, hint in TOP_LEVEL.items():
        ok, value = _value(cfg, key) if key in cfg else (False, None)
        if ok and not accepts(hint, value):
            raise ConfigError(f"{key}={value}: expected {describe(hint)}.")
        if ok and key in AT_LEAST_ONE and value is not None and value < 1:
            raise ConfigError(f"{key}={value}: expected at least 1.")
    for path, node in target_nodes(cfg):
        check_node(path, node)


# --- errors that only instantiating reveals ----------------------------------------------------------------
def instantiation_error(error: InstantiationException, cfg: DictConfig) -> ConfigError | None:
    """A config-caused TypeError/ValueError raised while Hydra instantiated a node, as one message naming the node
    (and the key, when the target's message names one of the node's keys); None for anything else."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    cause, path, node = chain[-1], "", None
    if not isinstance(cause, CONFIG_CAUSED) or find_user_error(error) is not None:
        return None
    for link in (e for e in chain if isinstance(e, InstantiationException)):
        full_key, target = re.search(r"full_key: (\S+)", str(link)), re.search(r"target '([^']+)'", str(link))
        # Hydra names the node it builds; a target that builds its own parts (the Classifier) names their target
        inner = [p for p, n in target_nodes(node, path) if p != path and target and n.get("_target_") == target[1]]
        path = full_key[1] if full_key else inner[0] if len(inner) == 1 else path
        node = OmegaConf.select(cfg, path) if path else None
    message, where = str(cause).strip() or type(cause).__name__, path or "the config"
    keys = [str(k) for k in node if not str(k).startswith("_")] if isinstance(node, DictConfig) else []
    named = [k for k in keys if re.search(rf"\b{re.escape(k)}\b", message)]  # the key the target's message names
    if len(named) == 1:
        where = f"{path}.{named[0]}={_value(node, named[0])[1]}"
    return ConfigError(f"{where}: {message} (HYDRA_FULL_ERROR=1 shows the traceback)")


def checked(task: abc.Callable[[DictConfig], Any]) -> abc.Callable[[DictConfig], Any]:
    """`task` preceded by the config checks; a config-caused error while instantiating becomes a ConfigError."""

    @functools.wraps(task)
    def run(cfg: DictConfig) -> Any:
        _release_full_error()
        check_config_values(cfg)
        try:
            return task(cfg)
        except InstantiationException as e:
            error = None if os.environ.get(FULL_ERROR) == "1" else instantiation_error(e, cfg)
            if error is None:
                raise
            raise error from e

    return run


# --- Hydra's composition errors ----------------------------------------------------------------------------
_saved_full_error: list[str | None] = []  # the user's HYDRA_FULL_ERROR while Hydra composes the config


def _release_full_error() -> None:
    """The task has started: from here on, Hydra reports errors its usual way (the user's HYDRA_FULL_ERROR)."""
    if _saved_full_error:
        previous = _saved_full_error.pop()
        os.environ.pop(FULL_ERROR, None)
        os.environ.update({} if previous is None else {FULL_ERROR: previous})


def _given(key: str, overrides: list[str]) -> tuple[str, str, str]:
    """The override that reached `key` as typed ('trainr.max_epochs=3'), its key's rest ('.max_epochs'), its value."""
    for arg in overrides:
        typed_key, _, value = arg.partition("=")
        typed_key = typed_key.lstrip("+~")
        if typed_key == key or typed_key.startswith(key + "."):
            return arg, typed_key[len(key) :], value
    return key, "", ""


def composition_error(error: Exception, overrides: list[str] | None = None) -> UserError | None:
    """Hydra's refusal of an override (unknown key, unknown group option, bad syntax) as one line with the
    closest valid name; None for errors that are not the user's. `overrides`: the command line's arguments."""
    overrides = sys.argv[1:] if overrides is None else overrides
    if not isinstance(error, CompactHydraException):
        return find_user_error(error)  # e.g. raised by a resolver of Hydra's run directory
    cause = error.__cause__
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and error.options:
        group, _, option = error.missing_cfg_file.rpartition("/")
        hint = f"did you mean {group}={guess}? " if (guess := closest(option, error.options)) else ""
        found = f"Could not find '{error.missing_cfg_file}'"  # Hydra's words
        return ConfigError(f"{group}={option}: {found}; {hint}(options: {', '.join(error.options)})")
    if isinstance(cause, OmegaConfBaseException) and cause.full_key and "Could not override" in str(error):
        parent, key = cause.parent_node, str(cause.key)
        prefix = cause.full_key[: -len(key)] if cause.full_key.endswith(key) else ""
        candidates = [str(k) for k in parent] if isinstance(parent, DictConfig) else []
        if isinstance(parent, DictConfig) and "_target_" in parent and signature_of(str(parent._target_)):
            candidates += list(signature_of(str(parent._target_))[0].parameters)  # not in the config yet: add with +
        typed, rest, value = _given(cause.full_key, overrides)
        guess = closest(key, candidates)
        plus = "" if isinstance(parent, DictConfig) and guess in parent else "+"
        exact, near = keys_named(key, parent)  # lr=0.1 for model.optimizer.lr, epochs=3 for trainer.max_epochs
        if exact or (not guess and near):
            hint = f"did you mean {' or '.join(f'{prefix}{k}{rest}={value}' for k in (exact or near)[:3])}?"
        elif guess:
            hint = f"did you mean {plus}{prefix}{guess}{rest}={value}?"
        else:
            hint = f"`python {os.path.basename(sys.argv[0])} --cfg job` lists the keys"
        return ConfigError(f"{typed}: no such key; {hint}")
    message = " ".join(str(error).split())
    if isinstance(error, OverrideParseException) and "=" not in error.override:  # `predict.py photo.png`
        return ConfigError(f"{error.override}: arguments are key=value; {value_example(error.override)}")
    if isinstance(error, OverrideParseException):
        message = f"{error.override}: {message}"
    if isinstance(error, MissingConfigException):
        message = message.split(" Config search path:")[0]
    if isinstance(cause, OmegaConfBaseException):
        message += f": {cause.msg}"
    return ConfigError(message)


def dotted_keys(node: Any, path: str = "") -> list[str]:
    """Every key below `node` as a dotted path (Hydra's own `hydra:` node skipped)."""
    if not isinstance(node, DictConfig):
        return []
    names = [str(k) for k in node if not (path == "" and k == "hydra")]
    return [f"{path}{n}" for n in names] + [k for n in names for k in dotted_keys(_value(node, n)[1], f"{path}{n}.")]


def keys_named(key: str, node: Any) -> tuple[list[str], list[str]]:
    """The dotted paths deeper below `node` whose last name is `key`, and those whose last name is close to it."""
    deeper = [(k, k.rpartition(".")[2]) for k in dotted_keys(node) if "." in k]
    return [k for k, name in deeper if name == key], [k for k, name in deeper if closest(key, [name])]


def value_example(argument: str) -> str:
    """How to pass a bare argument as a value: an image for `images=`, a model file for `ckpt_path=`."""
    suffix = os.path.splitext(argument)[1].lower()
    if suffix in (".ckpt", ".safetensors"):
        return f"give it as ckpt_path={argument}."
    if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".npy") or os.path.isdir(argument):
        return f"give it as images={argument} (predict.py)."
    return f"`python {os.path.basename(sys.argv[0])} --help` lists the keys."


def report_composition_errors(main: abc.Callable[[], Any]) -> abc.Callable[[], Any]:
    """A `hydra.main` entry point whose refused overrides end in one line with the closest valid name and exit code
    2 (Hydra prints several, exits 1). HYDRA_FULL_ERROR=1 makes Hydra re-raise: set until the task starts."""

    @functools.wraps(main)
    def entry() -> Any:
        if os.environ.get(FULL_ERROR) == "1":
            return main()  # the user asked for Hydra's full tracebacks
        _saved_full_error.append(os.environ.get(FULL_ERROR))
        os.environ[FULL_ERROR] = "1"
        try:
            return main()
        except Exception as e:
            error = composition_error(e) if _saved_full_error else None  # not once the task runs: Hydra reported it
            if error is None:
                raise
            exit_for_user_error(error)
        finally:
            _release_full_error()

    return entry
