"""Plumbing shared by the entry points: resolvers, instantiation of callback/logger groups, the runtime setup,
clean reporting of user errors, atomic writes."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import lightning.pytorch as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from fmnist import PACKAGE_DIR, PROJECT_ROOT
from fmnist.utils.errors import UserError
from fmnist.utils.io import atomic_path, run_dir_of

log = logging.getLogger("fmnist")


def _resume_dir(ckpt_path: str | None, default: str) -> str:
    run = run_dir_of(ckpt_path)
    return str(run) if run is not None else default


def _hydra_subdir(ckpt_path: str | None, output_dir: str, stamp: str) -> str:
    """Where Hydra records the job's config: `.hydra`, except in a run being resumed in place, whose first
    `.hydra/` stays what started it (runs are listed and rebuilt from it) and each resume attempt adds its own
    `.hydra/resumed_<time>/` — also an attempt refused later, e.g. for asking another network."""
    run = run_dir_of(ckpt_path)
    if run is not None and run == Path(output_dir).resolve():
        return f".hydra/resumed_{stamp}"
    return ".hydra"


def _input_stats(*args: Any) -> ListConfig:
    from fmnist.models.components.timm_backbone import input_stats  # timm is imported only when a config asks

    return ListConfig(input_stats(*args))  # a container, so OmegaConf.resolve (`--cfg job --resolve`) can hold it


def register_resolvers() -> None:
    """`${fmnist_root:}` is the project directory; `${fmnist_package:}` the installed package (its shipped/ model);
    `${fmnist_run_dir:ckpt,default}` is the run directory of a checkpoint being resumed (so the run continues in
    place), else `default`; `${fmnist_hydra_subdir:ckpt,output_dir,time}` keeps a resumed run's first `.hydra/`."""
    if not OmegaConf.has_resolver("fmnist_package"):
        OmegaConf.register_new_resolver("fmnist_package", lambda: str(PACKAGE_DIR))
    if not OmegaConf.has_resolver("fmnist_root"):
        OmegaConf.register_new_resolver("fmnist_root", lambda: str(PROJECT_ROOT))
        OmegaConf.register_new_resolver("fmnist_run_dir", _resume_dir)
        OmegaConf.register_new_resolver("fmnist_hydra_subdir", _hydra_subdir)
    if not OmegaConf.has_resolver("fmnist_input_stats"):
        # `${fmnist_input_stats:mean|std,name,in_chans,pretrained,weights}`: normalisation that follows the weights
        OmegaConf.register_new_resolver("fmnist_input_stats", _input_stats)


register_resolvers()


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a group like `callbacks:` or `logger:` (null entries are skipped)."""
    if not group:
        return []
    return [instantiate(conf) for conf in group.values() if isinstance(conf, DictConfig) and "_target_" in conf]


def setup_runtime(cfg: DictConfig) -> None:
    """Seed (None = unseeded) and the number of CPU threads."""
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    threads = cfg.get("threads")
    if threads is None:
        threads = len(os.sched_getaffinity(0))
        trainer = cfg.get("trainer") or {}
        devices = trainer.get("devices")
        accelerator = trainer.get("accelerator")
        cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
        if cpu and str(trainer.get("strategy", "")).startswith("ddp") and isinstance(devices, int):
            threads = max(1, threads // devices)  # DDP on the CPU: the processes share the cores
    torch.set_num_threads(threads)


def cpu_has_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Without them, bf16 autocast is emulated and was measured about
    10x slower than fp32 on this project's AVX2 machine (docs/RESULTS.md)."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(trainer_cfg: DictConfig) -> None:
    """`precision: auto` -> bf16-mixed where the hardware has bf16 (GPU, or CPU with AVX512-BF16/AMX), 16-mixed on
    older GPUs, 32-true on other CPUs. An explicit value is kept (with a warning when bf16 would be emulated)."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    if precision == "auto":
        if on_gpu:
            trainer_cfg.precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        else:
            trainer_cfg.precision = "bf16-mixed" if cpu_has_bf16() else "32-true"
        log.info(f"precision=auto -> {trainer_cfg.precision} ({'GPU' if on_gpu else 'CPU'})")
    elif precision.startswith("bf16") and not on_gpu and not cpu_has_bf16():
        log.warning(f"precision={precision} on a CPU without bf16 hardware is emulated and slow; try 32-true.")


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader (or a crash) never sees a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor) or v.numel() == 1}


def find_user_error(exc: BaseException) -> UserError | None:
    """The UserError behind `exc`, also when Hydra's instantiate wrapped it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def report_user_errors(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run `task(cfg)`; a UserError ends a single run with its message and exit code 2, no traceback wall.
    In a multirun, errors propagate so the sweeper records the trial as failed and goes on."""
    try:
        return task(cfg)
    except (UserError, InstantiationException) as e:
        user_error = find_user_error(e)
        if user_error is None:
            raise
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise user_error from None
        exit_for_user_error(user_error)


def exit_for_user_error(error: Exception, logger: logging.Logger = log) -> NoReturn:
    """The end of a command that a user error stopped (every entry point and the sweeper): one message naming the
    problem and the fix, exit code 2, no traceback."""
    logger.error(f"{type(error).__name__}: {error}")
    sys.exit(2)
