"""Loggers: a metrics.csv that survives interruptions; W&B online when the user is logged in, offline otherwise,
its config the composed Hydra config; every job ends its W&B run."""

from __future__ import annotations

import csv
import io
import logging
import netrc
import os
from argparse import Namespace
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities import rank_zero_only

from fmnist.utils.io import atomic_path

log = logging.getLogger(__name__)


class CSVLogger(Logger):
    """metrics.csv and hparams.yaml in `save_dir/name/version` (the run directory itself with the configured ""), as
    Lightning's CSVLogger writes them, except that a resumed run (same directory) continues its metrics.csv: Lightning's
    deletes the epochs logged before the interruption, and a Ctrl-C while it rewrites the file for a new column can
    leave rows wider than the header, which the resumed run then dies reading. This one appends rows while the columns
    stay the same and writes the whole file atomically when a column is added. Local files only (run directories
    are). Built on Lightning's public Logger interface."""

    def __init__(self, save_dir: str, name: str = "", version: str = "") -> None:
        super().__init__()
        self._save_dir, self._name, self._version = str(save_dir), name, version
        self.metrics_file = Path(self.log_dir) / "metrics.csv"
        self.hparams: dict[str, Any] = {}
        self.columns: list[str] = []
        self.written: list[dict] = []  # the rows in the file: rewritten with them when a column is added
        self.pending: list[dict] = []  # rows logged since the last save
        if self.metrics_file.is_file():
            with self.metrics_file.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                self.columns = list(reader.fieldnames or [])
            # a row of the wrong width (None key: too many fields; None value: too few) is misaligned: drop it
            self.written = [r for r in rows if None not in r and None not in r.values()]
            if len(self.written) < len(rows):
                dropped = len(rows) - len(self.written)
                log.warning("%s: dropped %d malformed row(s) left by an interrupted run", self.metrics_file, dropped)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self._version

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def log_dir(self) -> str:
        return os.path.join(self._save_dir, self._name, self._version)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.hparams.update(vars(params) if isinstance(params, Namespace) else dict(params or {}))
        Path(self.log_dir).mkdir(parents=True, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, "hparams.yaml"), self.hparams)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        self.pending.append(row | {"step": len(self.written) + len(self.pending) if step is None else step})

    @rank_zero_only
    def save(self) -> None:
        """Called by Lightning after every logging step."""
        if not self.pending:
            return
        columns = sorted(set(self.columns).union(*self.pending))
        if columns == self.columns and self.metrics_file.is_file():
            text = io.StringIO()  # the same columns: append, in one write
            csv.DictWriter(text, fieldnames=columns).writerows(self.pending)
            with self.metrics_file.open("a", newline="") as f:
                f.write(text.getvalue())
        else:  # a new column: the whole file again, with the new header, replacing the old one at once
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.metrics_file) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.written + self.pending)
        # only after the file is written: an interrupted save leaves the state to retry from
        self.written.extend(self.pending)
        self.columns, self.pending = columns, []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


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
