"""Config of the sweeper, registered as `hydra/sweeper=fmnist_optuna`, with its sampler and pruner groups.

The user-facing keys follow the retired `hydra-optuna-sweeper` plugin (sampler, direction, study_name, storage,
n_trials, n_jobs, params) so its users feel at home; `pruner`, `max_failure_rate` and the heartbeat keys
(heartbeat_interval, grace_period, retry_failed: workers sharing a database study) are additions.
"""

# No `from __future__ import annotations` here: Hydra's plugin scan executes this module before registering it in
# sys.modules, and dataclasses cannot resolve string annotations without that entry.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

DEFAULT_SEED = 42  # samplers are seeded by default, so a sweep repeats; set seed=null for a fresh search


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = DEFAULT_SEED
    n_startup_trials: int = 10  # random trials before the model takes over
    multivariate: bool = True  # model the parameters jointly (they interact: lr, batch size, weight decay)
    constant_liar: bool = True  # parallel trials (n_jobs > 1, several workers) avoid suggesting the same point


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = DEFAULT_SEED


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = DEFAULT_SEED
    n_startup_trials: int = 1
    warn_independent_sampling: bool = False  # categorical params are sampled independently; that is expected


@dataclass
class GridSamplerConf:
    # search_space is filled in by the sweeper from `params` (choice() and range() only)
    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = DEFAULT_SEED


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # finished trials before anything is pruned
    n_warmup_steps: int = 1  # epochs (0-based) every trial runs before it can be pruned
    interval_steps: int = 1  # check every epoch


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # epochs the shortest bracket trains
    max_resource: Any = "auto"  # epochs of a full trial; auto = the longest trial seen
    reduction_factor: int = 3


@dataclass
class FmnistOptunaSweeperConf:
    _target_: str = "hydra_plugins.fmnist_optuna_sweeper.optuna_sweeper.FmnistOptunaSweeper"
    _recursive_: bool = False  # the sweeper builds the sampler (seed, grid) and pruner itself
    # _self_ first: the chosen sampler/pruner options fill in the null fields below
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": "tpe"}, {"pruner": None}])

    sampler: Any = None  # an optuna sampler config (_target_); groups: tpe (default), random, cmaes, grid
    pruner: Any = None  # an optuna pruner config (_target_); groups: median, hyperband; null = never prune
    direction: str = "maximize"  # maximize | minimize the value train() returns (cfg.optimized_metric)
    study_name: str | None = None  # null = "fmnist"; trials of the same name in the same storage form one study
    # null = SQLite file <sweep dir>/optuna.db; or an RDB URL (postgresql://user:PW@host:5432/db, mysql+pymysql://...,
    # sqlite:////abs/path.db); or a journal file path (*.log). Keep a password out of the command line and the saved
    # configs: storage='${oc.env:FMNIST_OPTUNA_STORAGE}' (docs/sweeps_database.md)
    storage: Any = None
    # seconds between heartbeats of a running trial, so other workers notice a killed one; null = off (fine for one
    # machine's SQLite/journal); e.g. 10 with a PostgreSQL/MySQL study shared by several workers. RDB storages only
    heartbeat_interval: int | None = None
    grace_period: int | None = None  # seconds without a heartbeat before a trial is failed; null = 2 x the interval
    retry_failed: int = 0  # times a trial failed that way is re-enqueued with the same params; 0 = never
    n_trials: int = 20  # trials this command adds to the study
    n_jobs: int = 1  # trials launched together (run in parallel by a parallel launcher, e.g. joblib)
    max_failure_rate: float = 0.5  # stop once more than this share of n_trials has failed
    params: dict[str, Any] = field(default_factory=dict)  # key: sweep expression (interval, choice, range, tag)


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="fmnist_optuna", node=FmnistOptunaSweeperConf, provider="fmnist")
for name, node in {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "grid": GridSamplerConf,
}.items():
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="fmnist")
store.store(group="hydra/sweeper/pruner", name="median", node=MedianPrunerConf, provider="fmnist")
store.store(group="hydra/sweeper/pruner", name="hyperband", node=HyperbandPrunerConf, provider="fmnist")
