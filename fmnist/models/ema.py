"""An exponential moving average of the weights (Lightning's EMAWeightAveraging), made safe for `trainer.test`.

Lightning's callback validates and checkpoints the averaged weights (`state_dict` holds them, the raw ones go to
`current_model_state`) and copies them into the model when fitting ends. But when a later `trainer.test(ckpt_path=)`
restores a checkpoint, the callback reloads `current_model_state` into the model, so the test would score the raw
weights, not the averaged ones validation chose. Outside fitting this subclass leaves the `state_dict` (the average)
in place.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """EMA of parameters and BatchNorm statistics, updated after every optimizer step from `start_step` on.

    decay: the weight of the old average per update; the average spans about 1 / (1 - decay) steps, so a short
    schedule wants a smaller decay (0.99: ~100 steps) than Lightning's 0.999.
    """

    def __init__(self, decay: float = 0.99, start_step: int = 0, every_n_steps: int = 1) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"callbacks.ema.decay={decay}: it must lie strictly between 0 and 1 (e.g. 0.99)")
        super().__init__(decay=decay, update_starting_at_step=start_step, update_every_n_steps=every_n_steps)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:  # resuming: restore both the average and the raw weights
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
