"""Benchmark of the Optuna sweep: a pruned search (hparams_search=cnn or =resnet) on short budgets, then
full-length runs of the best parameters against the model's defaults, several seeds each.

    python benchmarks/bench_sweep.py                                   # 20 trials x 3 epochs, then 3 seeds x 2 configs
    python benchmarks/bench_sweep.py --search resnet --sweep-epochs 4 --seeds 0 1 2 \\
        --default-runs outputs/bench/default11/seed0 outputs/bench/default11/seed1 outputs/bench/default11/seed2
    python benchmarks/bench_sweep.py --trials 20 --sweep-epochs 3 --full-epochs 10 --seeds 1 2 3
    python benchmarks/bench_sweep.py --out /tmp/smoke --trials 4 --sweep-epochs 3 --full-epochs 2 --seeds 1 2 \\
        --overrides data.data_dir=... data.system_dir=null ... \\
        --sweep-overrides hydra.sweeper.pruner.n_startup_trials=1  # a smoke test on other (e.g. tiny) data

Reports the best validation accuracy the sweep found, test accuracy mean ± sd of the best parameters and of the
default, and the compute pruning saved (epochs trained against the epochs the same trials would have trained
unpruned). Writes <out>/bench_sweep.json and <out>/bench_sweep.md; every command's output is in <out>/logs/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna
import yaml
from _common import mean_sd, run_entry, run_timed
from optuna.trial import TrialState

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# conf/hparams_search/<search>.yaml -> the hand-made recipe it is compared with. (The best trial's overrides from the
# sweeper already hold the search's group choices, e.g. model=cnn or aug=strong, so they repeat it as a plain run.)
DEFAULT_RUN = {"cnn": ["model=cnn"], "resnet": []}
SET_HERE = ("trainer.max_epochs", "seed", "hydra.", "paths.log_dir", "task_name")  # keys this script sets itself


def key_of(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep(out: Path, search: str, trials: int, epochs: int, extra: list[str]) -> tuple[optuna.Study, dict, float]:
    sweep_dir = out / "sweep"
    if sweep_dir.exists():
        sys.exit(f"{sweep_dir} exists: its study would be resumed, not measured afresh. Use another --out.")
    seconds = run_timed(
        "train.py",
        ["-m", f"hparams_search={search}", f"hydra.sweeper.n_trials={trials}", f"trainer.max_epochs={epochs}",
         f"hydra.sweep.dir={sweep_dir}", *extra],
        cwd=PROJECT_ROOT,
        log=out / "logs" / "sweep.log",
    )  # fmt: skip
    study = optuna.load_study(study_name=search, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    return study, results, seconds


def pruning_savings(study: optuna.Study, epochs: int) -> dict:
    """Epochs trained (one reported value per epoch) against the epochs without pruning: every trial that trained
    (complete or pruned) running its full budget."""
    trained = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    run_epochs = sum(len(t.intermediate_values) for t in trained)
    full_epochs = len(trained) * epochs
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trained if t.datetime_complete]
    return {
        "trials": {s.name: len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "epochs_trained": run_epochs,
        "epochs_without_pruning": full_epochs,
        "epochs_saved_share": 1 - run_epochs / full_epochs if full_epochs else 0.0,
        "trial_seconds_total": sum(seconds),
    }


def final_runs(out: Path, name: str, overrides: list[str], seeds: list[int], epochs: int | None) -> list[dict]:
    runs = []
    for seed in seeds:
        run_dir = out / "final" / f"{name}_seed{seed}"
        length = [f"trainer.max_epochs={epochs}"] if epochs else []  # None = the config's own schedule
        metrics, seconds = run_entry(
            "train.py",
            [*overrides, *length, f"seed={seed}", f"hydra.run.dir={run_dir}"],
            run_dir,
            cwd=PROJECT_ROOT,
            log=out / "logs" / f"{name}_seed{seed}.log",
        )
        kept = {k: metrics.get(k) for k in ("val/acc_best", "test/acc", "test/nll", "test/ece", "epochs")}
        runs.append({"seed": seed, "run_dir": str(run_dir), "wall_seconds": seconds, **kept})
    return runs


def existing_runs(run_dirs: list[Path]) -> list[dict]:
    """Finished runs of the CNN defaults (e.g. from benchmarks/bench_train.py), instead of training them again."""
    runs = []
    for run_dir in run_dirs:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        kept = {k: metrics.get(k) for k in ("val/acc_best", "test/acc", "test/nll", "test/ece", "epochs")}
        runs.append({"seed": metrics.get("seed"), "run_dir": str(run_dir), "wall_seconds": None, **kept})
    return runs


def stat(values: list[float]) -> dict:
    mean, sd = mean_sd(values)
    return {"mean": mean, "sd": sd, "n": len(values), "values": values}


def summarise(runs: list[dict]) -> dict:
    val, test = [r["val/acc_best"] for r in runs], [r["test/acc"] for r in runs]
    return {"runs": runs, "val": stat(val), "test": stat(test)}


def report(summary: dict) -> str:
    s, best, default = summary["sweep"], summary["best"], summary["default"]
    p = s["pruning"]

    def acc(stat: dict) -> str:
        return f"{100 * stat['mean']:.2f} ± {100 * stat['sd']:.2f} % (n={stat['n']})"

    lines = [
        f"# Optuna sweep: hparams_search={summary['search']}",
        "",
        f"Sweep: `{summary['commands']['sweep']}` — {s['wall_seconds'] / 60:.1f} min",
        f"- trials: {p['trials']['COMPLETE']} complete, {p['trials']['PRUNED']} pruned, {p['trials']['FAIL']} failed",
        f"- best validation accuracy: {100 * s['best_value']:.2f} % (trial {s['best_trial']}, "
        f"{summary['sweep_epochs']} epochs)",
        f"- best params: {s['best_params']}",
        f"- pruning: {p['epochs_trained']} epochs trained of {p['epochs_without_pruning']} without pruning "
        f"({100 * p['epochs_saved_share']:.0f} % saved)",
        "",
        f"Full-length runs ({summary['full_epochs'] or 'config default'} epochs; seeds: best {summary['seeds']}, "
        f"default {[r['seed'] for r in default['runs']]}):",
        "",
        "| config | val acc (best epoch) | test acc |",
        "|---|---|---|",
        f"| defaults (`python train.py {' '.join(summary['default_run'])}`) | {acc(default['val'])} "
        f"| {acc(default['test'])} |",
        f"| sweep's best | {acc(best['val'])} | {acc(best['test'])} |",
        "",
        f"Best-params command: `python train.py {' '.join(summary['best_overrides'])}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "bench_sweep")
    parser.add_argument("--search", choices=sorted(DEFAULT_RUN), default="cnn", help="hparams_search=<search>")
    parser.add_argument("--trials", type=int, default=20, help="sweep trials")
    parser.add_argument("--sweep-epochs", type=int, default=3, help="epochs per trial (the short budget)")
    parser.add_argument("--full-epochs", type=int, default=None, help="epochs of the final runs (default: config's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--overrides", nargs="*", default=[], help="extra overrides for every command (e.g. data)")
    parser.add_argument("--sweep-overrides", nargs="*", default=[], help="extra overrides for the sweep only")
    parser.add_argument(
        "--default-runs", type=Path, nargs="*", default=[],
        help="finished full-length runs of the default config to compare with (else trained here with --seeds)",
    )  # fmt: skip
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    study, results, sweep_seconds = sweep(
        out, args.search, args.trials, args.sweep_epochs, args.overrides + args.sweep_overrides
    )
    # the best trial as a plain run, minus what this script sets (epochs, seed, directories)
    own = SET_HERE + tuple(key_of(o) + "=" for o in args.overrides)
    best_overrides = [o for o in results["best_overrides"] if not o.lstrip("+~").startswith(own)]
    best = final_runs(out, "best", [*best_overrides, *args.overrides], args.seeds, args.full_epochs)
    if args.default_runs:
        default = existing_runs(args.default_runs)
    else:
        default = final_runs(out, "default", [*DEFAULT_RUN[args.search], *args.overrides], args.seeds, args.full_epochs)
    sweep_command = (
        f"python train.py -m hparams_search={args.search} hydra.sweeper.n_trials={args.trials} "
        f"trainer.max_epochs={args.sweep_epochs}"
    )
    summary = {
        "commands": {"sweep": sweep_command},
        "search": args.search,
        "default_run": DEFAULT_RUN[args.search],
        "sweep_epochs": args.sweep_epochs,
        "full_epochs": args.full_epochs,
        "seeds": args.seeds,
        "sweep": {
            "wall_seconds": sweep_seconds,
            **{k: results[k] for k in ("best_trial", "best_value", "best_params")},
            "pruning": pruning_savings(study, args.sweep_epochs),
        },
        "best_overrides": best_overrides,
        **{name: summarise(runs) for name, runs in (("best", best), ("default", default))},
    }
    (out / "bench_sweep.json").write_text(json.dumps(summary, indent=2))
    text = report(summary)
    (out / "bench_sweep.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
