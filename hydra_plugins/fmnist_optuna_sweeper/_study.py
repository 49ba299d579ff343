"""Where a study lives, shared by the sweeper (which asks and tells trials) and by the training jobs (which report
per-epoch values and ask whether to stop). A job may run in another process or on another machine (joblib,
submitit), so it reconnects through the storage named in its own Hydra config instead of receiving Python objects.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from hydra.utils import instantiate
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from fmnist.utils.errors import UserError

DEFAULT_STUDY_NAME = "fmnist"
DEFAULT_STORAGE_FILE = "optuna.db"  # inside the sweep directory
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
SQLITE_TIMEOUT_S = 60  # parallel jobs write to one SQLite file; wait for its lock instead of failing
RDB_ATTEMPTS = 5


def study_name(name: str | None) -> str:
    return name or DEFAULT_STUDY_NAME


def default_storage_url(sweep_dir: str | Path, cwd: str | Path | None = None) -> str:
    directory = Path(cwd or Path.cwd()) / sweep_dir  # an absolute sweep_dir stays as it is
    return f"sqlite:///{directory.resolve() / DEFAULT_STORAGE_FILE}"


def storage_spec(storage: str | None, sweep_dir: str | Path, cwd: str | Path | None = None) -> str:
    """The configured storage, or the default SQLite file in the sweep directory."""
    return str(storage) if storage else default_storage_url(sweep_dir, cwd)


def redact(spec: str) -> str:
    """The storage for logs and result files, without a password (postgresql://user:secret@host/db)."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", spec)


def _rdb_storage(url: str, **kwargs: Any) -> RDBStorage:
    """RDBStorage, retried: processes that open a new database at the same moment race to create its schema, and
    the losers fail with an IntegrityError (seen with two sweeps started together on one SQLite file)."""
    for attempt in range(RDB_ATTEMPTS):
        try:
            return RDBStorage(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            if attempt == RDB_ATTEMPTS - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def open_storage(spec: str) -> BaseStorage:
    """An RDB URL (sqlite:///, postgresql://, mysql://) or the path of a journal file (*.log, *.jsonl)."""
    if "://" in spec:
        if spec.startswith("sqlite:///"):
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            return _rdb_storage(spec, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}})
        try:
            return _rdb_storage(spec)
        except ImportError as e:  # e.g. psycopg2 for PostgreSQL
            raise UserError(f"hydra.sweeper.storage={redact(spec)}: its database driver is missing ({e}).") from e
    if spec.endswith(JOURNAL_SUFFIXES):
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    raise UserError(
        f"hydra.sweeper.storage={spec}: expected an RDB URL (sqlite:///abs/path.db, postgresql://user@host/db) "
        f"or a journal file path ending in {', '.join(JOURNAL_SUFFIXES)}; null = {DEFAULT_STORAGE_FILE} in the "
        "sweep directory."
    )


def make_pruner(pruner_cfg: Any) -> optuna.pruners.BasePruner:
    """The configured pruner; none configured = never prune (Optuna's own default would be the median rule)."""
    if not pruner_cfg:
        return optuna.pruners.NopPruner()
    pruner = instantiate(pruner_cfg)
    if not isinstance(pruner, optuna.pruners.BasePruner):
        raise UserError(f"hydra.sweeper.pruner: {pruner_cfg.get('_target_')} is not an Optuna pruner.")
    return pruner


def open_trial(number: int) -> optuna.Trial:
    """In a sweep job: trial `number` of the sweep's study, for reporting and pruning through the storage."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    sweeper_cfg = hydra_cfg.sweeper
    storage = open_storage(storage_spec(sweeper_cfg.storage, hydra_cfg.sweep.dir, hydra_cfg.runtime.cwd))
    name = study_name(sweeper_cfg.study_name)
    # The sampler is never used here (the sweeper sampled the params); RandomSampler is the cheapest to build.
    pruner = make_pruner(sweeper_cfg.pruner)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    return optuna.Trial(study, trial_id)
