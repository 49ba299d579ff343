"""The random generators' states in every checkpoint, restored on resume: a run stopped and resumed trains the same
batches, augmentations and dropout masks as one that ran through, so its figures are the same.

Lightning checkpoints the model, optimizer, schedule and loops but not the global generators: a resumed run starts
them again from `seed`, so its shuffling (the DataLoader's sampler draws from torch's generator every epoch), batched
augmentation and dropout differ from the uninterrupted run's from the resumed epoch on. The states are kept as
tensors and plain numbers, which the checkpoints' weights_only loading accepts (Lightning's own collector, private
to it, keeps numpy's as an array, which that loading refuses). Under DDP every rank starts from the same seed, so the
saving rank's states (its own CUDA device's included) are every rank's.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn


def rng_states() -> dict[str, Any]:
    """torch's (CPU, and the current CUDA device's when in use), numpy's and Python's global generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what rng_states() returned (CUDA's to the current device, when this run uses one)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if states.get("cuda") is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(states["cuda"])


class RestoreRNG(Callback):
    """Saves the generators' states with each checkpoint; restores them when a fit resumes from one. Restoring a
    checkpoint to test it changes nothing."""

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        states = (checkpoint.get("callbacks") or {}).get(self.state_key)
        if trainer.state.fn == TrainerFn.FITTING and states:  # checkpoints from before they were kept: as before
            set_rng_states(states)
