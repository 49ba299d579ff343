"""How much of a run's best validation accuracy is the luck of picking the maximum over many epochs?

`val/acc_best` is the maximum over every epoch's evaluation on the 5,000 validation images; over ~240 epochs the
maximum of noisy evaluations sits above the level the model holds. This prints, per finished run, the best epoch
against the last epoch and the mean ± sd over the last N epochs (the level a last-epoch checkpoint would have), from
the run's metrics.csv, as a Markdown table. No test figure is read.

    python benchmarks/val_curve.py outputs/bench/budget/best_cpu_2h/seed* [--tail 40]
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path


def val_by_epoch(run_dir: Path) -> list[tuple[int, float]]:
    """(epoch, val/acc) pairs of a run directory's metrics.csv, one per epoch (the last logged value wins)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: pass run directories of finished train.py runs (CSV logger).")
    by_epoch: dict[int, float] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/acc") and row.get("epoch"):
                by_epoch[int(row["epoch"])] = float(row["val/acc"])
    if not by_epoch:
        raise SystemExit(f"{path} has no val/acc column values: was validation run?")
    return sorted(by_epoch.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories holding metrics.csv")
    parser.add_argument("--tail", type=int, default=40, help="epochs at the end to average (default 40)")
    args = parser.parse_args()
    print(f"| run | epochs | best val (epoch) | last epoch | mean ± sd of the last {args.tail} | max − tail mean |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        curve = val_by_epoch(run)
        best_epoch, best = max(curve, key=lambda pair: pair[1])
        tail = [acc for _, acc in curve[-args.tail :]]
        mean, sd = statistics.mean(tail), statistics.stdev(tail) if len(tail) > 1 else 0.0
        print(
            f"| {run} | {len(curve)} | {best:.2%} ({best_epoch}) | {curve[-1][1]:.2%} | "
            f"{mean:.2%} ± {sd:.2%} | {best - mean:+.2%} |"
        )


if __name__ == "__main__":
    main()
