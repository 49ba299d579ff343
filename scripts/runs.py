"""The leaderboard: every run under outputs/ with its model, aug, seed, epochs, validation and test accuracy.

    python scripts/runs.py [--sort val|test|time] [--task train] [--root outputs] [--csv outputs/runs.csv] [--top N]

Sorted by validation accuracy by default: picking the best run by its test accuracy would fit the test split.
A plain argparse command (not Hydra): it only reads, so it needs no config groups and no run directory of its own.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmnist import PROJECT_ROOT
from fmnist.leaderboard import COLUMNS, SORT_KEYS, collect_runs, experiment_overrides, write_csv


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


if __name__ == "__main__":
    main()
