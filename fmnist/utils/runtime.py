"""The process's runtime: seeding, CPU threads and the training precision the hardware supports."""

from __future__ import annotations

import logging
import os

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

log = logging.getLogger("fmnist")


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
    9x slower than fp32 on this project's AVX2 machine (docs/RESULTS.md)."""
    if not hasattr(torch.cpu, "get_capabilities"):  # older torch has only the private checks
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    capabilities = torch.cpu.get_capabilities()
    return any(capabilities.get(flag, False) for flag in ("avx512_bf16", "amx_bf16", "amx_tile"))


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
