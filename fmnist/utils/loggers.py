"""Loggers: W&B online when the user is logged in, offline otherwise, its config the composed Hydra config; every
job ends its W&B run."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from fmnist.utils.io import atomic_path

log = logging.getLogger(__name__)


class _ContinuingWriter(ExperimentWriter):
    """Lightning's writer appends to metrics.csv and rewrites it in place when a new column appears; a Ctrl-C
    during that save can leave rows wider than the header, and the resumed run then dies reading them. This one
    keeps an existing file (a resumed run continues it), appends rows while the columns stay the same and writes
    the whole file atomically when a column is added. Local files only (run directories are)."""

    def _check_log_dir_exists(self) -> None:  # the writer's protected start-up hook: Lightning has no public one
        self._rows: list[dict] = []
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            self.metrics_keys = list(reader.fieldnames or [])
        # a row of the wrong width (None key: too many fields; None value: too few) is misaligned: drop it
        self._rows = [r for r in rows if None not in r and None not in r.values()]
        if len(self._rows) < len(rows):
            log.warning(
                "%s: dropped %d malformed row(s) left by an interrupted run",
                self.metrics_file_path,
                len(rows) - len(self._rows),
            )

    def save(self) -> None:
        if not self.metrics:
            return
        keys = sorted(set(self.metrics_keys).union(*self.metrics))
        if keys == self.metrics_keys and os.path.isfile(self.metrics_file_path):
            # the same columns: append, in one write (Lightning saves after every logging step)
            text = io.StringIO()
            csv.DictWriter(text, fieldnames=keys).writerows(self.metrics)
            with open(self.metrics_file_path, "a", newline="") as f:
                f.write(text.getvalue())
        else:  # a new column: the whole file again, with the new header, replacing the old one at once
            with atomic_path(Path(self.metrics_file_path)) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys)
                writer.writeheader()
                writer.writerows(self._rows + self.metrics)
        # only after the file is written: an interrupted save leaves the state to retry from
        self._rows.extend(self.metrics)
        self.metrics_keys, self.metrics = keys, []


class CSVLogger(LightningCSVLogger):
    """Lightning's CSVLogger, except that a resumed run (same run directory) continues its metrics.csv instead of
    deleting the epochs logged before the interruption."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(log_dir=self.log_dir)
        return self._experiment


def wandb_logged_in() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with one config per run: the first `log_hyperparams` sets it. The task frame calls it
    first, with the whole composed Hydra config (data, model, trainer, ... nested once); the calls the Trainer then
    makes by itself at the start of fit and test send the LightningModule's and DataModule's `save_hyperparameters`
    (their init arguments: a flat copy of `model:` and `data:`), which W&B would add beside the tree as some
    25 duplicate top-level keys (`batch_size` next to `data.batch_size`). Those are left out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._config_logged = False

    def log_hyperparams(self, params: dict[str, Any] | Any) -> None:
        if self._config_logged:
            log.debug("W&B config already set for this run; later hyperparameters not added")
            return
        super().log_hyperparams(params)
        self._config_logged = True


def wandb_logger(mode: str = "auto", **kwargs) -> WandbLogger:
    """A WandbLogger whose mode is passed to `wandb.init` explicitly. `offline=True` would instead set WANDB_MODE
    for the whole process (and every later run in it). `auto` = online if logged in, else offline; an explicit
    WANDB_MODE in the environment wins over `auto`."""
    if mode == "auto":
        mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    Path(kwargs.get("save_dir") or ".").mkdir(parents=True, exist_ok=True)
    return WandbLogger(mode=mode, **kwargs)


def log_images(loggers: list[Logger], images: dict[str, Path]) -> None:
    for logger in loggers:
        if isinstance(logger, LightningWandbLogger):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)])


def finish_wandb(loggers: list[Logger]) -> None:
    """End the W&B run of this job, so the next job of a multirun starts its own. W&B itself then prints how to
    upload an offline run (`wandb sync <dir>`), once."""
    if not any(isinstance(logger, LightningWandbLogger) for logger in loggers):
        return
    import wandb

    if wandb.run is not None:  # the job's run, if its logger started one (a job that failed early has none)
        wandb.finish()
