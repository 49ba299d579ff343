"""Says at the start of training how long the schedule will take on this machine, measured, and warns when that is
hopeless on a CPU (e.g. convnext_tiny at 64 px on 2 cores: hours per epoch), naming the CPU preset to use instead.

A few training steps are timed after a warm-up (the first steps pay for allocation and kernel selection); the
estimate is those seconds per step times the training steps left (trainer.max_epochs x batches per epoch, or
trainer.max_steps), capped by trainer.max_time. Validation passes are not included: the estimate is a lower bound.
During a fine-tuning warm-up (fmnist.models.finetuning: the backbone frozen, so a step is little more than a forward
pass) the steps after it are counted at FULL_STEP times the frozen ones (forward plus a backward pass costing about
twice the forward), and measured again once the backbone trains.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import Timer

from fmnist.models.finetuning import FrozenBackboneWarmup

log = logging.getLogger("fmnist")
NO_PRESET = "shorten the schedule (trainer.max_epochs, model.image_size, a smaller model) or use a GPU"
FULL_STEP = 3  # a whole network's training step over a frozen backbone's (convnext_tiny, 2-core CPU: 3.7)


def duration(seconds: float) -> str:
    """4000 -> '1 h 07 min'; 95 -> '1.6 min'."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


class ScheduleEstimate(pl.Callback):
    """Times `timed_steps` training steps after `warmup_steps`, then logs the estimated training time; a WARNING
    when training on the CPU and the estimate exceeds `cpu_warn_hours`, naming `cpu_preset` (e.g.
    "experiment=convnext_cpu") when the model has one."""

    def __init__(
        self, warmup_steps: int = 2, timed_steps: int = 10, cpu_warn_hours: float = 2.0, cpu_preset: str | None = None
    ) -> None:
        self.warmup_steps, self.timed_steps = max(0, int(warmup_steps)), max(1, int(timed_steps))
        self.cpu_warn_hours, self.cpu_preset = float(cpu_warn_hours), cpu_preset
        self.start: float | None = None
        self.timed = 0
        self.done = False
        self.seconds_per_step: float | None = None
        self.estimate_seconds: float | None = None
        self.measure_again_at: int | None = None  # the epoch a frozen backbone starts training

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.measure_again_at is not None and trainer.current_epoch >= self.measure_again_at:
            self.measure_again_at, self.done, self.start, self.timed = None, False, None, 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if not self.done and self.start is None and batch_idx >= self.warmup_steps:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.done or self.start is None:
            return
        self.timed += 1
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if self.timed >= self.timed_steps or last_of_epoch:
            self.done = True
            self.report(trainer, (time.perf_counter() - self.start) / self.timed)

    def steps_left(self, trainer: pl.Trainer) -> int:
        """Optimiser steps (batches) the schedule still has to run."""
        per_epoch = int(trainer.num_training_batches)
        steps = [(trainer.max_epochs - trainer.current_epoch) * per_epoch] if trainer.max_epochs > 0 else []
        if trainer.max_steps > 0:
            steps.append(trainer.max_steps - trainer.global_step)
        return max(0, min(steps)) if steps else per_epoch

    @staticmethod
    def frozen_until(trainer: pl.Trainer) -> int | None:
        """The epoch a fine-tuning warm-up unfreezes the backbone, while it is still ahead."""
        epochs = [c.unfreeze_at_epoch for c in trainer.callbacks if isinstance(c, FrozenBackboneWarmup)]
        return epochs[0] if epochs and epochs[0] > trainer.current_epoch else None

    def report(self, trainer: pl.Trainer, seconds_per_step: float) -> None:
        self.seconds_per_step = seconds_per_step
        per_epoch = seconds_per_step * trainer.num_training_batches
        steps = self.steps_left(trainer)
        total, frozen = seconds_per_step * steps, ""
        unfreeze = self.frozen_until(trainer)
        warm = steps if unfreeze is None else (unfreeze - trainer.current_epoch) * int(trainer.num_training_batches)
        if warm < steps:  # the backbone trains before the schedule ends
            total += (FULL_STEP - 1) * seconds_per_step * (steps - warm)
            self.measure_again_at = unfreeze
            frozen = (f"; the backbone is frozen until epoch {unfreeze}, so the steps after it are counted at "
                      f"{FULL_STEP}x these (measured again then)")  # fmt: skip
        timers = [c for c in trainer.callbacks if isinstance(c, Timer)]  # Lightning's, when trainer.max_time is set
        budget_s = timers[0].time_remaining() if timers else None
        self.estimate_seconds = min(total, budget_s) if budget_s is not None else total
        if not trainer.is_global_zero:
            return
        cut = f" (cut to {duration(budget_s)} by trainer.max_time)" if budget_s is not None and budget_s < total else ""
        message = (f"Schedule estimate, measured over {self.timed} training steps: {seconds_per_step:.2f} s per step, "
                   f"{duration(per_epoch)} per epoch, {duration(total)} for the training left{cut} "
                   f"(validation not included{frozen}).")  # fmt: skip
        if isinstance(trainer.accelerator, CPUAccelerator) and self.estimate_seconds > self.cpu_warn_hours * 3600:
            advice = f"use the CPU preset {self.cpu_preset} instead" if self.cpu_preset else NO_PRESET
            log.warning(f"{message} That is more than {self.cpu_warn_hours:g} h on this CPU: {advice}.")
        else:
            log.info(message)
