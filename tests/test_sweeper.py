"""The Optuna sweeper (hydra_plugins/fmnist_optuna_sweeper) through the real CLI on tiny synthetic data (its
search-space parsing and config checks: test_sweeper_config.py).

How failures are made certain: `model.backbone.dropout=1.5` raises when the CNN is built (torch refuses a
probability above 1); `model.std=[0.0]` divides every input by zero, so the network computes NaN — val/loss is NaN
and val/acc is exactly chance (0.1, the argmax of NaN logits is class 0 on a balanced validation split).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import compose_cfg, run_cli, tiny_data_overrides


def data_overrides(tiny_data, root: Path) -> list[str]:
    """The tiny data set, without its fixed batch size (the CNN search space samples one). One thread: these models
    are tiny, and more threads on shared, busy cores made epochs several times slower."""
    return [o for o in tiny_data_overrides(tiny_data, root) if not o.startswith("data.batch_size=")] + ["threads=1"]


def sweep(*args: str):
    result = run_cli("train.py", "-m", *args)
    return result, result.stdout + result.stderr


def only_sweep_dir(root: Path) -> Path:
    (sweep_dir,) = (root / "train" / "multiruns").iterdir()
    return sweep_dir


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage)


# --- the shipped CNN search space, end to end: results and storage -------------------------------------------------
def test_sweep_writes_results_and_storage_holds_the_trials(tiny_data, tmp_path):
    result, output = sweep(
        "hparams_search=cnn", *data_overrides(tiny_data, tmp_path), "trainer.max_epochs=1", "hydra.sweeper.n_trials=3",
        "data.batch_size=choice(50,100)",  # tiny data: 500 training images
        "model.optimizer.lr=tag(log,interval(5e-3,2e-2))",
        "model.backbone.stages=choice([[8],[16]],[[16],[32]])",  # small widths: fast trials
    )  # fmt: skip
    assert result.returncode == 0, output[-4000:]
    sweep_dir = only_sweep_dir(tmp_path)
    trials = load(f"sqlite:///{sweep_dir / 'optuna.db'}", "cnn").trials  # the default storage, in the sweep dir
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    for name in ["optimization_results.yaml", "trials.csv"]:
        assert (sweep_dir / name).stat().st_size > 0, name
    assert not list(sweep_dir.glob("*.png")), "the study's figures are optuna-dashboard's, not files of the sweep"
    for t in trials:  # each trial ran with its sampled params, and its value is what the job measured
        run = Path(t.user_attrs["run_dir"])
        assert run == sweep_dir / str(t.number)
        cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
        assert cfg.optuna_trial == t.number
        assert cfg.model.optimizer.lr == t.params["model.optimizer.lr"]
        assert 5e-3 <= t.params["model.optimizer.lr"] <= 2e-2
        assert OmegaConf.to_container(cfg.model.backbone.stages) == yaml.safe_load(t.params["model.backbone.stages"])
        assert cfg.aug.translate == t.params["aug.translate"] and cfg.aug._target_  # aug=basic from the space
        metrics = json.loads((run / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val/acc_best"])
        assert "test/acc" not in metrics  # trials are judged on validation only
        assert t.intermediate_values == {0: pytest.approx(t.value)}  # reported per epoch through the storage
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    best = max(trials, key=lambda t: t.value)
    assert results["best_trial"] == best.number and results["best_value"] == pytest.approx(best.value)
    assert results["best_params"] == best.params and results["trials"]["COMPLETE"] == 3
    # best_overrides repeat the trial as a plain run (not another sweep) that scores the test split
    assert "aug=basic" in results["best_overrides"]
    assert not any(o.startswith("hparams_search") for o in results["best_overrides"])
    single = compose_cfg("train", results["best_overrides"], sweep_dir / "repeat")
    assert single.test is True and single.hydra.mode is None and "optuna_pruning" not in single.callbacks
    assert single.model.optimizer.lr == best.params["model.optimizer.lr"]
    stages = next(o for o in results["best_overrides"] if o.startswith("model.backbone.stages="))
    assert f"'{stages}'" in output.split("as a single run: python train.py")[1]  # quoted for a shell
    with open(sweep_dir / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["number"], r["state"], r["epochs"]) for r in rows] == [(str(i), "COMPLETE", "1") for i in range(3)]


# --- a second command on the same storage: resuming, and pruning through a journal-file storage -------------------
@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_rerun_adds_trials_to_the_study_and_the_pruner_stops_a_clearly_worse_one(tiny_data, tmp_path):
    storage = str(tmp_path / "study.log")  # a journal file
    fixed = [  # every param that matters fixed: the outcome depends only on the construction below
        "model.optimizer.lr=0.01", "data.batch_size=50", "model.backbone.dropout=0.1",
        "model.backbone.stages=[[16],[32]]", "model.backbone.hidden=64", "model.label_smoothing=0.0",
        "aug.translate=0", "aug.flip=0.0",
        "model.optimizer.weight_decay=tag(log,interval(1e-6,1e-5))",  # still sampled (harmless): shows the seed offset
    ]  # fmt: skip
    common = [
        "hparams_search=cnn", *data_overrides(tiny_data, tmp_path), *fixed, "hydra.sweeper.n_trials=1",
        f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=prune",
    ]  # fmt: skip
    good, output = sweep(*common, "trainer.max_epochs=2")
    assert good.returncode == 0, output[-4000:]
    # a network fed inputs divided by zero: chance accuracy (0.1) at every epoch; the median rule with one finished
    # trial and a warm-up of one epoch must stop it after its second epoch, one before its end
    bad, output = sweep(*common, "trainer.max_epochs=3", "model.std=[0.0]", "hydra.sweeper.pruner.n_startup_trials=1")
    assert bad.returncode == 0, output[-4000:]
    study = optuna.load_study(study_name="prune", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage)))  # fmt: skip
    first, second = study.trials  # two commands (two sweep directories), one study
    assert first.state == TrialState.COMPLETE and first.intermediate_values[1] > 0.1
    assert second.state == TrialState.PRUNED
    assert second.intermediate_values == {0: pytest.approx(0.1), 1: pytest.approx(0.1)}  # 2 of 3 epochs
    # the sampler's seed is offset by the trials already in the study: the second command does not replay the first
    assert second.params["model.optimizer.weight_decay"] != first.params["model.optimizer.weight_decay"]
    run = Path(second.user_attrs["run_dir"])
    assert run.name == "1" and not (run / "metrics.json").exists()  # numbered by trial; stopped, not finished
    sweep_dirs = sorted((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweep_dirs) == 2 and run.parent == sweep_dirs[1]
    results = yaml.safe_load((sweep_dirs[1] / "optimization_results.yaml").read_text())
    assert results["trials"]["COMPLETE"] == 1 and results["trials"]["PRUNED"] == 1 and results["best_trial"] == 0
    # the same bad trial on a 2-epoch budget: past the warm-up only at its last epoch, when pruning would save
    # nothing, so it completes with its (chance) value instead of being recorded as pruned
    last, output = sweep(*common, "trainer.max_epochs=2", "model.std=[0.0]", "hydra.sweeper.pruner.n_startup_trials=1")
    assert last.returncode == 0, output[-4000:]
    third = optuna.load_study(study_name="prune", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(storage))).trials[2]  # fmt: skip
    assert third.state == TrialState.COMPLETE and third.value == pytest.approx(0.1)


# --- failures -----------------------------------------------------------------------------------------------------
def test_failed_and_nan_trials_are_recorded_and_the_sweep_goes_on(tiny_data, tmp_path):
    result, output = sweep(
        "hydra/sweeper=fmnist_optuna", "hydra/sweeper/sampler=grid", *data_overrides(tiny_data, tmp_path),
        "trainer.max_epochs=1", "test=false", "optimized_metric=val/loss", "hydra.sweeper.direction=minimize",
        "hydra.sweeper.n_trials=4", "hydra.sweeper.max_failure_rate=0.75", "model=cnn",
        "model.backbone.stages=[[8],[16]]", "model.backbone.dropout=choice(0.1,1.5)", "model.std=choice([0.353],[0.0])",
    )  # fmt: skip
    assert result.returncode == 0, output[-4000:]
    sweep_dir = only_sweep_dir(tmp_path)
    trials = load(f"sqlite:///{sweep_dir / 'optuna.db'}", "fmnist").trials
    outcome = {(t.params["model.backbone.dropout"], t.params["model.std"]): t for t in trials}
    assert len(trials) == 4 and len(outcome) == 4  # the whole grid ran
    assert outcome[0.1, "[0.353]"].state == TrialState.COMPLETE
    nan = outcome[0.1, "[0.0]"]
    assert nan.state == TrialState.FAIL and "returned nan" in nan.user_attrs["error"]
    for std in ("[0.353]", "[0.0]"):
        raised = outcome[1.5, std]
        assert raised.state == TrialState.FAIL and "dropout probability" in raised.user_attrs["error"]
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert results["best_trial"] == outcome[0.1, "[0.353]"].number and results["trials"]["FAIL"] == 3


def test_too_many_failures_stop_the_sweep(tiny_data, tmp_path):
    result, output = sweep(
        "hydra/sweeper=fmnist_optuna", *data_overrides(tiny_data, tmp_path), "hydra.sweeper.n_trials=3",
        "hydra.sweeper.max_failure_rate=0.3", "model.backbone.dropout=choice(1.5,2.5,3.5)",
    )  # fmt: skip
    assert result.returncode == 2, output[-4000:]
    assert "1 of 1 trials failed, more than max_failure_rate=0.3" in output
    sweep_dir = only_sweep_dir(tmp_path)
    trials = load(f"sqlite:///{sweep_dir / 'optuna.db'}", "fmnist").trials
    assert [t.state for t in trials] == [TrialState.FAIL]  # stopped after the first, nothing left RUNNING
    assert (sweep_dir / "trials.csv").is_file()


# --- several processes on one storage -----------------------------------------------------------------------------
RACE = """
import sys, optuna
from multiprocessing import Barrier, get_context
from hydra_plugins.fmnist_optuna_sweeper._study import open_storage

def work(barrier, url, seed):
    barrier.wait()  # all open the new database at the same moment
    study = optuna.create_study(study_name="s", storage=open_storage(url), load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(3):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, trial.params["x"])

if __name__ == "__main__":
    ctx = get_context("fork")
    barrier = ctx.Barrier(4)
    workers = [ctx.Process(target=work, args=(barrier, sys.argv[1], i)) for i in range(4)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    sys.exit(max(w.exitcode for w in workers))
"""


def test_processes_opening_one_new_storage_together_lose_no_trials(tmp_path):
    # without open_storage's retry, all but one of the processes died on an IntegrityError (schema creation race)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    result = subprocess.run([sys.executable, "-c", RACE, url], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = load(url, "s").trials
    assert sorted(t.number for t in trials) == list(range(12)) and {t.state for t in trials} == {TrialState.COMPLETE}
