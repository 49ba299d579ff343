"""Time to accuracy: test accuracy against wall time (mean ± sd over seeds) for finished `bench_train.py` runs.

Reads outputs/bench/<name>/seed*/metrics.json and the wall times of outputs/bench/<name>/summary.json (written by
bench_train.py), one point per name, and writes a PNG with the goals drawn in:

    python benchmarks/plot_time_to_accuracy.py fast best_cpu [--point 'label=wall_s,wall_sd,acc,acc_sd' ...] \
        [--out docs/img/time_to_accuracy.png]

`--point` adds a figure measured in an earlier session (e.g. the default CNN of docs/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fmnist import PROJECT_ROOT

GOALS = ((5 * 60, 0.94, "fast goal"), (30 * 60, 0.95, "best_cpu goal"))


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def read_point(name: str) -> tuple[str, float, float, float, float, int]:
    """(label, wall mean, wall sd, test acc mean, test acc sd, seeds) of outputs/bench/<name>/ (one or more runs
    of bench_train.py whose summaries may cover different seeds: every summary.json under it counts)."""
    root = PROJECT_ROOT / "outputs" / "bench" / name
    runs = [r for summary in root.glob("**/summary.json") for r in json.loads(summary.read_text())["runs"]]
    if not runs:
        raise SystemExit(f"No finished bench_train.py runs under {root}: run it first.")
    wall, acc = mean_sd([r["wall_seconds"] for r in runs]), mean_sd([r["test/acc"] for r in runs])
    return name, *wall, *acc, len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help="folders under outputs/bench/")
    parser.add_argument("--point", action="append", default=[], help="label=wall_s,wall_sd,acc,acc_sd")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "img" / "time_to_accuracy.png")
    args = parser.parse_args()
    points = [read_point(n) for n in args.names]
    for extra in args.point:
        label, values = extra.split("=", 1)
        wall, wall_sd, acc, acc_sd = (float(v) for v in values.split(","))
        points.append((label, wall, wall_sd, acc, acc_sd, 3))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, wall, wall_sd, acc, acc_sd, n in points:
        bar = ax.errorbar(wall / 60, 100 * acc, xerr=wall_sd / 60, yerr=100 * acc_sd, fmt="o", capsize=3)
        # labels in a legend: points of one machine crowd around the same wall times and their labels overlapped
        bar.set_label(f"{label} ({n} seed{'s' * (n > 1)}): {100 * acc:.2f} %, {wall / 60:.1f} min")
        shown = f"test acc {100 * acc:.2f} ± {100 * acc_sd:.2f} %, wall {wall / 60:.1f} ± {wall_sd / 60:.1f} min"
        print(f"{label}: {shown}")
    for seconds, acc, label in GOALS:
        ax.plot([seconds / 60], [100 * acc], marker="*", color="gray", markersize=12)
        ax.annotate(label, (seconds / 60, 100 * acc), textcoords="offset points", xytext=(-10, -14), fontsize=8,
                    ha="right")  # fmt: skip
    ax.set_xlabel("wall time of the whole command (min)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Fashion-MNIST on 2 CPU cores: time to accuracy (mean ± sd over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
