"""The runs under outputs/: what each one was (task, model, aug, seed, overrides) and what it scored.

A run is any directory with a `.hydra/config.yaml` (every `train.py`, `eval.py` and `scripts/ensemble.py` run, single
or multirun job). Its figures come from `metrics.json`, written last: without it the run is listed as incomplete.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmnist import PROJECT_ROOT

COLUMNS = (
    "task",
    "model",
    "aug",
    "seed",
    "epochs",
    "val_acc",
    "test_acc",
    "test_nll",
    "status",
    "run_dir",
    "overrides",
)
SORT_KEYS = {"val": "val_acc", "test": "test_acc", "time": "started"}
# overrides that say where things are, not what was tried: left out of the displayed `overrides` (kept in the CSV)
LOCATION_KEYS = (
    "data.data_dir",
    "data.system_dir",
    "data.download",
    "data.checksums",
    "paths.",
    "hydra.",
    "runs=",
    "trainer.accelerator",
    "seed=",
)


def experiment_overrides(overrides: str) -> str:
    return " ".join(o for o in overrides.split(" ") if o and not o.lstrip("+~").startswith(LOCATION_KEYS))


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


def collect_runs(root: Path, task: str | None = None, sort: str = "val") -> list[dict[str, Any]]:
    """Every run under `root`, best first by `sort` (val = validation accuracy, the fair way to pick a run; test;
    or time, newest first). Runs without the figure go last."""
    runs = sorted({p.parent.parent for p in Path(root).rglob(".hydra/config.yaml")})
    rows = [describe_run(r) for r in runs]
    if task:
        rows = [r for r in rows if r["task"] == task]
    key = SORT_KEYS[sort]
    if key == "started":  # Hydra writes .hydra/config.yaml when the job starts
        return sorted(rows, key=lambda r: (Path(r["run_dir"]) / ".hydra" / "config.yaml").stat().st_mtime, reverse=True)
    return sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0.0)))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def fmt(value) -> Text:
    """A cell as plain text (run names and overrides contain [brackets] that are not Rich markup)."""
    if value is None:
        return Text("–")
    return Text(f"{value:.4f}" if isinstance(value, float) else str(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "outputs", help="where to look for runs")
    parser.add_argument("--sort", choices=sorted(SORT_KEYS), default="val", help="val (default), test, or time")
    parser.add_argument("--task", help="only runs of this task (train, eval, ensemble, ...)")
    parser.add_argument("--csv", type=Path, help="CSV file to write (default: <root>/runs.csv)")
    parser.add_argument("--top", type=int, help="show only the first N rows (the CSV keeps all)")
    args = parser.parse_args()
    if not args.root.is_dir():
        parser.exit(2, f"error: {args.root} does not exist; runs land in outputs/ (pass --root to look elsewhere)\n")
    rows = collect_runs(args.root, args.task, args.sort)
    csv_path = args.csv or args.root / "runs.csv"
    write_csv(rows, csv_path)
    table = Table(title=f"{len(rows)} runs under {args.root} (sorted by {args.sort})")
    numeric = ("seed", "epochs", "val_acc", "test_acc", "test_nll")
    for column in COLUMNS:
        width = 60 if column == "overrides" else None
        table.add_column(column, overflow="fold", max_width=width, justify="right" if column in numeric else "left")
    root = args.root.resolve()
    for row in rows[: args.top]:
        run_dir = Path(row["run_dir"])
        shown = {
            **row,
            "overrides": experiment_overrides(row["overrides"]),  # where-things-are overrides only in the CSV
            "run_dir": str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else str(run_dir),
        }
        table.add_row(*(fmt(shown[c]) for c in COLUMNS))
    console = Console()
    console.print(table)
    console.print(f"CSV: {csv_path}")
