"""Scale-out through existing engines: Hydra launcher configs, several sweep processes on one Optuna storage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from fmnist import PROJECT_ROOT

from conftest import compose_cfg, run_cli, tiny_data_overrides


@pytest.mark.parametrize(("launcher", "target"), [("parallel", "JoblibLauncher"), ("slurm", "SlurmLauncher")])
def test_launcher_configs_compose(launcher, target, tiny_data, tmp_path):
    cfg = compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), f"hydra/launcher={launcher}"], tmp_path)
    assert cfg.hydra.launcher._target_.endswith(target)
    assert (cfg.hydra.launcher.n_jobs == 2) if launcher == "parallel" else (cfg.hydra.launcher.timeout_min == 240)


@pytest.mark.slow  # two sweep processes; the PostgreSQL version of this test is slow as well
def test_two_sweep_processes_share_one_study(tiny_data, tmp_path):
    storage = tmp_path / "study.log"  # a journal file: the storage for several processes on one machine
    common = [
        "hparams_search=cnn", *tiny_data_overrides(tiny_data, tmp_path), "threads=1", "trainer.max_epochs=1",
        "model.backbone.stages=[[16],[32]]", "model.backbone.hidden=64", "data.batch_size=50",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=shared", "hydra.sweeper.n_trials=2",
    ]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    workers = []
    for seed in (1, 2):  # started together; different sampler seeds, as the README advises for parallel workers
        own = [f"hydra.sweeper.sampler.seed={seed}", f"hydra.sweep.dir={tmp_path / f'worker{seed}'}"]
        command = [sys.executable, str(PROJECT_ROOT / "train.py"), "-m", *common, *own]
        pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        workers.append(subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, **pipe))
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    for worker, output in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, output[-3000:]
    backend = optuna.storages.journal.JournalFileBackend(str(storage))
    trials = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(backend)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3], "4 trials in total, distinct numbers"
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    for trial in trials:  # no lost results: every trial's value is its run's validation metric
        metrics = json.loads((Path(trial.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val/acc_best"])


@pytest.mark.slow  # joblib worker processes, each importing torch and Lightning
def test_parallel_launcher_runs_jobs_in_worker_processes(tiny_data, tmp_path):
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), "threads=1", "trainer.max_epochs=1"]
    small_cnn = ["model=cnn", "model.backbone.hidden=32"]
    result = run_cli("train.py", "-m", "seed=1,2", "hydra/launcher=parallel", *overrides, *small_cnn)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    seeds = sorted(json.loads((sweep_dir / str(n) / "metrics.json").read_text())["seed"] for n in (0, 1))
    assert seeds == [1, 2]
    assert "Joblib.Parallel" in result.stdout + result.stderr  # the joblib launcher ran them
