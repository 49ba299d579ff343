"""The warm-up of a fine-tuning schedule: the first epochs train only the new head, the pretrained backbone frozen;
then the whole network trains, the backbone at its lower learning rate (the Classifier's `backbone_lr_scale` and
`layer_decay` parameter groups).

Lightning's BackboneFinetuning expects the head outside `pl_module.backbone` and adds the backbone to the optimizer
when it unfreezes it, which breaks schedulers that keep per-group state (OneCycleLR). The Classifier keeps the whole
timm model, head included, in `backbone`, and puts every parameter in its optimizer from the start (frozen ones get
no gradient, so the optimizer leaves them alone); this subclass of BaseFinetuning only switches `requires_grad`.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from fmnist.utils.errors import UserError

log = logging.getLogger(__name__)


class FrozenBackboneWarmup(BaseFinetuning):
    """Freeze everything but `pl_module.backbone.get_classifier()` (timm's head) until `unfreeze_at_epoch`.

    `train_bn`: whether BatchNorm layers keep training (affine parameters and running statistics) while frozen.
    `unfreeze_at_epoch: 0` disables the warm-up (from-scratch training).
    """

    def __init__(self, unfreeze_at_epoch: int = 1, train_bn: bool = False) -> None:
        super().__init__()
        if unfreeze_at_epoch < 0:
            raise UserError(f"model.finetuning.unfreeze_at_epoch={unfreeze_at_epoch} must be >= 0 (0: no warm-up).")
        self.unfreeze_at_epoch = int(unfreeze_at_epoch)
        self.train_bn = bool(train_bn)

    @staticmethod
    def head(pl_module: pl.LightningModule) -> nn.Module:
        backbone = pl_module.backbone
        if not hasattr(backbone, "get_classifier"):
            raise UserError(
                "model.finetuning freezes all but the head, which it finds with get_classifier() (timm models); "
                f"{type(backbone).__name__} has none: set model.finetuning=null."
            )
        return backbone.get_classifier()

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        head = self.head(pl_module)
        if self.unfreeze_at_epoch > 0:
            self.freeze(pl_module.backbone, train_bn=self.train_bn)
            self.make_trainable(head)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # `>=`, not `==`: a run resumed after the switch freezes in setup and must unfreeze again at once
        if epoch >= self.unfreeze_at_epoch and any(not p.requires_grad for p in pl_module.backbone.parameters()):
            self.make_trainable(pl_module.backbone)
            log.info(f"Epoch {epoch}: backbone unfrozen; it trains from now on at its own learning rate.")

    # The optimizer's groups never change here, so there is nothing for BaseFinetuning to save and restore on resume
    # (restoring would put back the learning rates of the epoch the groups were first recorded).
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
