"""Loggers: W&B online when the user is logged in, offline otherwise; every job ends its W&B run."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)


class _ContinuingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        # Lightning deletes an existing metrics.csv here; keep it and its columns instead
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


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
        if isinstance(logger, WandbLogger):
            for key, path in images.items():
                logger.log_image(key=key, images=[str(path)])


def finish_wandb(loggers: list[Logger]) -> None:
    """End the W&B run of this job (so the next job of a multirun starts its own) and say how to upload it."""
    for logger in loggers:
        if not isinstance(logger, WandbLogger) or logger._experiment is None:
            continue
        import wandb

        run = logger.experiment
        offline = run.settings.mode in ("offline", "dryrun") if hasattr(run, "settings") else False
        run_dir = Path(run.dir).parent
        wandb.finish()
        logger._experiment = None
        if offline:
            log.info(f"W&B run saved offline in {run_dir}; upload it with: wandb sync {run_dir}")
