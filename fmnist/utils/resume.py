"""Resuming a training run (train.py, gan.py) in place with the config it started with.

`python train.py ckpt_path=<run>/checkpoints/last.ckpt` (or gan.py's) continues the run with its own config, as saved in
`<run>/.hydra/config.yaml` when it started, not with today's defaults. Only what the user types can differ from it:
a typed override that changes what is trained (data, model, augmentation, schedule, seed, weight-changing callbacks,
test-time augmentation) is refused with the list of differences; settings of the machine, the logs and the file
locations (SAFE_KEYS) apply to this attempt. fmnist/utils/interrupt.py prints that command when a run is stopped.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import Container, DictConfig, OmegaConf, open_dict

from fmnist.utils.errors import UserError
from fmnist.utils.run_info import run_dir_of

log = logging.getLogger("fmnist")

ABSENT = "(not set)"  # a key that one of the two configs does not have
# What a resume may change, as dotted key prefixes: where files are, how the run is logged and shown, and the machine
# it runs on. precision and accelerator are here so that a run started on a GPU can be finished on a CPU (the
# remaining epochs then compute in that precision; metrics.json records it). trainer.devices may change only when the
# number of devices stays the same: it sets the global batch under DDP.
SAFE_KEYS = (
    "ckpt_path", "threads", "logger", "paths", "tags", "test", "optimized_metric",
    "trainer.accelerator", "trainer.precision", "trainer.enable_progress_bar", "trainer.log_every_n_steps",
    "callbacks.rich_progress_bar", "callbacks.rich_model_summary", "callbacks.lr_monitor",
    "data.data_dir", "data.system_dir", "data.download", "data.mirrors", "data.num_workers", "data.eval_batch_size",
    "metrics.cache_dir",
)  # fmt: skip


def is_safe(key: str) -> bool:
    return any(key == safe or key.startswith(safe + ".") for safe in SAFE_KEYS)


def device_count(devices: Any) -> int | None:
    """How many devices a `trainer.devices` value asks for; None when it depends on the machine ("auto", -1)."""
    if isinstance(devices, list | tuple):
        return len(devices)
    text = str(devices).strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    parts = [p for p in text.split(",") if p.strip().isdigit()]
    return len(parts) if "," in text and parts else None


def may_change(key: str, saved: Any, asked: Any) -> bool:
    if key == "trainer.devices":
        return device_count(saved) is not None and device_count(saved) == device_count(asked)
    return is_safe(key)


def plain(cfg: DictConfig, key: str) -> Any:
    """The resolved value at a dotted key, as plain Python (containers too); ABSENT when the key is not there."""
    try:
        node = OmegaConf.select(cfg, key, default=ABSENT)
        return OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node
    except Exception:  # an interpolation this attempt cannot resolve: compare it as written
        node = OmegaConf.select(cfg, key, default=ABSENT, throw_on_resolution_failure=False)
        return OmegaConf.to_container(node) if isinstance(node, Container) else node


def leaves(cfg: DictConfig) -> dict[str, Any]:
    """Every leaf of a config as `dotted.key: resolved value` (lists and empty nodes are leaves)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            flat[prefix] = value

    walk({k: plain(cfg, str(k)) for k in cfg if k != "hydra"}, "")
    return flat


def group_leaves_changed(override: Override, typed: list[str], run_choice: str | None, cfg: DictConfig) -> dict | None:
    """The leaves a group override (`trainer=cpu`) changes against the run's own choice of that group: the config
    composed with the typed overrides against the one composed with the run's choice instead. None when Hydra cannot
    compose that here (then only the choice itself is compared)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        return None
    others = [line for line in typed if line != override.input_line]
    group = override.key_or_group + (f"@{override.package}" if override.package else "")
    as_run_choice = f"{group}={'null' if run_choice is None else run_choice}"
    try:
        as_run = compose(HydraConfig.get().job.config_name, [*others, as_run_choice])
    except Exception:  # e.g. the run's option no longer exists
        return None
    asked, baseline = leaves(cfg), leaves(as_run)
    return {k: asked.get(k, ABSENT) for k in asked.keys() | baseline.keys() if asked.get(k, ABSENT) != baseline.get(k)}


def compare(cfg: DictConfig, saved: DictConfig, run_choices: dict, typed: list[str]) -> tuple[dict, list[str]]:
    """What the typed overrides change against the saved run config: (safe changes {key: value}, refused lines)."""
    changes: dict[str, Any] = {}
    refused: list[str] = []
    choices = HydraConfig.get().runtime.choices
    saved_leaves = leaves(saved)
    for override in OverridesParser.create().parse_overrides(typed):
        key = override.key_or_group
        if override.package and f"{key}@{override.package}" in choices:  # gan_model@model=...: Hydra's choice key
            key = f"{key}@{override.package}"
        if key == "ckpt_path" or key.startswith(("hydra.", "hydra/")) or key == "hydra":
            continue
        if key in choices and not override.is_delete():  # a config group: model=cnn, trainer=cpu, logger=wandb
            if choices[key] == run_choices.get(key):
                continue
            changed = group_leaves_changed(override, typed, run_choices.get(key), cfg)
            if changed is None:
                refused.append(f"{key}: {run_choices.get(key)} -> {choices[key]}")
                continue
            differ = {k: v for k, v in changed.items() if saved_leaves.get(k, ABSENT) != v}
            unsafe = sorted(k for k, v in differ.items() if not may_change(k, saved_leaves.get(k, ABSENT), v))
            if unsafe:
                more = f" and {len(unsafe) - 4} more" if len(unsafe) > 4 else ""
                changed_keys = ", ".join(unsafe[:4]) + more
                refused.append(f"{key}: {run_choices.get(key)} -> {choices[key]} (changes {changed_keys})")
            else:
                changes.update(differ)
            continue
        before, asked = plain(saved, key), plain(cfg, key)
        if before == asked:
            continue
        if may_change(key, before, asked):
            changes[key] = asked
        else:
            refused.append(f"{key}: {before} -> {asked}")
    return changes, refused


def put(cfg: DictConfig, key: str, value: Any) -> None:
    """Set (or, for ABSENT, delete) a dotted key."""
    if value != ABSENT:
        OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        return
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if isinstance(parent, DictConfig) and name in parent:
        with open_dict(parent):
            del parent[name]


def resumed_in_place(ckpt_path: str | None, output_dir: str) -> Path | None:
    """The run directory when `ckpt_path` is a checkpoint of a run (with its .hydra/config.yaml) that this job
    continues in place (train.yaml's `${fmnist_run_dir:...}`), else None."""
    run = run_dir_of(ckpt_path)
    if run is None or Path(output_dir).resolve() != run or not (run / ".hydra" / "config.yaml").is_file():
        return None
    return run


def saved_choices(run: Path) -> dict[str, Any]:
    """The config-group choices a run started with (model: cnn, aug: flip, ...), from its .hydra/hydra.yaml."""
    hydra_file = run / ".hydra" / "hydra.yaml"
    return OmegaConf.to_container(OmegaConf.load(hydra_file).hydra.runtime.choices) if hydra_file.is_file() else {}


def resumed_choices() -> dict[str, Any] | None:
    """For a run resumed in place, the group choices it trains with: its own, with the group overrides this attempt
    typed (only safe ones get this far). None for any other job."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    typed = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    ckpt_path = next((o.value() for o in typed if o.key_or_group == "ckpt_path"), None)
    run = resumed_in_place(ckpt_path, hydra_cfg.runtime.output_dir)
    if run is None:
        return None
    choices = saved_choices(run)
    asked = hydra_cfg.runtime.choices
    choices.update({o.key_or_group: asked[o.key_or_group] for o in typed if o.key_or_group in asked})
    return choices


def saved_config(saved_file: Path) -> DictConfig:
    """A run's saved config, in today's layout: runs started before the input size became a model setting saved it
    as data.image_size (the model read it from there)."""
    saved = OmegaConf.load(saved_file)
    data, model = saved.get("data"), saved.get("model")
    if isinstance(data, DictConfig) and "image_size" in data and isinstance(model, DictConfig):
        with open_dict(saved):
            if "generator" not in model:
                model.image_size = data.image_size
            elif OmegaConf.select(saved, "metrics.classifier.image_size") is not None:  # a GAN's scoring classifier
                saved.metrics.classifier.image_size = data.image_size
            del data["image_size"]
    return saved


def resume_config(cfg: DictConfig) -> DictConfig:
    """The config of this attempt: for a checkpoint of a run resumed in place, the run's saved config with this
    attempt's safe overrides (UserError listing any other difference); otherwise `cfg` as composed."""
    run = resumed_in_place(cfg.get("ckpt_path"), cfg.paths.output_dir) if HydraConfig.initialized() else None
    if run is None:
        return cfg  # a checkpoint outside a run directory starts a new run, configured by the command line
    with discarded_if_refused():  # the refusal's message stays in the run's log
        saved = checked_resume(cfg, run)
    record_attempt(saved)
    return saved


def checked_resume(cfg: DictConfig, run: Path) -> DictConfig:
    """resume_config's work: the run's saved config with this attempt's safe changes, or the UserError refusing it."""
    saved_file = run / ".hydra" / "config.yaml"
    saved = saved_config(saved_file)
    gan_run = "generator" in (saved.get("model") or {})
    if gan_run != ("generator" in (cfg.get("model") or {})):
        script = "gan.py" if gan_run else "train.py"
        raise UserError(f"ckpt_path={cfg.ckpt_path} is a checkpoint of a {'GAN' if gan_run else 'classifier'} run "
                        f"({run}); resume it with `python {script} ckpt_path={cfg.ckpt_path}`.")  # fmt: skip
    typed = list(HydraConfig.get().overrides.task)
    changes, refused = compare(cfg, saved, saved_choices(run), typed)
    if refused:
        raise UserError(
            f"ckpt_path={cfg.ckpt_path} resumes the run in {run} with the config it started with "
            f"({saved_file}); the command line changes what that run trains (its value -> asked):\n  "
            + "\n  ".join(refused)
            + f"\nResume it with ckpt_path alone: {resume_command(run / 'checkpoints' / Path(cfg.ckpt_path).name)}\n"
            "Only settings of the machine, the logs and file locations may change ("
            + ", ".join(k for k in SAFE_KEYS[1:] if k.split(".")[0] in saved) + ", trainer.devices with the same "
            "count). To train something else, start a "
            "new run without ckpt_path (or pass a copy of the checkpoint kept outside the run directory, which "
            "starts a new run from its training state with the command line's config)."
        )  # fmt: skip
    started = {k: plain(saved, k) for k in changes}
    if (run / "metrics.json").is_file():
        checkpoints = run / "checkpoints"
        use = (f"sample it with `python scripts/generate.py ckpt_path={checkpoints / 'last.ckpt'}`" if gan_run
               else f"score its checkpoints with `python eval.py ckpt_path={checkpoints / 'best.ckpt'}`")  # fmt: skip
        raise UserError(
            f"The run in {run} is complete (it wrote metrics.json): there is nothing to resume. To use it, {use}; "
            "to train on from it, pass a copy of its checkpoints/last.ckpt kept outside the run directory with the "
            "settings to change: a new run starts from its state."
        )
    with open_dict(saved):
        for key, value in changes.items():
            put(saved, key, value)
        saved.ckpt_path = cfg.ckpt_path  # this attempt's checkpoint
        if "hydra" in cfg:  # a config composed outside @hydra.main (tests) carries its Hydra node
            saved.hydra = cfg.hydra
    OmegaConf.set_struct(saved, True)
    machine = [k for k in changes if k in ("trainer.precision", "trainer.accelerator")]
    if machine:
        log.warning("The rest of the run computes with " + ", ".join(f"{k}={changes[k]}" for k in machine)
                    + " (it started with " + ", ".join(f"{k}={started[k]}" for k in machine)
                    + "): its numbers may differ slightly from an uninterrupted run.")  # fmt: skip
    log.info(f"Resuming {run} with its own config" + (f"; changed for this attempt: {changes}" if changes else ""))
    return saved


def attempt_dir() -> Path | None:
    """This resume attempt's `.hydra/resumed_<time>/` (where Hydra wrote its composed config), if it has one."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    attempt = Path(hydra_cfg.runtime.output_dir) / str(hydra_cfg.output_subdir)
    return attempt if attempt.name.startswith("resumed_") and attempt.parent.name == ".hydra" else None


def record_attempt(cfg: DictConfig) -> None:
    """Write the config this attempt really runs to its `.hydra/resumed_<time>/config.yaml` (Hydra wrote the
    composed one there); the run's first `.hydra/config.yaml` is never touched."""
    attempt = attempt_dir()
    if attempt is not None and attempt.is_dir():
        OmegaConf.save({k: v for k, v in cfg.items() if k != "hydra"}, attempt / "config.yaml")


@contextmanager
def discarded_if_refused() -> Iterator[None]:
    """A resume attempt refused inside (by resume_config or the task's own checks) leaves no config folder in the
    run."""
    try:
        yield
    except UserError:
        if (attempt := attempt_dir()) is not None:
            shutil.rmtree(attempt, ignore_errors=True)
        raise


def entry_command() -> str:
    """The command of this job: a console script as typed (`fmnist-gan`), else `python train.py` or `python gan.py`
    (each entry script is named after its config)."""
    if Path(sys.argv[0]).name.startswith("fmnist-"):
        return Path(sys.argv[0]).name
    return f"python {HydraConfig.get().job.config_name if HydraConfig.initialized() else 'train'}.py"


def resume_command(checkpoint: Path) -> str:
    """`python train.py ckpt_path=...`: the run's own config supplies everything. An attempt that is itself a resume
    repeats the safe settings it was given (e.g. a data folder on this machine): they are not in the run's config."""
    typed = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    parsed = OverridesParser.create().parse_overrides(typed)
    keep = []
    if any(o.key_or_group == "ckpt_path" for o in parsed):
        keep = [o.input_line for o in parsed if o.key_or_group != "ckpt_path" and is_safe(o.key_or_group)]
    shown = os.path.relpath(checkpoint) if checkpoint.resolve().is_relative_to(Path.cwd()) else str(checkpoint)
    return " ".join([entry_command(), *map(shlex.quote, keep), shlex.quote(f"ckpt_path={shown}")])
