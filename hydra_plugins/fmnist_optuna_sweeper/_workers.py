"""Several sweep processes ("workers") on one study: heartbeats for the trials a worker runs, failing (and retrying)
the trials of a worker that died, and a sampler seeded per trial so that workers started together differ.

Optuna starts its heartbeat thread and checks for stale trials only inside `study.optimize`; the sweeper asks and
tells, so it does both itself, the same way (`optuna.storages.fail_stale_trials`, `storage.record_heartbeat`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import optuna
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from fmnist.utils.errors import UserError

from ._search_space import SearchSpace

log = logging.getLogger(__name__)


def heartbeat_interval(storage: BaseStorage) -> int | None:
    """The storage's heartbeat interval in seconds; None = heartbeats off (journal files, RDB without one)."""
    getter = getattr(storage, "get_heartbeat_interval", None)
    return getter() if getter is not None else None


class Heartbeat:
    """While a batch of trials runs: a background thread records each trial's heartbeat every interval, so other
    workers see the trials are alive. Used as `with Heartbeat(storage, trials): <launch and tell>`; the thread stops
    when the block ends (the trials are told, or the sweep is interrupted). A no-op without a heartbeat interval."""

    def __init__(self, storage: BaseStorage, trial_ids: Sequence[int]) -> None:
        self._storage, self._trial_ids = storage, list(trial_ids)
        self._interval = heartbeat_interval(storage)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._interval is not None and self._trial_ids:
            self._beat()  # at once: a trial without any heartbeat is never considered stale
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        assert self._interval is not None
        while not self._stop.wait(self._interval):
            self._beat()

    def _beat(self) -> None:
        for trial_id in self._trial_ids:
            try:
                self._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
            except Exception as e:  # a database hiccup must not kill the running trials; the next beat may pass
                log.warning(f"Could not record the heartbeat of trial id {trial_id}: {type(e).__name__}: {e}")


def fail_stale_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Before asking for trials: RUNNING trials whose heartbeat is older than the grace period (their worker was
    killed or lost its machine) become FAIL, and the storage's retry callback enqueues their params again as a
    WAITING trial, which the next `ask` of any worker picks up. Returns the numbers of the trials failed here."""
    if heartbeat_interval(storage) is None:
        return []
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    if not running:
        return []
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    # a trial failed by its own worker in the meantime carries an `error` attribute; a stale one does not
    now_failed = [t.number for t in failed if t.number in running and "error" not in t.user_attrs]
    for number in now_failed:
        log.warning(f"Trial {number}: its worker sent no heartbeat within the grace period (killed or lost); marked "
                    "FAIL, and re-enqueued with the same params if hydra.sweeper.retry_failed allows.")  # fmt: skip
    return now_failed


def ask(study: optuna.Study, distributions: dict[str, Any]) -> optuna.Trial:
    """study.ask without Optuna's warning that heartbeats are meant for study.optimize (we beat ourselves)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        return study.ask(distributions)


class TrialSeededSampler(BaseSampler):
    """The configured sampler, rebuilt before each trial with seed + trial number. Trial numbers are unique in the
    storage, so workers started at the same moment on one study draw different params (one shared seed would make
    their random start-up trials identical), a resumed study continues the search instead of replaying it, and a
    sweep on a fresh study still repeats exactly. seed=None: one unseeded sampler, as configured."""

    def __init__(self, make: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._make, self._seed = make, seed
        self._inner = make(seed)

    def __getattr__(self, name: str) -> Any:  # e.g. GridSampler.is_exhausted
        if name.startswith("__") or "_inner" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self._inner, name)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self._seed is not None:
            self._inner = self._make(self._seed + trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str, dist: Any) -> Any:
        return self._inner.sample_independent(study, trial, param_name, dist)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler calls study.stop() once the grid is covered, which only works inside study.optimize();
    the sweeper asks and tells, and checks is_exhausted() itself."""

    def after_trial(self, study: optuna.Study, trial: Any, state: TrialState, values: Any) -> None:
        pass


def make_sampler(cfg: Any, space: SearchSpace) -> BaseSampler:
    """The configured sampler (default TPE), reseeded per trial (TrialSeededSampler); the grid sampler as it is
    (workers and resumed runs share its grid through the storage, and each trial takes an unvisited point)."""
    cfg = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg or {})
    target = cfg.pop("_target_", "optuna.samplers.TPESampler")
    seed = None if cfg.get("seed") is None else int(cfg["seed"])
    grid = space.grid() if get_class(target) is optuna.samplers.GridSampler else None

    def make(trial_seed: int | None) -> BaseSampler:
        args = (cfg | {"seed": trial_seed}) if "seed" in cfg else cfg
        if grid is not None:
            return AskTellGridSampler(search_space=grid, **args)
        return instantiate({"_target_": target, **args})

    sampler = make(seed)
    if not isinstance(sampler, BaseSampler):
        raise UserError(f"hydra.sweeper.sampler: {target} is not an Optuna sampler.")
    if grid is not None:  # its seed shuffles the grid, whose ids the storage records: one seed for every worker
        return sampler
    return TrialSeededSampler(make, seed)
