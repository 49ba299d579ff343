"""The random generators' states in every checkpoint, restored on resume: a run stopped and resumed trains the same
batches, augmentations and dropout masks as one that ran through, so its figures are the same.

Lightning checkpoints the model, optimizer, schedule and loops but not the global generators: a resumed run starts
them again from `seed`, so its shuffling (the DataLoader's sampler draws from torch's generator every epoch), batched
augmentation and dropout differ from the uninterrupted run's from the resumed epoch on. The states are kept as
tensors and plain numbers, which the checkpoints' weights_only loading accepts.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def rng_states() -> dict[str, Any]:
    """torch's (CPU, and CUDA when in use), numpy's and Python's global generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what rng_states() returned (CUDA's only where this run uses as many CUDA devices)."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RestoreRNG(Callback):
    """Saves the generators' states with each checkpoint; restores them when a fit resumes from one."""

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict:  # checkpoints written before the states were kept resume as before
            set_rng_states(state_dict)
