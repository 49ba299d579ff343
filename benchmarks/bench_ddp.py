"""Training throughput of one process against Lightning DDP with N CPU processes on this machine.

Both run `python train.py` for the same number of epochs (default: 1) with the default model; DDP uses
`trainer=ddp trainer.accelerator=cpu trainer.devices=N`, each process with batch size data.batch_size / N so that
the global batch (and the optimisation) stays the same, and threads = cores / N. Throughput is the training images
per second of the fit (validation included) from each run's metrics.json; the whole command is timed too.

    python benchmarks/bench_ddp.py [--devices 2] [--epochs 1] [--repeats 2] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics

from _common import run_entry

from fmnist import PROJECT_ROOT


def run(name: str, overrides: list[str]) -> tuple[float, float]:
    run_dir = PROJECT_ROOT / "outputs" / "bench" / "ddp" / name
    args = ["task_name=bench", f"hydra.run.dir={run_dir}", *overrides]
    metrics, wall = run_entry(str(PROJECT_ROOT / "train.py"), args, run_dir, cwd=PROJECT_ROOT)
    return metrics["fit_images_per_second"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements of each")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    common = [f"trainer.max_epochs={args.epochs}", "trainer.accelerator=cpu", "test=false", *args.overrides]
    single = [*common, f"data.batch_size={args.batch_size}"]
    per_process = f"data.batch_size={args.batch_size // args.devices}"
    ddp = [*common, "trainer=ddp", f"trainer.devices={args.devices}", per_process]
    results: dict[str, list[tuple[float, float]]] = {"1 process": [], f"DDP x{args.devices}": []}
    for repeat in range(args.repeats):
        results["1 process"].append(run(f"single{repeat}", single))
        results[f"DDP x{args.devices}"].append(run(f"ddp{repeat}", ddp))
    print(f"\n{args.epochs} epoch(s), global batch {args.batch_size}, medians of {args.repeats}\n")
    print("| setup | fit img/s | command wall s |\n|---|---|---|")
    for name, values in results.items():
        ips, wall = statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)
        print(f"| {name} | {ips:.0f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
