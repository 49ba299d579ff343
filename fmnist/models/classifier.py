"""The Classifier LightningModule, generic over its backbone.

Its hyperparameters are plain Python containers (the backbone, optimizer and scheduler configs with their
`_target_`), so `Classifier.load_from_checkpoint(path, weights_only=True)` rebuilds the whole model from the file
alone, without executing pickled code. It also owns the input adaptation (resize, channels, normalisation) so a
checkpoint knows how it must be fed: every caller hands it float images in [0, 1] of shape (B, 1, 28, 28).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassConfusionMatrix,
)

from fmnist.dataset import CLASSES, FMNIST_STATS, to_unit_float
from fmnist.models.components.weight_decay import weight_decay_groups
from fmnist.models.tta import tta_logits
from fmnist.utils.containers import plain
from fmnist.utils.errors import ConfigError, values_of


def metric_suffix(class_name: str) -> str:
    """'T-shirt/top' -> 't_shirt_top': a class name that is safe inside a metric key."""
    return re.sub(r"[^a-z0-9]+", "_", class_name.lower()).strip("_")


INPUT_NORMS = ("dataset", "per_image")


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, kind: str = "dataset") -> torch.Tensor:
    """The backbone's input: `dataset` standardises with the training pixels' mean/std; `per_image` first stretches
    each image to zero mean and unit std of its own, so a uniformly lighter, darker or flatter photo looks the same."""
    if kind == "per_image":
        flat = images.flatten(1)
        shape = (-1,) + (1,) * (images.dim() - 1)
        return (images - flat.mean(1).view(shape)) / (flat.std(1).view(shape) + 1e-2)
    return (images - mean) / std


class Classifier(pl.LightningModule):
    # what training logs every epoch: the metrics a checkpoint, early stopping or a sweep can monitor
    EPOCH_METRICS = ("val/acc", "val/acc_best", "val/loss", "train/acc", "train/loss")

    def __init__(
        self,
        backbone: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        scheduler_interval: str = "step",
        label_smoothing: float = 0.0,
        image_size: int = 28,
        in_chans: int = 1,
        mean: Sequence[float] = tuple(FMNIST_STATS["mean"]),
        std: Sequence[float] = tuple(FMNIST_STATS["std"]),
        channels_last: bool = False,
        input_norm: str = "dataset",
        class_names: Sequence[str] = CLASSES,
        # fine-tuning (timm backbones, models/components/timm_backbone.py); defaults: one learning rate for all
        backbone_lr_scale: float = 1.0,
        layer_decay: float | None = None,
        finetuning: dict | None = None,
        # initial weights, passed to the backbone when set; not hyperparameters: a checkpoint carries the trained
        # weights, so rebuilding from it must not fetch or read them again
        pretrained: bool = False,
        weights: str | None = None,
        # how this model is scored (fmnist.models.calibration): its test-time augmentation and the temperature and
        # uncertainty threshold fitted on validation after training; None until then (no TTA, temperature 1)
        scoring: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "backbone": plain(backbone),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "scheduler_interval": scheduler_interval,
                "label_smoothing": float(label_smoothing),
                "image_size": int(image_size),
                "in_chans": int(in_chans),
                "mean": list(plain(mean)),
                "std": list(plain(std)),
                "channels_last": bool(channels_last),
                "input_norm": str(input_norm),
                "class_names": list(plain(class_names)),
                "backbone_lr_scale": float(backbone_lr_scale),
                "layer_decay": layer_decay,
                "finetuning": plain(finetuning),
                "scoring": plain(scoring),
            }
        )
        if not 0.0 <= label_smoothing < 1.0:  # torch checks it only at the first training step, with a traceback
            raise ConfigError(f"model.label_smoothing={label_smoothing}: choose a value in [0, 1), e.g. 0.1.")
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"model.input_norm={input_norm!r}: choose one of {', '.join(INPUT_NORMS)}")
        if len(self.hparams.mean) not in (1, in_chans) or len(self.hparams.std) != len(self.hparams.mean):
            raise ValueError(f"model.mean/std need 1 or in_chans={in_chans} values each")
        initial = {"pretrained": True} if pretrained else {}
        initial |= {"weights": str(weights)} if weights else {}
        self.backbone: nn.Module = instantiate(self.hparams.backbone, **initial)
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        shape = (1, -1, 1, 1)
        self.register_buffer("input_mean", torch.tensor(self.hparams.mean).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(self.hparams.std).view(shape), persistent=False)

        n = len(self.hparams.class_names)
        self.train_acc, self.val_acc = (
            MulticlassAccuracy(n, average="micro"),
            MulticlassAccuracy(n, average="micro"),
        )
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints so a resumed run continues the same best
        self.test_acc = MulticlassAccuracy(n, average="micro")
        self.test_class_acc = MulticlassAccuracy(n, average=None)
        self.test_nll, self.test_nll_raw = MeanMetric(), MeanMetric()
        self.test_ece, self.test_ece_raw = (MulticlassCalibrationError(n, n_bins=15, norm="l1") for _ in range(2))
        self.test_confusion = MulticlassConfusionMatrix(n)
        self.confusion: torch.Tensor | None = None  # the last test's confusion matrix (counts), for the plots
        # test-time augmentation of test_step (fmnist.models.tta): the recorded one; eval/train may set another
        self.tta = (self.hparams.get("scoring") or {}).get("tta", "none")

    # --- forward -------------------------------------------------------------------------------------------------
    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) floats in [0, 1] (or uint8) -> what the backbone expects: size, channels, normalisation."""
        images = to_unit_float(images)
        size = self.hparams.image_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        if images.shape[1] != self.hparams.in_chans:
            images = images.expand(-1, self.hparams.in_chans, -1, -1)
        images = normalise(images, self.input_mean, self.input_std, self.hparams.get("input_norm", "dataset"))
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for (B, 1, 28, 28) images in [0, 1]."""
        return self.backbone(self.prepare_input(images))

    @property
    def val_temperature(self) -> float:
        """The temperature fitted on validation (`scoring`), 1.0 for a model that has none."""
        return float((self.hparams.get("scoring") or {}).get("temperature", 1.0))

    def calibrated(self, images: torch.Tensor) -> torch.Tensor:
        """Logits as the model is scored: averaged over its test-time augmentation views, divided by its
        temperature. Their softmax gives calibrated probabilities; the top class is forward's (under the same TTA)."""
        return tta_logits(self, images, self.tta).float() / self.val_temperature

    # --- training ------------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """A backbone with a data-dependent init (ResNet's `whiten`) gets the training images, once: not when
        resuming, where the checkpoint holds the weights. A frozen layer gets no gradient, so SGD leaves it (and
        its weight decay) alone."""
        if getattr(self.backbone, "whiten", None) and self.trainer.global_step == 0 and not self.trainer.ckpt_path:
            images = self.trainer.datamodule.train_set.images[:10_000].to(self.device)  # 10k: stable statistics
            self.backbone.init_whitening(self.prepare_input(images))

    def on_train_start(self) -> None:
        if self.trainer.current_epoch == 0:  # not when resuming: then the best so far comes from the checkpoint
            self.val_acc_best.reset()

    def training_loss(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of one training batch (a subclass may use the images too, e.g. distillation's teachers)."""
        # soft targets (mixup/cutmix, teacher labels) are (B, C) probabilities; cross_entropy takes both
        return F.cross_entropy(logits, targets, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = self.training_loss(images, logits, targets)
        hard = targets.argmax(1) if targets.ndim == 2 else targets
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), hard)
        self.log("train/loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_loss(F.cross_entropy(logits, labels))
        self.val_acc(logits, labels)
        self.log("val/loss", self.val_loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log("val/acc", self.val_acc, on_step=False, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best(self.val_acc.compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True)

    # --- test ----------------------------------------------------------------------------------------------------
    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        raw = tta_logits(self, images, self.tta).float()
        logits = raw / self.val_temperature  # the accuracy is the same either way; NLL and ECE are not
        self.test_nll_raw(F.cross_entropy(raw, labels, reduction="none"))
        self.test_ece_raw(raw.softmax(1), labels)
        self.test_nll(F.cross_entropy(logits, labels, reduction="none"))
        self.test_acc(logits, labels)
        self.test_class_acc(logits, labels)
        self.test_ece(logits.softmax(1), labels)
        self.test_confusion(logits, labels)

    def on_test_epoch_end(self) -> None:
        self.log("test/acc", self.test_acc.compute())
        self.log("test/nll", self.test_nll.compute())  # after the temperature fitted on validation (if any)
        self.log("test/ece", self.test_ece.compute())
        self.log("test/nll_raw", self.test_nll_raw.compute())  # before it
        self.log("test/ece_raw", self.test_ece_raw.compute())
        for name, acc in zip(self.hparams.class_names, self.test_class_acc.compute(), strict=True):
            self.log(f"test/acc_{metric_suffix(name)}", acc)
        self.confusion = self.test_confusion.compute().cpu()
        for metric in (self.test_acc, self.test_nll, self.test_ece, self.test_nll_raw, self.test_ece_raw,
                       self.test_class_acc, self.test_confusion):  # fmt: skip
            metric.reset()

    # --- optimisation --------------------------------------------------------------------------------------------
    def configure_callbacks(self) -> list[pl.Callback]:
        """The fine-tuning warm-up (`finetuning`, e.g. fmnist.models.finetuning.FrozenBackboneWarmup) belongs to
        the model's recipe, so the model brings it along."""
        return [instantiate(self.hparams.finetuning)] if self.hparams.finetuning else []

    def parameter_groups(self) -> list[dict]:
        """Weight decay on weights of convs and linears only, not on norms and biases. Frozen parameters are
        included (a fine-tuning warm-up unfreezes them later). With `backbone_lr_scale` or `layer_decay`, groups
        carry an `lr_scale` relative to the head (fmnist.models.components.timm_backbone.scaled_parameter_groups)."""
        if self.hparams.backbone_lr_scale != 1.0 or self.hparams.layer_decay:
            from fmnist.models.components.timm_backbone import scaled_parameter_groups

            return scaled_parameter_groups(self.backbone, self.hparams.backbone_lr_scale, self.hparams.layer_decay)
        return weight_decay_groups(self.parameters())

    def max_over_processes(self, value: float) -> float:
        """The largest `value` of all training processes (one small all-reduce; every process must call it)."""
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return tensor.item()

    def configure_optimizers(self) -> dict:
        """The optimizer and schedule of the config, over the trainer's steps. torch checks their values only here,
        as `fit` starts: a value it rejects (lr=-1, pct_start=1.5) ends in one message naming the config key."""
        epochs = self.hparams.scheduler_interval == "epoch"
        optimizer, scheduler = self.build_optimizer(
            self.trainer.max_epochs if epochs else self.trainer.estimated_stepping_batches
        )
        if scheduler is None:
            return {"optimizer": optimizer}
        if getattr(scheduler, "budget_s", None) and self.trainer.world_size > 1:
            # one clock for all replicas (the slowest process's), else their learning rates would drift apart
            scheduler.reduce_elapsed = self.max_over_processes
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }

    def build_optimizer(self, steps: int, where: str = "model") -> tuple[torch.optim.Optimizer, Any]:
        """The config's optimizer and schedule (or None) over `steps` scheduler steps; a value torch rejects is a
        ConfigError naming `where`.optimizer or `where`.scheduler. Commands that train a classifier late (gan.py's
        metrics) call it first, so a typo cannot cost the hours before."""
        groups = self.parameter_groups()
        lr = self.hparams.optimizer.get("lr")
        for group in groups:  # a group's `lr_scale` scales the configured (peak) learning rate
            if "lr_scale" in group and lr is not None:
                group["lr"] = lr * group["lr_scale"]
        with values_of(f"{where}.optimizer", self.hparams.optimizer):
            optimizer = instantiate(self.hparams.optimizer)(groups)  # `_partial_: true`
        if not self.hparams.scheduler:
            return optimizer, None
        make_scheduler = instantiate(self.hparams.scheduler)  # a functools.partial (`_partial_: true`)
        accepted = inspect.signature(make_scheduler.func).parameters
        # fill the schedule length from the trainer unless the config set it
        extra = {k: steps for k in ("total_steps", "T_max", "total_iters") if k in accepted}
        extra = {k: v for k, v in extra.items() if k not in make_scheduler.keywords}
        if "max_lr" in make_scheduler.keywords and any("lr_scale" in g for g in groups):  # OneCycleLR: one per group
            extra["max_lr"] = [make_scheduler.keywords["max_lr"] * g.get("lr_scale", 1.0) for g in groups]
        with values_of(f"{where}.scheduler", self.hparams.scheduler):
            return optimizer, make_scheduler(optimizer, **extra)
