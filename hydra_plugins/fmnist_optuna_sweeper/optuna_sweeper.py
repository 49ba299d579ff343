"""The plugin's public names: the sweeper class Hydra instantiates for `hydra/sweeper=fmnist_optuna`, and
`open_trial`, through which a training job reports to its trial (_pruning.py).

This module is imported by Hydra's plugin scan at every start-up, so it only defers to the `_`-modules (Optuna and the
rest load when a sweep or a trial actually starts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

if TYPE_CHECKING:
    import optuna


class FmnistOptunaSweeper(Sweeper):
    """Optuna search over Hydra overrides: `params` maps config keys to sweep expressions (interval, choice, range,
    tag(log, ...)); each trial is one Hydra job; its return value (cfg.optimized_metric) is the objective."""

    def __init__(self, **conf: Any) -> None:
        from ._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**conf)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self._impl.sweep(arguments)


def open_trial(number: int) -> optuna.Trial:
    """In a sweep job: trial `number` of the sweep's study, reached through the storage in the job's Hydra config."""
    from ._study import open_trial as open_study_trial

    return open_study_trial(number)
