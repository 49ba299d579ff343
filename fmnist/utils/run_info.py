"""What a run directory was (task, model, aug, seed, overrides, from its .hydra/), what it scored (metrics.json,
written last), where it stands (complete, debug, running, interrupted, failed, ended) and which checkpoint of it a
command takes. Read by the `fmnist-runs` leaderboard, by the ensemble to name its members and by every command given a
run. Imports no torch itself."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import yaml

from fmnist.utils.errors import CheckpointError, UserError

# tasks that leave no metrics.json when they succeed (they write their outputs and stop): without one they "ended"
NO_RESULT_FILE_TASKS = ("predict", "export")


def _yaml(path: Path) -> dict:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """metrics.json of a run, or {} when it is missing (unfinished run) or unreadable."""
    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def files_held_open(root: Path) -> set[Path]:
    """The files under `root` that a live process on this machine holds open (Linux /proc; empty elsewhere, and
    only the processes this user may inspect). A job keeps its log (`<run>/<task>.log`, Hydra's file handler) open
    from start to end, so this is the mark of a running job; a killed one leaves nothing open."""
    root, held = Path(root).resolve(), set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            targets = [os.readlink(fd) for fd in fd_dir.iterdir()]
        except OSError:  # another user's process, or one that ended while we looked
            continue
        held.update(Path(t) for t in targets if t.startswith(f"{root}{os.sep}"))
    return held


def run_status(run_dir: Path, task: str, held_open: set[Path]) -> str:
    """complete: metrics.json (each task writes it last); running: a live process holds one of its files open;
    interrupted: checkpoints but no metrics.json (resume it with ckpt_path=<run>/checkpoints/last.ckpt); failed:
    none of these (a launch error, or killed before its first checkpoint); ended: a predict/export run, which
    writes no metrics.json either way."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").is_file():
        return "complete"
    resolved = run_dir.resolve()
    if any(path.is_relative_to(resolved) for path in held_open):
        return "running"
    if any((run_dir / "checkpoints").glob("*.ckpt")):
        return "interrupted"
    return "ended" if task in NO_RESULT_FILE_TASKS else "failed"


def describe_run(run_dir: Path, held_open: set[Path] | None = None) -> dict[str, Any]:
    """One leaderboard row: the run's settings (from .hydra/), its final figures (from metrics.json) and its status
    (see `run_status`; `held_open` from `files_held_open`, looked up here when not given)."""
    run_dir = Path(run_dir)
    config = _yaml(run_dir / ".hydra" / "config.yaml")
    hydra = _yaml(run_dir / ".hydra" / "hydra.yaml").get("hydra", {})
    choices = hydra.get("runtime", {}).get("choices", {})
    overrides = _yaml(run_dir / ".hydra" / "overrides.yaml") if (run_dir / ".hydra").is_dir() else []
    metrics = read_metrics(run_dir)
    # the entry config (train, eval, ensemble, ...): `task_name` only names the folder and may be anything
    task = hydra.get("job", {}).get("config_name") or config.get("task_name") or run_dir.parent.parent.name
    model, aug, seed = metrics.get("choice/model") or choices.get("model"), choices.get("aug"), config.get("seed")
    seed = metrics.get("seed", seed)
    epochs = metrics.get("epochs")
    if metrics.get("ckpt_path"):  # eval: describe the run that trained the checkpoint
        source = run_dir_of(metrics["ckpt_path"])
        if source is not None and source != run_dir:
            trained = describe_run(source, held_open=set())
            model, aug, seed, epochs = trained["model"], trained["aug"], trained["seed"], trained["epochs"]
    if metrics.get("ensemble_method"):
        model = f"ensemble[{metrics['ensemble_method']}] ×{len(metrics.get('members', []))}"
        seed = None  # nothing in an ensemble is random
    if held_open is None:
        held_open = files_held_open(run_dir)
    status = run_status(run_dir, task, held_open)
    if status == "complete" and (choices.get("debug") or (config.get("trainer") or {}).get("fast_dev_run")):
        status = "debug"  # a debug preset's figures (a batch or a few) are no result to rank
    return {
        "task": task,
        "model": model,
        "aug": aug,
        "seed": seed,
        "epochs": epochs,
        "val_acc": metrics.get("val/acc_best", metrics.get("val/acc")),
        "test_acc": metrics.get("test/acc"),
        "test_nll": metrics.get("test/nll"),
        "tta": metrics.get("tta"),  # how the test split was scored (train resolves `auto` when it tests)
        "status": status,
        "run_dir": str(run_dir),
        "overrides": " ".join(str(o) for o in overrides) if isinstance(overrides, list) else "",
    }


def run_dir_of(ckpt_path: str | Path | None) -> Path | None:
    """The run directory a checkpoint belongs to (<run>/checkpoints/x.ckpt with <run>/.hydra), else None."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path).resolve()
    run = path.parent.parent
    if path.parent.name == "checkpoints" and (run / ".hydra").is_dir():
        return run
    return None


def checkpoint_of(path: Path, which: str) -> Path:
    """A run directory -> its checkpoints/<which>.ckpt; a checkpoint file -> itself."""
    if path.is_file():
        return path
    if path.is_dir():
        ckpt = path / "checkpoints" / f"{which}.ckpt"
        if ckpt.is_file():
            return ckpt
        raise CheckpointError(
            f"Run {path} has no checkpoints/{which}.ckpt (an unfinished or failed run, or not a training run). "
            "Remove it from runs=, or pass a checkpoint file instead."
        )
    raise UserError(f"runs: {path} does not exist. Pass run directories, checkpoint files or a glob.")


def scored_checkpoint(ckpt_path: str) -> str:
    """What eval, predict and export score: a run directory (or its checkpoints/ folder) -> the checkpoint
    validation chose, best.ckpt; a file as given."""
    path = Path(ckpt_path).expanduser()
    if not path.is_dir():
        return ckpt_path
    for best in (path / "checkpoints" / "best.ckpt", path / "best.ckpt"):  # a run, or its checkpoints/ folder
        if best.is_file():
            return str(best)
    raise CheckpointError(
        f"ckpt_path={ckpt_path} is a folder without checkpoints/best.ckpt (an unfinished or failed run, or not a "
        "run). Pass a finished run's directory, a .ckpt file or a .safetensors model (models/ holds the shipped ones)."
    )


def expand_runs(runs: str | list[str], which: str = "best", at_least: int = 2) -> list[Path]:
    """Run directories, checkpoint files and globs (e.g. outputs/train/multiruns/<ts>/*) -> checkpoint paths.
    A glob's matches that are neither directories nor model files (a multirun's multirun.yaml) are skipped."""
    if which not in ("best", "last"):
        raise UserError(f"checkpoint={which!r}: choose best or last.")
    entries = [runs] if isinstance(runs, str) else list(runs)
    paths: list[Path] = []
    for entry in entries:
        pattern = os.path.expanduser(str(entry))
        matches = [pattern]
        if any(c in pattern for c in "*?["):
            matches = [
                m for m in sorted(glob.glob(pattern)) if os.path.isdir(m) or m.endswith((".ckpt", ".safetensors"))
            ]
            if not matches:
                raise UserError(f"runs: {entry} matches no run directory or checkpoint.")
        paths += [checkpoint_of(Path(m), which).resolve() for m in matches]
    paths = list(dict.fromkeys(paths))
    if len(paths) < at_least:
        raise UserError(f"runs={entries} gives {len(paths)} checkpoint(s); at least {at_least} are needed.")
    return paths
