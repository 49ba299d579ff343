"""The leaderboard of the runs under outputs/, best validation accuracy first
(choosing by test accuracy would tune on the test split), one line per run at
80 columns.

  python scripts/runs.py                 # complete train and ensemble runs
  python scripts/runs.py --all           # every run of every task, its status
  python scripts/runs.py --wide          # every column (long lines)
  python scripts/runs.py --csv runs.csv  # also as CSV (never written unasked)

A run is a directory with a .hydra/config.yaml. Its status: complete
(metrics.json, written last), debug (complete, but a debug= preset's: no
result to rank), running (a live process on this machine holds
one of its files open, as a job does its log), interrupted (checkpoints, no
metrics.json: resumable), failed (neither: a launch error, or killed before its
first checkpoint), ended (predict and export, which write no metrics.json).
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fmnist import PROJECT_ROOT
from fmnist.utils.errors import UserError
from fmnist.utils.io import atomic_path, check_output_path
from fmnist.utils.run_info import describe_run, files_held_open

CSV_COLUMNS = (
    "run",
    "task",
    "model",
    "aug",
    "seed",
    "epochs",
    "val_acc",
    "test_acc",
    "test_nll",
    "tta",
    "status",
    "run_dir",
    "overrides",
)
# (key, header, max width): each view fits 80 columns, one line per run (longer cells end in "…")
DEFAULT_VIEW = (("run", "run", 17), ("model", "model", 17), ("aug", "aug", 8), ("epochs", "ep", 3),
                ("val_acc", "val %", 6), ("test_acc", "test %", 6), ("tta", "tta", 6))  # fmt: skip
# --all: what state each run is in (epochs, scores and TTA come from metrics.json: complete runs only)
ALL_VIEW = (("run", "run", 17), ("task", "task", 8), ("model", "model", 12), ("aug", "aug", 8),
            ("status", "status", 11), ("val_acc", "val %", 6), ("test_acc", "test %", 6))  # fmt: skip
# --wide: every column, whole
WIDE_VIEW = tuple((key, key.replace("_", " ").replace(" acc", " %"), None) for key in CSV_COLUMNS)
NUMERIC = ("epochs", "seed", "val_acc", "test_acc", "test_nll")
DEFAULT_TASKS = ("train", "ensemble")  # the runs that make a model and score it
SORT_KEYS = {"val": "val_acc", "test": "test_acc", "time": "started"}
SORT_NAMES = {"val": "validation accuracy", "test": "test accuracy", "time": "start time, newest first"}
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
TIMESTAMP = re.compile(r"\d{4}-(\d\d)-(\d\d)_(\d\d)-(\d\d)-(\d\d)(?:_\d+)?")  # Hydra's run folders, conf/hydra


def experiment_overrides(overrides: str) -> str:
    return " ".join(o for o in overrides.split(" ") if o and not o.lstrip("+~").startswith(LOCATION_KEYS))


def run_label(run_dir: Path, root: Path) -> str:
    """A short name for a run: its start time, `12-07 00:20:32` (a multirun job: `12-07 00:20:32/3`), from its
    path under `root` less the `<task>/runs|multiruns/` folders; the path itself where it holds no timestamp."""
    path = run_dir.resolve()
    relative = path.relative_to(root) if path.is_relative_to(root) else path
    parts = [p for p in relative.parts if p not in ("runs", "multiruns")]
    if len(parts) > 1 and not TIMESTAMP.fullmatch(parts[0]):
        parts = parts[1:]  # the task folder: the model column says what the run was
    label = "/".join(parts) or str(relative)
    return TIMESTAMP.sub(lambda m: "{}-{} {}:{}:{}".format(*m.groups()), label)


def collect_runs(root: Path, task: str | None = None, sort: str = "val", every: bool = False) -> list[dict[str, Any]]:
    """The runs under `root`, best first by `sort` (val = validation accuracy, the fair way to pick a run; test;
    or time, newest first; runs without the figure go last). By default the complete train and ensemble runs;
    `every`: all of them, whatever their task and status; `task`: only that task's."""
    root = Path(root).resolve()
    held_open = files_held_open(root)
    rows = []
    for run_dir in sorted({p.parent.parent for p in root.rglob(".hydra/config.yaml")}):
        row = describe_run(run_dir, held_open)
        if task and row["task"] != task:
            continue
        if not every and (row["status"] != "complete" or (not task and row["task"] not in DEFAULT_TASKS)):
            continue
        rows.append({"run": run_label(run_dir, root), **row})
    key = SORT_KEYS[sort]
    if key == "started":  # Hydra writes .hydra/config.yaml when the job starts
        return sorted(rows, key=lambda r: (Path(r["run_dir"]) / ".hydra" / "config.yaml").stat().st_mtime, reverse=True)
    return sorted(rows, key=lambda r: (r[key] is None, -(r[key] or 0.0)))


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def cell(key: str, value: Any) -> Text:
    """A cell as plain text (run names and overrides contain [brackets] that are not Rich markup); accuracies in %."""
    if value is None or value == "":
        return Text("–")
    if key in ("val_acc", "test_acc"):
        return Text(f"{100 * value:.2f}")
    return Text(f"{value:.4f}" if isinstance(value, float) else str(value))


def build_table(rows: list[dict[str, Any]], every: bool, wide: bool) -> Table:
    columns = WIDE_VIEW if wide else ALL_VIEW if every else DEFAULT_VIEW
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for key, header, width in columns:
        numeric = key in NUMERIC
        table.add_column(header, justify="right" if numeric else "left", no_wrap=True, overflow="ellipsis",
                         max_width=width, min_width=len(header) if numeric else None)  # fmt: skip
    run_width = next(width for key, _, width in columns if key == "run")
    for row in rows:
        shown = {**row, "overrides": experiment_overrides(row["overrides"])}  # where-things-are: only in the CSV
        if run_width and len(row["run"]) > run_width:  # a long path: its end tells runs apart, not its start
            shown["run"] = "…" + row["run"][1 - run_width :]
        table.add_row(*(cell(key, shown[key]) for key, _, _ in columns))
    return table


def shown_path(path: Path) -> str:
    """`path` relative to the working directory when it is below it: short enough for an 80-column line."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> None:
    # the module docstring is the --help text: its lines stay within 80 columns too
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=PROJECT_ROOT / "outputs", help="where to look for runs")
    parser.add_argument("--sort", choices=sorted(SORT_KEYS), default="val", help="val (default), test, or time")
    parser.add_argument("--task", help="only this task's runs (train, ensemble, eval, gan, predict, ...)")
    parser.add_argument("--all", action="store_true", help="every run of every task and status, with both columns")
    parser.add_argument("--wide", action="store_true", help="also seed, test NLL, run directory, overrides")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="also write the listed runs, every column, as CSV")
    parser.add_argument("--top", type=int, help="show only the first N rows (the CSV keeps all)")
    args = parser.parse_args()
    if not args.root.is_dir():
        problem = "is a file" if args.root.exists() else "does not exist"
        parser.exit(2, f"error: {args.root} {problem}; runs land in outputs/ (pass --root to look elsewhere)\n")
    if args.top is not None and args.top < 1:
        parser.exit(2, f"error: --top {args.top}: give a number of rows, at least 1\n")
    if args.csv:
        try:
            check_output_path(args.csv)  # before listing: --csv into a folder or a read-only place
        except UserError as error:
            parser.exit(2, f"error: --csv: {error}\n")
    root = args.root.resolve()
    rows = collect_runs(root, args.task, args.sort, every=args.all)
    # --wide: the table at its natural width, for `less -S` or a wide terminal; otherwise the terminal's (COLUMNS)
    console = Console(width=100_000) if args.wide else Console()
    what = "run" if args.all else "complete run"
    console.print(f"{len(rows)} {what}{'s' * (len(rows) != 1)} under {shown_path(root)}, by {SORT_NAMES[args.sort]}")
    if rows:
        console.print(build_table(rows[: args.top], args.all, args.wide))
    elif args.task and args.task not in (tasks := sorted({r["task"] for r in collect_runs(root, every=True)})):
        console.print(f"No {args.task!r} runs; the tasks under {shown_path(root)}: {', '.join(tasks) or 'none'}")
    if not args.all:
        console.print("--all: every run with its status · --wide: every column", style="dim")
    if args.csv:
        write_csv(rows, args.csv)
        console.print(f"CSV: {args.csv}", soft_wrap=True)  # a path stays whole on its line, to copy
