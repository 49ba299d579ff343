"""Where a study lives, shared by the sweeper (which asks and tells trials) and by the training jobs (which report
per-epoch values and ask whether to stop). A job may run in another process or on another machine (joblib,
submitit), so it reconnects through the storage named in its own Hydra config instead of receiving Python objects;
a storage URL with a password reaches it through the environment, never through a saved config.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import optuna
import sqlalchemy.exc
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import InterpolationResolutionError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from fmnist.utils.errors import UserError

DEFAULT_STUDY_NAME = "fmnist"
DEFAULT_STORAGE_FILE = "optuna.db"  # inside the sweep directory
# A literal storage URL with a password reaches the jobs through this variable, not through their saved configs
STORAGE_ENV = "FMNIST_SWEEP_STORAGE"
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
SQLITE_TIMEOUT_S = 60  # parallel jobs write to one SQLite file; wait for its lock instead of failing
RDB_ATTEMPTS = 5
CONNECT_TIMEOUT_S = 10  # a PostgreSQL/MySQL server that does not answer: give up after this long


def study_name(name: str | None) -> str:
    return name or DEFAULT_STUDY_NAME


def default_storage_url(sweep_dir: str | Path, cwd: str | Path | None = None) -> str:
    directory = Path(cwd or Path.cwd()) / sweep_dir  # an absolute sweep_dir stays as it is
    return f"sqlite:///{directory.resolve() / DEFAULT_STORAGE_FILE}"


def storage_spec(storage: str | None, sweep_dir: str | Path, cwd: str | Path | None = None) -> str:
    """The configured storage, or the default SQLite file in the sweep directory."""
    return str(storage) if storage else default_storage_url(sweep_dir, cwd)


def redact(spec: str) -> str:
    """The storage for logs and result files, without a password (postgresql://user:secret@host/db, or a
    ?password= query). Greedy up to the last `@`: a password with a raw `@` is hidden whole, never in part."""
    spec = re.sub(r"(://[^:/@]*):.*@", r"\1:***@", spec)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", spec)


def scrub(text: str, spec: str) -> str:
    """A driver's error message with the storage's password removed, wherever the message repeats it."""
    text = redact(text)
    match = re.search(r"://[^:/@]*:(.*)@", spec)
    password = match.group(1) if match else ""
    for form in {password, unquote(password)}:
        if len(form) >= 4:  # a very short password would blank out ordinary letters; redact() covered the URL
            text = text.replace(form, "***")
    return " ".join(text.split())


def _rdb_storage(url: str, **kwargs: Any) -> RDBStorage:
    """RDBStorage, retried: processes that open a new database at the same moment race to create its schema, and
    the losers fail with an IntegrityError (seen with two sweeps started together on one SQLite file; PostgreSQL
    raises it for concurrent CREATE TABLE). A server's OperationalError (refused, wrong password) is not retried:
    it would only delay the message."""
    retried: tuple[type[Exception], ...] = (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)
    if url.startswith("sqlite:"):
        retried += (sqlalchemy.exc.OperationalError,)  # "database is locked"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
        for attempt in range(RDB_ATTEMPTS):
            try:
                return RDBStorage(url, **kwargs)
            except retried:
                if attempt == RDB_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def _heartbeat_kwargs(heartbeat_interval: int | None, grace_period: int | None, retry_failed: int) -> dict[str, Any]:
    if heartbeat_interval is None:
        return {}
    kwargs: dict[str, Any] = {"heartbeat_interval": int(heartbeat_interval), "grace_period": grace_period}
    if retry_failed:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=int(retry_failed))
        kwargs["heartbeat_stale_trial_callback"] = callback
    return kwargs


def _connect_args(url: str) -> dict[str, Any]:
    """A server that drops packets would otherwise hang the sweep for minutes before the first trial."""
    if url.startswith("sqlite:"):
        return {"timeout": SQLITE_TIMEOUT_S}  # parallel jobs write to one file; wait for its lock
    if url.startswith(("postgresql", "mysql://", "mysql+pymysql", "mysql+mysqldb")) and "connect_timeout" not in url:
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def _cannot_open(spec: str, e: BaseException) -> UserError:
    shown, cause = redact(spec), scrub(str(getattr(e, "orig", None) or e), spec)
    cause = cause.split(" (Background on this error")[0]
    if isinstance(e, ImportError):
        fix = ('install its driver: pip install "psycopg[binary]" for postgresql:// (SQLAlchemy 2.1; with 2.0 write '
               "postgresql+psycopg://), pip install pymysql for mysql+pymysql://")  # fmt: skip
    elif isinstance(e, sqlalchemy.exc.ArgumentError | ValueError):
        fix = ("write an SQLAlchemy URL: postgresql://user:PASSWORD@host:5432/db, "
               "mysql+pymysql://user:PASSWORD@host/db or sqlite:////abs/path.db (postgres:// is not understood; "
               "write postgresql://)")  # fmt: skip
    else:
        fix = ("check that the server runs and accepts connections from this machine (host, port, firewall), and the "
               "user name, password and database name (the database must exist: createdb)")  # fmt: skip
    return UserError(
        f"hydra.sweeper.storage={shown}: cannot open the study storage: {cause}. Fix: {fix}. Keep the password out "
        "of the command line: hydra.sweeper.storage='${oc.env:FMNIST_OPTUNA_STORAGE}' (see docs/sweeps_database.md)."
    )


def open_storage(
    spec: str, heartbeat_interval: int | None = None, grace_period: int | None = None, retry_failed: int = 0
) -> BaseStorage:
    """An RDB URL (sqlite:///, postgresql://, mysql://) or the path of a journal file (*.log, *.jsonl). Heartbeats
    (seconds; None = off), their grace period and retries of stale trials apply to RDB storages only. Any failure to
    open it is a UserError naming the storage without its password."""
    if "://" in spec:
        if spec.startswith("sqlite:///"):
            Path(spec.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        kwargs = _heartbeat_kwargs(heartbeat_interval, grace_period, retry_failed)
        try:
            return _rdb_storage(spec, engine_kwargs={"connect_args": _connect_args(spec)}, **kwargs)
        except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:  # ValueError: e.g. a non-numeric port
            raise _cannot_open(spec, e) from None  # `from None`: the chained traceback would repeat the URL
    if spec.endswith(JOURNAL_SUFFIXES):
        if heartbeat_interval is not None:
            raise UserError(f"hydra.sweeper.storage={spec}: a journal file keeps no heartbeats; "
                            "heartbeat_interval, grace_period and retry_failed need an RDB storage "
                            "(postgresql://, mysql://, sqlite:///).")  # fmt: skip
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    raise UserError(
        f"hydra.sweeper.storage={redact(spec)}: expected an RDB URL (sqlite:///abs/path.db, postgresql://user@host/db) "
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
    try:
        spec = storage_spec(sweeper_cfg.storage, hydra_cfg.sweep.dir, hydra_cfg.runtime.cwd)
    except InterpolationResolutionError as e:  # e.g. a SLURM job started without the sweep's environment
        raise UserError(
            f"This trial cannot read its study storage ({e}). The sweeper passes a storage URL with a password to "
            f"its jobs in the environment variable {STORAGE_ENV}: run the jobs with the sweep's environment "
            "(SLURM: --export=ALL), or give the URL as ${oc.env:...} of a variable every job has."
        ) from None
    storage = open_storage(spec)
    name = study_name(sweeper_cfg.study_name)
    # The sampler is never used here (the sweeper sampled the params); RandomSampler is the cheapest to build.
    pruner = make_pruner(sweeper_cfg.pruner)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(), pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), number)
    return optuna.Trial(study, trial_id)


def save_sweep_config(config: DictConfig, path: Path) -> None:
    """The sweep's config, as Hydra's own sweepers save it, with a literal storage password hidden (also in the
    recorded command-line overrides). An ${oc.env:...} interpolation is saved as written: the password stays in
    the environment."""
    config = config.copy()
    with open_dict(config):
        if not OmegaConf.is_interpolation(config.hydra.sweeper, "storage") and config.hydra.sweeper.storage:
            config.hydra.sweeper.storage = redact(str(config.hydra.sweeper.storage))
        overrides = OmegaConf.select(config, "hydra.overrides.hydra")
        if overrides is not None:
            # resolve=False: an override `...=${oc.env:...}` must stay as written, not become the secret itself
            written = OmegaConf.to_container(overrides, resolve=False)
            config.hydra.overrides.hydra = [redact(str(o)) for o in written]
    OmegaConf.save(config, path)


def hand_storage_to_jobs(config: DictConfig, spec: str) -> None:
    """Each job reconnects through the storage in its own config, which Hydra writes to the trial's
    `.hydra/hydra.yaml` (overrides included). A literal URL with a password is therefore handed to the jobs as
    `${oc.env:FMNIST_SWEEP_STORAGE}`, set in this process's environment (inherited by local, joblib and
    submitit/SLURM jobs), so those files show the interpolation, never the secret."""
    sweeper = config.hydra.sweeper
    if OmegaConf.is_interpolation(sweeper, "storage") or not sweeper.storage or redact(spec) == spec:
        return
    os.environ[STORAGE_ENV] = spec
    # the launcher recomposes each job from these overrides (Hydra's load_sweep_config), not from the values
    override = f"hydra.sweeper.storage=${{oc.env:{STORAGE_ENV}}}"
    written = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
    kept = [o for o in written if not re.match(r"[+~]*hydra\.sweeper\.storage=", str(o))]
    with read_write(config.hydra), open_dict(config):  # Hydra may hand its node over read-only
        config.hydra.overrides.hydra = [*kept, override]  # also covers a URL written in a config file
        sweeper.storage = f"${{oc.env:{STORAGE_ENV}}}"
