"""The runs under outputs/: what each one was (task, model, aug, seed, overrides) and what it scored.

A run is any directory with a `.hydra/config.yaml` (every `train.py`, `eval.py` and `scripts/ensemble.py` run, single
or multirun job). Its figures come from `metrics.json`, written last: without it the run is listed as incomplete.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmnist import PROJECT_ROOT
from fmnist.utils.run_info import describe_run

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
