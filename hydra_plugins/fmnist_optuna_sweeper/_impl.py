"""The sweep loop: ask the study for a batch of trials, launch them as Hydra jobs, tell the study how each ended.

Every trial is created in the storage (`study.ask`), so several sweep processes on one storage share a study
without losing or repeating trial numbers; the jobs reconnect to the storage to report per-epoch values and to be
pruned (_pruning.py), which works whichever launcher runs them, in this process or elsewhere. With
heartbeats on (an RDB storage), a worker killed mid-trial is noticed by the others, which retry its trial (_workers).
"""

from __future__ import annotations

import contextlib
import io
import logging
import shlex
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from fmnist.utils.errors import UserError, exit_for_user_error

from ._report import best_trial, write_results, write_trials_csv
from ._search_space import SearchSpace, describe, is_finite_number, parse_search_space, quote, single_run_overrides
from ._study import hand_storage_to_jobs, make_pruner, open_storage, redact, save_sweep_config, storage_spec, study_name
from ._workers import Heartbeat, ask, fail_stale_trials, make_sampler

log = logging.getLogger(__name__)

TRIAL_KEY = "optuna_trial"  # each job's config gets `optuna_trial: <number>` (read by _pruning.py)
PRUNING_CALLBACK = "hydra_plugins.fmnist_optuna_sweeper._pruning.OptunaPruning"


def check_objective(config: DictConfig, space: SearchSpace) -> str:
    metric = config.get("optimized_metric")
    if not metric:
        raise UserError("optimized_metric is not set: a sweep optimises the validation metric train() returns, "
                        "e.g. optimized_metric=val/acc_best.")  # fmt: skip
    if str(metric).startswith("test/"):
        raise UserError(
            f"optimized_metric={metric}: a sweep must not optimise a test metric — choosing hyperparameters on the "
            "test split makes its score meaningless. Use a validation metric, e.g. optimized_metric=val/acc_best."
        )
    if "optimized_metric" in space.distributions:
        raise UserError("hydra.sweeper.params: optimized_metric cannot be swept; trials must share one objective.")
    return str(metric)


class OptunaSweeperImpl(Sweeper):
    def __init__(self, **conf: Any) -> None:
        self.conf = conf
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.storage: BaseStorage | None = None  # the study's storage, opened by _open_study
        self.study_id: int | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except UserError as e:  # one clear message and exit code 2, like the entry points
            exit_for_user_error(e, log)

    # --- setup of the study ----------------------------------------------------------------------------------------
    def _check_numbers(self) -> None:
        c = self.conf
        if c["direction"] not in ("maximize", "minimize"):
            raise UserError(f"hydra.sweeper.direction={c['direction']}: use maximize or minimize.")
        if int(c["n_trials"]) < 1 or int(c["n_jobs"]) < 1:
            raise UserError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1.")
        if not 0 <= float(c["max_failure_rate"]) <= 1:
            raise UserError("hydra.sweeper.max_failure_rate is a share of n_trials, between 0 and 1.")
        beat, grace, retry = c.get("heartbeat_interval"), c.get("grace_period"), int(c.get("retry_failed") or 0)
        if beat is None and (grace is not None or retry):
            raise UserError("hydra.sweeper.grace_period and retry_failed act on trials whose heartbeat stopped; "
                            "set hydra.sweeper.heartbeat_interval too (e.g. 10, with an RDB storage).")  # fmt: skip
        if (beat is not None and int(beat) < 1) or retry < 0:
            raise UserError("hydra.sweeper.heartbeat_interval must be at least 1 (second), retry_failed at least 0.")
        if beat is not None and grace is not None and int(grace) <= int(beat):
            raise UserError(f"hydra.sweeper.grace_period={grace} must exceed heartbeat_interval={beat}, or "
                            "live trials would be failed between two heartbeats; null = 2 x the interval.")  # fmt: skip

    def _open_study(self, space: SearchSpace, metric: str, spec: str) -> optuna.Study:
        c = self.conf
        storage = open_storage(
            spec, c.get("heartbeat_interval"), c.get("grace_period"), int(c.get("retry_failed") or 0)
        )
        name = study_name(c.get("study_name"))
        try:
            n_before = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
        except KeyError:
            n_before = 0
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction=c["direction"],
            load_if_exists=True,
            sampler=make_sampler(self.conf.get("sampler"), space),
            pruner=make_pruner(c.get("pruner")),
        )
        if study.direction.name.lower() != self.conf["direction"]:
            raise UserError(f"Study {name!r} in {redact(spec)} is set to {study.direction.name.lower()}; "
                            f"hydra.sweeper.direction={self.conf['direction']} contradicts it.")  # fmt: skip
        previous = study.user_attrs.get("optimized_metric")
        if previous and previous != metric:
            raise UserError(f"Study {name!r} in {redact(spec)} optimises {previous}, not optimized_metric={metric}; "
                            "use another hydra.sweeper.study_name (or storage) for a new objective.")  # fmt: skip
        study.set_user_attr("optimized_metric", metric)
        self.storage, self.study_id = storage, storage.get_study_id_from_name(name)
        log.info(f"Study {name!r} in {redact(spec)}: {n_before} trials before this run; adding {self.conf['n_trials']}")
        return study

    def _bookkeeping_overrides(self, number: int, name: str, sweep_dir: Path) -> list[str]:
        """Overrides that tell the job which trial it is, and put W&B runs of one sweep in one group."""
        extra = [f"++{TRIAL_KEY}={number}"]
        wandb = OmegaConf.select(self.config, "logger.wandb")
        if isinstance(wandb, DictConfig) and "_target_" in wandb:
            if not wandb.get("group"):
                # a shared storage names the sweep; the default per-directory storage needs the directory too
                group = name if self.conf.get("storage") else f"{name}-{sweep_dir.name}"
                extra.append(f"logger.wandb.group={quote(group)}")
            if not wandb.get("name"):
                extra.append(f"logger.wandb.name={quote(f'trial-{number}')}")
        return extra

    def trial_id_of(self, trial: optuna.Trial) -> int:
        """The storage's id of a trial of this study (what heartbeats are recorded under)."""
        assert self.storage is not None and self.study_id is not None
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)

    def _stored(self, trial: optuna.Trial) -> FrozenTrial:
        """The trial as the storage holds it now: another worker may have failed it, or enqueued it as a retry."""
        assert self.storage is not None
        return self.storage.get_trial(self.trial_id_of(trial))

    # --- the loop --------------------------------------------------------------------------------------------------
    def _sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.launcher is not None
        self._check_numbers()
        space = parse_search_space(self.conf.get("params"), arguments)
        metric = check_objective(self.config, space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        self._warn_without_pruning_callback()
        spec = storage_spec(self.conf.get("storage"), sweep_dir)
        study = self._open_study(space, metric, spec)  # first: a storage that cannot be opened leaves no sweep dir
        sweep_dir.mkdir(parents=True, exist_ok=True)
        save_sweep_config(self.config, sweep_dir / "multirun.yaml")
        hand_storage_to_jobs(self.config, spec)  # a literal password stays out of the jobs' saved configs
        for key, dist in space.distributions.items():
            log.info(f"  {key}: {describe(dist)}")
        if not space.distributions:
            log.warning("No parameters to search (hydra.sweeper.params is empty): every trial runs the same config.")

        options = self.hydra_context.config_loader.get_group_options
        run_base = single_run_overrides(self.config, space, options)
        n_trials, n_jobs = int(self.conf["n_trials"]), int(self.conf["n_jobs"])
        max_failed = float(self.conf["max_failure_rate"]) * n_trials
        returns: list[JobReturn] = []
        # done: trials this process asked and told (complete, pruned, or failed by their job). A trial failed as
        # stale by another worker while it ran here is `lost`: its retry counts for whoever finishes it.
        done = failed = lost = 0
        try:
            while done < n_trials:
                exhausted = getattr(study.sampler, "is_exhausted", None)
                if exhausted is not None and exhausted(study):
                    log.info("The grid is exhausted: every combination has been tried.")
                    break
                fail_stale_trials(study, self.storage)  # a dead worker's trial: FAIL, re-enqueued for the asks below
                batch = [ask(study, space.distributions) for _ in range(min(n_jobs, n_trials - done))]
                with Heartbeat(self.storage, [self.trial_id_of(t) for t in batch]):  # until every trial is told
                    states = self._run_batch(study, space, batch, run_base, sweep_dir, metric, returns)
                done += sum(state is not None for state in states)
                lost += sum(state is None for state in states)
                failed += sum(state == TrialState.FAIL for state in states)
                write_results(study, sweep_dir, metric, redact(spec))
                write_trials_csv(study, sweep_dir)
                if lost > n_trials:
                    raise UserError(f"{lost} trials of this worker were failed as stale by others although it ran "
                                    "them: its heartbeats do not reach the storage in time; raise "
                                    "hydra.sweeper.grace_period.")  # fmt: skip
                if failed > max_failed:
                    raise UserError(
                        f"{failed} of {done} trials failed, more than max_failure_rate="
                        f"{self.conf['max_failure_rate']} of n_trials={n_trials}; stopping the sweep. "
                        f"The errors are in {sweep_dir / 'trials.csv'} and each trial's log."
                    )
        finally:
            self._finish_reports(study, sweep_dir, metric, spec)
        return returns

    def _run_batch(
        self,
        study: optuna.Study,
        space: SearchSpace,
        batch: list[optuna.Trial],
        run_base: list[str],
        sweep_dir: Path,
        metric: str,
        returns: list[JobReturn],
    ) -> list[TrialState | None]:
        """Launch the batch's trials as jobs and tell the study their outcomes (None: lost to another worker)."""
        states: list[TrialState | None] = []
        jobs = []
        for trial in batch:
            retried = self._stored(trial).system_attrs.get("failed_trial")  # set by the retry callback
            if retried is not None:
                log.info(f"Trial {trial.number} retries trial {retried}, whose worker stopped sending heartbeats")
            params = space.overrides(trial.params)
            trial.set_user_attr("overrides", run_base + params)  # repeats the trial as a single run
            job = space.fixed + params + self._bookkeeping_overrides(trial.number, study.study_name, sweep_dir)
            try:  # compose now: a config error fails this trial alone, before anything runs
                self.validate_batch_is_legal([job])
            except Exception as e:
                self._fail(study, trial, f"config does not compose: {type(e).__name__}: {e}")
                states.append(TrialState.FAIL)
                continue
            jobs.append((trial, job))
        if jobs:
            results = self._launch(study, jobs)
            returns.extend(results)
            states += [self._tell(study, trial, ret, metric) for (trial, _), ret in zip(jobs, results, strict=True)]
        return states

    def _launch(self, study: optuna.Study, jobs: list[tuple[optuna.Trial, list[str]]]) -> list[JobReturn]:
        # job numbers (and so run sub-directories) follow the trial numbers, also across resumed runs
        try:
            return list(self.launcher.launch([job for _, job in jobs], initial_job_idx=jobs[0][0].number))
        except BaseException as e:  # Ctrl-C or a launcher error: no trial of the batch stays RUNNING
            for trial, _ in jobs:
                study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            log.error(f"Sweep stopped during trials {[t.number for t, _ in jobs]}: {type(e).__name__} {e}")
            raise

    def _fail(self, study: optuna.Study, trial: optuna.Trial, error: str, exc: BaseException | None = None) -> bool:
        trial.set_user_attr("error", error[:2000])
        study.tell(trial, state=TrialState.FAIL)
        # a bug or a crash keeps its traceback in the sweep log; a UserError's message says it all
        log.warning(f"Trial {trial.number} failed: {error}", exc_info=None if isinstance(exc, UserError) else exc)
        return True

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, metric: str) -> TrialState | None:
        """Records the job's outcome; None if another worker already failed the trial as stale (result dropped)."""
        if self._stored(trial).state.is_finished():
            log.warning(f"Trial {trial.number} was failed as stale by another worker while it ran here (late "
                        "heartbeats: grace_period too short?); its result is dropped, a retry runs anew.")  # fmt: skip
            return None
        hydra_cfg = ret.hydra_cfg.hydra if ret.hydra_cfg is not None else None
        if hydra_cfg is not None:
            trial.set_user_attr("run_dir", str(hydra_cfg.runtime.output_dir))
        if ret.status == JobStatus.COMPLETED:
            value = ret.return_value
            if is_finite_number(value):
                study.tell(trial, float(value))
                log.info(f"Trial {trial.number}: {metric}={float(value):.6g} {trial.params}")
                return TrialState.COMPLETE
            self._fail(study, trial, f"returned {value!r} for {metric}, not a finite number")
            return TrialState.FAIL
        # the job's exception: .return_value re-raises it after an "Error executing job" line, kept off the console
        error: BaseException | None = None
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                ret.return_value  # noqa: B018
        except BaseException as raised:
            error = raised
        if isinstance(error, optuna.TrialPruned):
            study.tell(trial, state=TrialState.PRUNED)
            log.info(f"Trial {trial.number} pruned: {error}")
            return TrialState.PRUNED
        self._fail(study, trial, f"{type(error).__name__}: {error}", error)
        return TrialState.FAIL

    def _finish_reports(self, study: optuna.Study, sweep_dir: Path, metric: str, spec: str) -> None:
        results = write_results(study, sweep_dir, metric, redact(spec))
        write_trials_csv(study, sweep_dir)
        best = best_trial(study)
        if best is not None:
            repeat = shlex.join(best.user_attrs.get("overrides", []))  # quoted: [..] is glob syntax in shells
            log.info(f"Best trial {best.number}: {metric}={best.value:.6g}; as a single run: python train.py {repeat}")
        log.info(f"Results: {results}; the study's figures: optuna-dashboard {redact(spec)}")

    def _warn_without_pruning_callback(self) -> None:
        if not self.conf.get("pruner"):
            return
        callbacks = self.config.get("callbacks") or {}
        if not any(isinstance(c, DictConfig) and c.get("_target_") == PRUNING_CALLBACK for c in callbacks.values()):
            log.warning(f"hydra.sweeper.pruner is set but no callback is {PRUNING_CALLBACK}: trials report nothing "
                        "and are never pruned. Add it as conf/hparams_search/base.yaml does.")  # fmt: skip
