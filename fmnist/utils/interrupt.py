"""A training run (train.py, gan.py) stopped by Ctrl-C or SIGTERM ends with the command that resumes it (on the console
and in the run's log file), exit code 128 + the signal's number, and no metrics.json: it stays incomplete, resumable
from checkpoints/last.ckpt, the end of its last completed epoch. A mid-epoch state is not saved: Lightning warns that
resuming one is unreliable unless the data loader can restore its position, and ours restarts its epoch."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from fmnist.utils.io import checkpoint_kind
from fmnist.utils.resume import entry_command, resume_command

log = logging.getLogger("fmnist")


def interrupted_by(error: BaseException) -> signal.Signals | None:
    """SIGINT or SIGTERM when `error` is how an interrupt ends a task: KeyboardInterrupt, Lightning's SIGTERMException
    (raised at the next batch boundary) or the SystemExit(1) Lightning raises after handling a KeyboardInterrupt."""
    if isinstance(error, SIGTERMException):
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)
    ):
        return signal.SIGINT
    return None


def interrupted_message(run_dir: Path, signum: signal.Signals) -> str:
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        first = run_dir / ".hydra" / "overrides.yaml"
        typed = OmegaConf.load(first) if first.is_file() else []
        return (f"Interrupted ({signum.name}) before the first epoch ended: no checkpoint to resume from. Start again "
                f"with: {' '.join([entry_command(), *map(shlex.quote, typed)])}")  # fmt: skip
    try:  # which state last.ckpt holds (mmap: no need to read the weights)
        state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
        gan = checkpoint_kind(state) == "gan"  # two optimizers: a GAN's steps count twice per batch
        step = "" if gan else f" (step {state['global_step']})"
        held = f"holds the end of epoch {state['epoch'] + 1}{step}; the next one restarts"
    except Exception:
        held = "holds the last completed epoch"
    return (f"Interrupted ({signum.name}): the run is incomplete (no metrics.json); checkpoints/last.ckpt {held}. "
            f"Resume with: {resume_command(last)}")  # fmt: skip


@contextmanager
def resume_hint_on_interrupt(run_dir: Path) -> Iterator[None]:
    """Ctrl-C or SIGTERM inside the block: log the command that resumes the run (console and the run's log file),
    then exit with 128 + the signal's number. While Lightning runs, its own SIGTERM handler stops at the next batch
    boundary (trainer.received_sigterm); outside it, SIGTERM stops at once, like Ctrl-C."""

    def on_sigterm(signum: int, frame: Any) -> None:
        if signal.getsignal(signal.SIGTERM) == on_sigterm:  # not called through Lightning's handler
            raise SIGTERMException()

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except BaseException as error:
        signum = interrupted_by(error)
        if signum is None:
            raise
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:  # one message under DDP
            log.error(interrupted_message(run_dir, signum))
        raise SystemExit(128 + signum) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
