"""The frame every task runs in (train, eval, gan, ensemble, predict, export), like lightning-hydra-template's
`task_wrapper`: one place for what each of them did by itself before.

    @hydra_task("train")                      # conf/train.yaml; user errors -> one message and exit 2
    def main(cfg): return train(cfg)

    with task_run(cfg) as run:                # seed + threads, the run directory, loggers (+ CSV), hparams logged
        ... run.dir, run.loggers ...
        run.finish(metrics)                   # metrics.json, written last: its presence marks a complete run
                                              # (W&B is finished on the way out, also after an error)
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import fmnist.resolvers  # noqa: F401  (registers the config resolvers every entry config uses)
from fmnist import CONF_DIR
from fmnist.utils.config_check import checked, report_composition_errors
from fmnist.utils.errors import report_user_errors
from fmnist.utils.io import write_json
from fmnist.utils.loggers import CSVLogger, finish_wandb
from fmnist.utils.runtime import setup_runtime

# Noise a user cannot act on, in every run's output: Lightning's adverts for its hosted services at each Trainer's
# start ("💡 Tip: ... litlogger / litmodels"), and Lightning 2.6 using a class torch 2.14 deprecates.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(lambda rec: "💡 Tip:" not in rec.getMessage())
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group like `callbacks:` or `logger:` (null entries are skipped)."""
    if not group:
        return []
    return [instantiate(conf) for conf in group.values() if isinstance(conf, DictConfig) and "_target_" in conf]


@dataclass
class TaskRun:
    dir: Path  # the run directory (Hydra's output dir)
    loggers: list[Logger]  # the configured loggers, a CSVLogger among them when asked for

    def finish(self, metrics: dict) -> None:
        write_json(self.dir / "metrics.json", metrics)  # last: its presence marks a complete run


@contextmanager
def task_run(cfg: DictConfig, csv: bool = True) -> Iterator[TaskRun]:
    """Seed and threads, the run directory, the `logger:` group (a CSVLogger added when `csv` and none is
    configured: learning curves are drawn from its metrics.csv) with the resolved config logged as hyperparameters.
    W&B runs are finished on exit, also when the task fails, so an offline run is complete on disk."""
    setup_runtime(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # a resumed run reuses its directory: the old metrics.json must not mark it complete if this attempt fails
    (run_dir / "metrics.json").unlink(missing_ok=True)
    loggers = instantiate_group(cfg.get("logger"))
    if csv and not any(isinstance(lg, CSVLogger) for lg in loggers):
        loggers.insert(0, CSVLogger(save_dir=str(run_dir), name="", version=""))
    try:
        hparams = OmegaConf.to_container(cfg, resolve=True)
        for logger in loggers:
            logger.log_hyperparams(hparams)
        yield TaskRun(run_dir, loggers)
    finally:
        finish_wandb(loggers)


def hydra_task(config_name: str) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Turn `task(cfg)` into its command-line entry point on conf/<config_name>.yaml: a UserError (a wrong config
    value, a bad file, an unknown key) ends with one message naming the problem and the fix, and exit code 2."""

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
        @functools.wraps(task)
        def main(cfg: DictConfig) -> Any:
            return report_user_errors(checked(task), cfg)

        return report_composition_errors(main)

    return decorate
