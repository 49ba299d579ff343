"""A one-cycle learning-rate schedule that can run on a wall-clock budget.

A fixed number of epochs takes 2.7x longer on a CPU without bf16 than on one with it (docs/RESULTS.md), so a
recipe sized in epochs for one machine either overruns a time budget on another (and `trainer.max_time` then cuts
it with the learning rate still high) or leaves the budget unused. Here the schedule's progress is the larger of
steps done / total steps and time elapsed / budget: it anneals by the budget's end whatever the machine, and is
OneCycleLR's cosine shape when the step count binds first (see BudgetedOneCycleLR for the two differences).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def budget_seconds(budget: str | dict | float | int | None) -> float | None:
    """Seconds of a budget given as Lightning's `max_time` takes it ("DD:HH:MM:SS" or a dict of timedelta
    arguments) or as seconds; None = no budget."""
    if budget is None:
        return None
    if isinstance(budget, (int, float)):
        seconds = float(budget)
    elif isinstance(budget, str):
        parts = budget.split(":")
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"budget {budget!r}: expected 'DD:HH:MM:SS', as trainer.max_time takes it")
        days, hours, minutes, secs = (int(p) for p in parts)
        seconds = ((days * 24 + hours) * 60 + minutes) * 60 + secs
    else:
        units = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1, "milliseconds": 1e-3,
                 "microseconds": 1e-6}  # fmt: skip
        unknown = set(budget) - set(units)
        if unknown:
            raise ValueError(f"budget {dict(budget)}: unknown keys {sorted(unknown)}; use {list(units)}")
        seconds = sum(float(v) * units[k] for k, v in budget.items())
    if seconds <= 0:
        raise ValueError(f"budget {budget!r}: must be positive")
    return seconds


def one_cycle_factor(progress: float, pct_start: float, div_factor: float, final_div_factor: float) -> float:
    """The learning rate over its peak at `progress` in [0, 1]: cosine warm-up from 1/div_factor to 1 over
    `pct_start`, then cosine annealing to 1/(div_factor * final_div_factor), as torch's OneCycleLR."""
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    if progress < pct_start:
        return start + (1.0 - start) * (1.0 - math.cos(math.pi * progress / pct_start)) / 2.0
    q = (progress - pct_start) / (1.0 - pct_start)
    return end + (1.0 - end) * (1.0 + math.cos(math.pi * min(q, 1.0))) / 2.0


class BudgetedOneCycleLR(LRScheduler):
    """One-cycle from each parameter group's learning rate as the peak, over `total_steps` steps or `budget` of wall
    time, whichever ends first. With a budget that binds, step k's learning rate depends on the clock, so runs are not
    bit-reproducible from the seed; without one (`budget=None`) this is OneCycleLR with cosine annealing, except
    that the warm-up is 25 % of the steps by default (torch: 30 %) and momentum stays fixed (torch cycles it). The
    elapsed time is saved in the state dict, so a resumed run continues the schedule where it stopped. Under
    multi-process training each process has its own clock: `reduce_elapsed` (set by the Classifier under DDP) replaces a
    process's elapsed time by the maximum over processes, so the replicas step at the same learning rate."""

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int | float,
        budget: str | dict | float | None = None,
        pct_start: float = 0.25,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        last_epoch: int = -1,
    ) -> None:
        self.budget_s = budget_seconds(budget)
        # trainer.max_epochs=-1 gives an infinite step count: then the budget alone sets the pace
        if not (total_steps >= 1 and (math.isfinite(total_steps) or self.budget_s is not None)):
            endless = " (trainer.max_epochs=-1 trains without end: give it a trainer.max_time budget)"
            raise ValueError(f"total_steps must be a finite number >= 1, got {total_steps}"
                             + (endless if math.isinf(total_steps) else ""))  # fmt: skip
        if not 0.0 < pct_start < 1.0:
            raise ValueError(f"pct_start must be in (0, 1), got {pct_start}")
        self.total_steps = total_steps
        self.pct_start, self.div_factor, self.final_div_factor = pct_start, div_factor, final_div_factor
        self._clock_start = time.monotonic()
        self.reduce_elapsed: Callable[[float], float] | None = None  # e.g. the max over DDP processes
        super().__init__(optimizer, last_epoch)

    def elapsed(self) -> float:
        return time.monotonic() - self._clock_start

    def progress(self) -> float:
        # torch's OneCycleLR reaches its last value at step total_steps - 1
        progress = self.last_epoch / max(self.total_steps - 1, 1)  # 0 for an infinite step count
        if self.budget_s is not None:
            elapsed = self.elapsed() if self.reduce_elapsed is None else self.reduce_elapsed(self.elapsed())
            progress = max(progress, elapsed / self.budget_s)
        return min(progress, 1.0)

    def get_lr(self) -> list[float]:
        # the warm-up ends at step pct_start * total_steps - 1, as in OneCycleLR
        warmup = self.pct_start
        if math.isfinite(self.total_steps):
            warmup = max(self.pct_start * self.total_steps - 1, 0.0) / max(self.total_steps - 1, 1)
        warmup = min(max(warmup, 1e-9), 1 - 1e-9)
        factor = one_cycle_factor(self.progress(), warmup, self.div_factor, self.final_div_factor)
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_clock_start", "reduce_elapsed")}
        state["elapsed"] = self.elapsed()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the length and budget stay this run's (a resume may extend trainer.max_time); the position is restored
        state = {k: v for k, v in state_dict.items() if k not in ("total_steps", "budget_s", "reduce_elapsed")}
        self._clock_start = time.monotonic() - state.pop("elapsed", 0.0)
        self.__dict__.update(state)
