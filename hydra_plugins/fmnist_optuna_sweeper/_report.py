"""What a sweep leaves in its directory: optimization_results.yaml and trials.csv (the study's figures are
optuna-dashboard's: history, importances, parallel coordinates, intermediate values).

They describe the whole study (earlier runs of a resumed study and other workers' trials included), and are
rewritten after every batch of trials, so an interrupted sweep still has them.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from fmnist.utils.io import atomic_path

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"


def _atomic_write(path: Path, write: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:  # readers (dashboards, scripts) never see half
        write(f)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def write_results(study: optuna.Study, sweep_dir: Path, metric: str, storage_label: str) -> Path:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    results: dict[str, Any] = {
        "name": "fmnist_optuna",
        "study_name": study.study_name,
        "storage": storage_label,
        "direction": study.direction.name.lower(),
        "optimized_metric": metric,
        "trials": {state.name: counts.get(state.name, 0) for state in TrialState},
        "epochs_run": sum(len(t.intermediate_values) for t in trials),
    }
    best = best_trial(study)
    if best is not None:
        results.update(
            best_trial=best.number,
            best_value=best.value,
            best_params=dict(best.params),
            # `python train.py <these>` repeats the best trial as a single run (test split scored at the end)
            best_overrides=list(best.user_attrs.get("overrides", [])),
            best_run_dir=best.user_attrs.get("run_dir"),
        )
    path = sweep_dir / RESULTS_FILE
    _atomic_write(path, lambda f: f.write(OmegaConf.to_yaml(OmegaConf.create(results))))
    return path


def write_trials_csv(study: optuna.Study, sweep_dir: Path) -> Path:
    """One row per trial: state, value, epochs it ran (= values reported), duration, params, run dir, error.
    Hand-written rather than Optuna's `study.trials_dataframe()`, which needs pandas, a dependency nothing else has."""
    trials = study.get_trials(deepcopy=False)
    param_names = sorted({name for t in trials for name in t.params})
    rows = []
    for t in trials:
        duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "epochs": len(t.intermediate_values),
                "duration_s": None if duration is None else round(duration, 1),
                "datetime_start": t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None,
                **{f"params_{name}": t.params.get(name) for name in param_names},
                "run_dir": t.user_attrs.get("run_dir"),
                "error": t.user_attrs.get("error"),
            }
        )
    fields = ["number", "state", "value", "epochs", "duration_s", "datetime_start"]
    fields += [f"params_{n}" for n in param_names] + ["run_dir", "error"]

    def write(f: Any) -> None:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    path = sweep_dir / TRIALS_FILE
    _atomic_write(path, write)
    return path
