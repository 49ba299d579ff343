"""What a run directory was (task, model, aug, seed, overrides, from its .hydra/) and what it scored (metrics.json,
written last). Read by the `fmnist-runs` listing and by the ensemble to name its members. Imports no torch: the
listing stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


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


def describe_run(run_dir: Path) -> dict[str, Any]:
    """One leaderboard row: the run's settings (from .hydra/) and its final figures (from metrics.json)."""
    run_dir = Path(run_dir)
    config = _yaml(run_dir / ".hydra" / "config.yaml")
    choices = _yaml(run_dir / ".hydra" / "hydra.yaml").get("hydra", {}).get("runtime", {}).get("choices", {})
    overrides = _yaml(run_dir / ".hydra" / "overrides.yaml") if (run_dir / ".hydra").is_dir() else []
    metrics = read_metrics(run_dir)
    task = config.get("task_name") or run_dir.parent.parent.name
    model, aug, seed = metrics.get("choice/model") or choices.get("model"), choices.get("aug"), config.get("seed")
    seed = metrics.get("seed", seed)
    epochs = metrics.get("epochs")
    if metrics.get("ckpt_path"):  # eval: describe the run that trained the checkpoint
        from fmnist.utils.io import run_dir_of  # here: it imports torch, which the listing otherwise needs not

        source = run_dir_of(metrics["ckpt_path"])
        if source is not None and source != run_dir:
            trained = describe_run(source)
            model, aug, seed, epochs = trained["model"], trained["aug"], trained["seed"], trained["epochs"]
    if metrics.get("ensemble_method"):
        model = f"ensemble[{metrics['ensemble_method']}] ×{len(metrics.get('members', []))}"
        seed = None  # nothing in an ensemble is random
    return {
        "task": task,
        "model": model,
        "aug": aug,
        "seed": seed,
        "epochs": epochs,
        "val_acc": metrics.get("val/acc_best", metrics.get("val/acc")),
        "test_acc": metrics.get("test/acc"),
        "test_nll": metrics.get("test/nll"),
        "status": "complete" if metrics else "incomplete",
        "run_dir": str(run_dir),
        "overrides": " ".join(str(o) for o in overrides) if isinstance(overrides, list) else "",
    }
