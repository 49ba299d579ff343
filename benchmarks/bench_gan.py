"""GAN benchmark: training time and sample quality, then "does GAN data help?" for the default CNN.

    python benchmarks/bench_gan.py [--parts gan table] [--fractions 1.0 0.1] [--seeds 0 1 2]
        [--gan-overrides key=value ...] [--train-overrides key=value ...]
    python benchmarks/bench_gan.py --fractions 0.1 --parts gan table --gan-overrides trainer.max_epochs=70
    python benchmarks/bench_gan.py --fractions 0.1 --tag _da --gan-overrides 'model.diffaugment=[translation,cutout]'

For each data fraction (data.train_fraction; the GAN only ever sees that training split):
- gan:   `python gan.py data.train_fraction=<f>` (then CAS / Fréchet distance / agreement) into
         outputs/bench/gan_frac<f>: seconds per epoch and the quality figures, from the run's metrics.json.
- table: benchmarks/bench_train.py (3 seeds each) for aug=basic and aug=gan. aug=gan uses the synthetic set of the
         `gan` part's run when there is one (aug.source=...), else the shipped generator (full training split only).

`--tag` is appended to the output names (gan_frac<f><tag>, cnn_<aug>_frac<f><tag>) so that variants sit side by side.
Everything lands under outputs/bench/ (runs, summary.json per row) and the table is printed as Markdown and saved
to outputs/bench/gan_summary.json. CPU-heavy: hours on 2 cores (docs/RESULTS.md has the measured figures).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from _common import run_entry, run_timed

from fmnist import PROJECT_ROOT

OUT = PROJECT_ROOT / "outputs" / "bench"
QUALITY = ("quality/cas", "quality/real_test_acc", "quality/fd", "quality/agreement", "seconds_per_epoch", "epochs")


def gan_dir(fraction: float, tag: str = "") -> Path:
    return OUT / f"gan_frac{fraction}{tag}"


def bench_gan(fraction: float, overrides: list[str], tag: str = "") -> dict:
    run_dir = gan_dir(fraction, tag)
    overrides = [f"data.train_fraction={fraction}", *overrides]
    metrics, seconds = run_entry(
        str(PROJECT_ROOT / "gan.py"), [f"hydra.run.dir={run_dir}", *overrides], run_dir, cwd=PROJECT_ROOT
    )
    return {"command": " ".join(["python gan.py", *overrides]), "wall_seconds": seconds,
            **{k: metrics.get(k) for k in QUALITY}}  # fmt: skip


def table(fraction: float, seeds: list[int], train_overrides: list[str], tag: str = "") -> list[dict]:
    synthetic = gan_dir(fraction, tag) / "synthetic.safetensors"
    gan_source = [f"aug.source={synthetic}"] if synthetic.is_file() else []  # else the shipped generator
    rows = []
    for aug in (["aug=basic"], ["aug=gan", *gan_source]):
        overrides = ["model=cnn", *aug, f"data.train_fraction={fraction}", *train_overrides]  # the CNN of RESULTS.md
        name = f"cnn_{aug[0].removeprefix('aug=')}_frac{fraction}{tag}"
        seed_args = ["--seeds", *map(str, seeds)]
        script = str(PROJECT_ROOT / "benchmarks" / "bench_train.py")
        run_timed(script, ["--name", name, *overrides, *seed_args], cwd=PROJECT_ROOT)  # wall times: its summary.json
        summary = json.loads((OUT / name / "summary.json").read_text())
        rows.append({"name": name, "overrides": " ".join(overrides), **{k: summary[k] for k in
                     ("test/acc", "val/acc_best", "wall_seconds")}})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["gan", "table"], choices=["gan", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1], help="data.train_fraction values")
    parser.add_argument("--gan-overrides", nargs="*", default=[], help="Hydra overrides passed to gan.py")
    parser.add_argument("--train-overrides", nargs="*", default=[], help="Hydra overrides passed to train.py")
    parser.add_argument("--tag", default="", help="suffix of the output names, e.g. _da for a DiffAugment GAN")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # which synthetic set, the GAN's progress
    OUT.mkdir(parents=True, exist_ok=True)
    result: dict = {
        "date": date.today().isoformat(),
        "command": " ".join(["python benchmarks/bench_gan.py", *sys.argv[1:]]),
    }
    if "gan" in args.parts:
        result["gan"] = [bench_gan(f, args.gan_overrides, args.tag) for f in args.fractions]
        print(json.dumps(result["gan"], indent=2))
    if "table" in args.parts:
        result["table"] = [row for f in args.fractions for row in table(f, args.seeds, args.train_overrides, args.tag)]
        print("\n| row | overrides | test accuracy (mean ± sd) | wall seconds per run |\n|---|---|---|---|")
        for row in result["table"]:
            print(f"| {row['name']} | `{row['overrides']}` | {row['test/acc']} | {row['wall_seconds']} |")
    fractions = "_".join(map(str, args.fractions))
    (OUT / f"gan_summary_frac{fractions}{args.tag}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
