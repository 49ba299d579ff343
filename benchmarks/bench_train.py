"""Time to accuracy: run `python train.py` end to end for several seeds and report wall time and accuracy.

Each seed is a separate process, timed from start to exit (what a user waits for: imports, data loading, training,
validation, the final test and the figures). The runs land in outputs/bench/ and the table, with mean ± sd, is
printed and saved as JSON next to them.

    python benchmarks/bench_train.py [--name default] [overrides ...] [--seeds 0 1 2]  # --seeds last: a list
"""

from __future__ import annotations

import argparse
import json
from datetime import date

from _common import mean_sd, run_entry

from fmnist import PROJECT_ROOT

KEYS = ("val/acc_best", "test/acc", "test/nll", "test/ece", "epochs", "fit_seconds", "fit_images_per_second")


def mean_sd_text(values: list[float], digits: int = 4) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="default", help="names the output folder outputs/bench/<name>")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides passed to train.py")
    args = parser.parse_args()
    out_root = PROJECT_ROOT / "outputs" / "bench" / args.name
    rows = []
    for seed in args.seeds:
        run_dir = out_root / f"seed{seed}"
        overrides = [f"seed={seed}", f"hydra.run.dir={run_dir}", "task_name=bench", *args.overrides]
        metrics, wall = run_entry(str(PROJECT_ROOT / "train.py"), overrides, run_dir, cwd=PROJECT_ROOT)
        rows.append({"seed": seed, "wall_seconds": wall, **{k: metrics.get(k) for k in KEYS}})
        print(f"seed {seed}: test/acc {metrics['test/acc']:.4f}, wall {wall:.0f} s")
    summary = {
        "date": date.today().isoformat(),
        "command": "python benchmarks/bench_train.py " + " ".join([f"--name {args.name}", *args.overrides]),
        "overrides": args.overrides,
        "runs": rows,
        "test/acc": mean_sd_text([r["test/acc"] for r in rows]),
        "val/acc_best": mean_sd_text([r["val/acc_best"] for r in rows]),
        "wall_seconds": mean_sd_text([r["wall_seconds"] for r in rows], digits=1),
    }
    (out_root / "summary.json").write_text(json.dumps(summary, indent=2))
    print(
        f"\n{args.name}: test/acc {summary['test/acc']}, val/acc_best {summary['val/acc_best']}, "
        f"wall {summary['wall_seconds']} s over seeds {args.seeds}"
    )


if __name__ == "__main__":
    main()
