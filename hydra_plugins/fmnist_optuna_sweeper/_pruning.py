"""Optuna pruning for sweep trials: report the validation metric after every epoch, stop when the pruner says so.

The trial is reached through the study's storage (named in the job's Hydra config), not through a Python object
handed over by the sweeper: the job may run in another process or on another machine (joblib, submitit), and
pruners compare against the other trials' values in the storage. The sweeper records the `optuna.TrialPruned`
raised here as PRUNED, not as a failure. A `_`-module, like the plugin's other parts, so that Hydra's plugin scan
does not import it at every start-up.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from fmnist.utils.errors import UserError

if TYPE_CHECKING:
    import optuna  # imported when a trial reports

log = logging.getLogger(__name__)


class OptunaPruning(Callback):
    """`monitor` is the metric reported per epoch (the sweep's optimized_metric); `trial` the trial number the sweeper
    sets for each job (`optuna_trial`). Without a trial (a plain run) the callback does nothing."""

    def __init__(self, monitor: str, trial: int | None = None) -> None:
        self.monitor = monitor
        self.trial_number = trial
        self._trial: optuna.Trial | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.trial_number is None or stage != "fit" or not trainer.is_global_zero:
            return
        from .optuna_sweeper import open_trial

        self._trial = open_trial(int(self.trial_number))
        log.info(f"Reporting {self.monitor} per epoch to Optuna trial {self.trial_number}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.trial_number is None or trainer.sanity_checking:
            return
        message = ""
        if trainer.is_global_zero and self._trial is not None:  # one process talks to the storage
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise UserError(
                    f"{self.monitor} (the sweep's optimized_metric) was not logged during validation; "
                    f"logged: {', '.join(sorted(trainer.callback_metrics))}."
                )
            self._trial.report(float(value), step=trainer.current_epoch)
            # after the last epoch the compute is spent: the trial completes with its value instead of being pruned
            last_epoch = 0 < trainer.max_epochs <= trainer.current_epoch + 1
            if not last_epoch and self._trial.should_prune():
                message = f"pruned after epoch {trainer.current_epoch}: {self.monitor}={float(value):.4f}"
        message = trainer.strategy.broadcast(message, src=0)  # every DDP process stops together
        if message:
            from optuna import TrialPruned

            raise TrialPruned(message)
