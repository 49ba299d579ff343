"""The Optuna sweeper's search-space parsing, objective and value checks, storages and W&B grouping, in process
(the sweeps themselves: test_sweeper.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from fmnist.utils.errors import UserError
from hydra_plugins.fmnist_optuna_sweeper._impl import OptunaSweeperImpl, check_objective
from hydra_plugins.fmnist_optuna_sweeper._search_space import parse_search_space
from hydra_plugins.fmnist_optuna_sweeper._study import open_storage, redact

from conftest import CONF_DIR, compose_cfg, tiny_data_overrides


def test_sweep_syntax_parses_into_optuna_distributions():
    space = parse_search_space(
        {"a": "interval(0.1, 0.5)", "b": "tag(log, interval(1e-4, 1e-1))", "c": "int(interval(1, 8))",
         "d": "tag(log, int(interval(16, 256)))", "e": "range(0, 5)", "f": "range(0.0, 0.5, 0.1)",
         "g": "choice(64, 128)", "h": "choice([[16,32],[64]], [[32,64],[128]])", "i": "x,y", "j": 3},
        ["g=choice(32,64)", "e=2"],  # the command line wins: g re-swept, e fixed
    )  # fmt: skip
    d = space.distributions
    assert d["a"] == FloatDistribution(0.1, 0.5)
    assert d["b"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert d["c"] == IntDistribution(1, 8)
    assert d["d"] == IntDistribution(16, 256, log=True)
    assert d["f"] == FloatDistribution(0.0, 0.4, step=0.1)  # range() excludes its stop, like Hydra's
    assert d["g"] == CategoricalDistribution([32, 64])
    assert d["h"] == CategoricalDistribution(["[[16,32],[64]]", "[[32,64],[128]]"])  # lists kept as override text
    assert d["i"] == CategoricalDistribution(["x", "y"])
    assert "e" not in d and "j" not in d and sorted(space.fixed) == ["e=2", "j=3"]
    assert space.overrides({"h": "[[16,32],[64]]", "b": 1e-05}) == ["h=[[16,32],[64]]", "b=1e-05"]
    added = parse_search_space({}, ["+trainer.gradient_clip_val=choice(0.5,1.0)"])  # a key the config lacks
    assert added.overrides({"trainer.gradient_clip_val": 0.5}) == ["+trainer.gradient_clip_val=0.5"]
    assert parse_search_space({"e": "range(1, 10, 3)"}, []).grid() == {"e": [1, 4, 7]}
    with pytest.raises(UserError, match="grid sampler needs a finite set"):
        parse_search_space({"a": "interval(0, 1)"}, []).grid()
    for bad in ("shuffle(choice(1,2))", "tag(exp, interval(0,1))", "interval(1, 0)", "choice(1,", "glob(*)"):
        with pytest.raises(UserError):
            parse_search_space({"a": bad}, [])


SEARCH_SPACES = sorted(p.stem for p in (Path(CONF_DIR) / "hparams_search").glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("name", SEARCH_SPACES)
def test_shipped_search_spaces_compose_and_name_real_keys(name, tiny_data, tmp_path):
    params = OmegaConf.load(Path(CONF_DIR) / "hparams_search" / f"{name}.yaml").hydra.sweeper.params
    space = parse_search_space(params, [])
    assert len(space.distributions) == len(params)
    if name == "cnn":
        searched = {"model.optimizer.lr", "model.optimizer.weight_decay", "data.batch_size", "model.backbone.dropout",
                    "model.backbone.stages", "model.label_smoothing", "aug.translate"}  # fmt: skip
        assert searched <= set(space.distributions)
    cfg = compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), f"hparams_search={name}"], tmp_path)
    assert cfg.hydra.sweeper._target_.endswith("FmnistOptunaSweeper") and cfg.hydra.sweeper.sampler.seed == 42
    assert cfg.callbacks.optuna_pruning.trial is None  # a plain run: the pruning callback does nothing
    for key in params:  # a typo in the search space would only surface when its first trial runs
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key


def test_a_test_metric_is_refused():
    space = parse_search_space({}, [])
    with pytest.raises(UserError, match="must not optimise a test metric"):
        check_objective(OmegaConf.create({"optimized_metric": "test/acc"}), space)
    assert check_objective(OmegaConf.create({"optimized_metric": "val/acc_best"}), space) == "val/acc_best"


BASE = {"direction": "maximize", "n_trials": 2, "n_jobs": 1, "max_failure_rate": 0.5}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"grace_period": 20}, "set hydra.sweeper.heartbeat_interval too"),
        ({"retry_failed": 1}, "set hydra.sweeper.heartbeat_interval too"),
        ({"heartbeat_interval": 10, "grace_period": 10}, "grace_period=10 must exceed heartbeat_interval=10"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be at least 1"),
        ({"heartbeat_interval": 10, "retry_failed": -1}, "retry_failed at least 0"),
        ({"direction": "up"}, "use maximize or minimize"),
        ({"max_failure_rate": 2}, "between 0 and 1"),
    ],
)
def test_heartbeat_and_other_sweeper_values_are_checked_before_any_trial(keys, message):
    with pytest.raises(UserError, match=re.escape(message)):
        OptunaSweeperImpl(**{**BASE, **keys})._check_numbers()
    OptunaSweeperImpl(**BASE, heartbeat_interval=10, grace_period=30, retry_failed=1)._check_numbers()  # valid


def test_heartbeats_need_an_rdb_storage(tmp_path):
    journal = str(tmp_path / "study.log")
    with pytest.raises(UserError, match="a journal file keeps no heartbeats"):
        open_storage(journal, heartbeat_interval=10)
    assert not Path(journal).exists()  # refused before anything was written
    open_storage(journal)  # without heartbeats a journal file is fine
    rdb = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=10, grace_period=30, retry_failed=2)
    assert rdb.get_heartbeat_interval() == 10 and rdb.grace_period == 30
    assert rdb.failed_trial_callback is not None


def test_wandb_trials_of_one_sweep_share_a_group(tiny_data, tmp_path):
    sweeper = OptunaSweeperImpl(storage=None)
    sweeper.config = compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), "logger=wandb"], tmp_path)
    extra = sweeper._bookkeeping_overrides(7, "cnn", tmp_path / "2026-01-01_00-00-00_000000")
    assert extra == ["++optuna_trial=7", "logger.wandb.group='cnn-2026-01-01_00-00-00_000000'",
                     "logger.wandb.name='trial-7'"]  # fmt: skip
    job = compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), "logger=wandb", *extra], tmp_path)
    assert job.logger.wandb.group == "cnn-2026-01-01_00-00-00_000000" and job.optuna_trial == 7
    sweeper.config = OmegaConf.create({"logger": {"csv": {"_target_": "x"}}})
    assert sweeper._bookkeeping_overrides(7, "cnn", tmp_path) == ["++optuna_trial=7"]
    assert redact("postgresql://me:secret@db/optuna") == "postgresql://me:***@db/optuna"


def test_a_literal_storage_password_reaches_the_jobs_through_the_environment_only(tmp_path, monkeypatch):
    """The jobs' configs (saved by Hydra in every trial's .hydra/) get ${oc.env:FMNIST_SWEEP_STORAGE}, the URL goes
    to the environment; a job run without that environment stops with a message naming the variable."""
    from hydra.core.hydra_config import HydraConfig

    from hydra_plugins.fmnist_optuna_sweeper._study import STORAGE_ENV, hand_storage_to_jobs
    from hydra_plugins.fmnist_optuna_sweeper.optuna_sweeper import open_trial

    monkeypatch.delenv(STORAGE_ENV, raising=False)
    url = "postgresql://fmnist:s3cret-Pw@db.example:5432/optuna"
    cfg = compose_cfg("train", ["hparams_search=cnn", f"hydra.sweeper.storage={url}"], tmp_path / "run")
    hand_storage_to_jobs(cfg, url)
    assert "s3cret-Pw" not in OmegaConf.to_yaml(cfg)  # what the launcher recomposes each job from, unresolved
    written = OmegaConf.to_container(cfg.hydra.overrides.hydra, resolve=False)
    assert written == [f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"]
    assert os.environ[STORAGE_ENV] == url
    monkeypatch.delenv(STORAGE_ENV)  # a job started without the sweep's environment (e.g. SLURM --export=NONE)
    HydraConfig().set_config(cfg)  # the job's view: its Hydra config, recomposed from those overrides
    with pytest.raises(UserError, match=STORAGE_ENV):
        open_trial(0)
