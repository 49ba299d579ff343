"""Knowledge distillation: a Classifier (the student) that learns from finished runs (the teachers) as well as from
the labels (Hinton et al. 2015, "Distilling the knowledge in a neural network"):

    loss = alpha * CE(student, labels) + (1 - alpha) * T^2 * KL(teachers_T || student_T)

where teachers_T is the teachers' softmax at temperature T averaged over the teachers (an ensemble's soft targets;
one teacher of the student's size is self-distillation). They are computed on the fly, on the very batch the student
sees (after the training augmentation), with the teachers in eval mode, without gradients and under the same
autocast as the student. The T^2 factor keeps the soft term's gradients on the scale of the hard one's.

The student's checkpoint is a plain Classifier's: the teachers are no submodules (their weights stay out of its
state_dict) and the distillation settings leave its hyperparameters for a `distillation` entry of the checkpoint,
so `Classifier.load_from_checkpoint`, eval.py, predict.py and export.py rebuild the student without the teachers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from fmnist.dataset import SPLIT_KEYS, split_differences
from fmnist.models.classifier import Classifier
from fmnist.models.files import load_with_split, split_conflict
from fmnist.utils.containers import plain
from fmnist.utils.errors import UserError
from fmnist.utils.run_info import expand_runs

log = logging.getLogger("fmnist")

SHARED_DATA_KEYS = (*SPLIT_KEYS, "checksums")  # teachers and student must agree on these: the same validation images


def distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_probs: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """alpha * CE(logits, targets) + (1 - alpha) * T^2 * KL(teacher_probs || softmax(logits / T)), batch mean.
    `targets` are class indices or (B, C) probabilities (mixup/cutmix); `teacher_probs` are already at T."""
    hard = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    student_log_probs = F.log_softmax(logits.float() / temperature, dim=1)
    soft = F.kl_div(student_log_probs, teacher_probs.float(), reduction="batchmean") * temperature**2
    return alpha * hard + (1 - alpha) * soft


def ensemble_probs(teachers: list[Classifier], images: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teachers' softmax at `temperature`, averaged: (B, C) float32 probabilities."""
    return torch.stack([F.softmax(t(images).float() / temperature, dim=1) for t in teachers]).mean(0)


@dataclass
class Teacher:
    ckpt_path: Path
    split: dict  # its datamodule settings that decide the validation images (SHARED_DATA_KEYS)
    model: Classifier


def load_teacher(path: Path) -> Teacher:
    """A teacher from a training checkpoint (weights_only loading; only fmnist/torch.optim/timm targets
    instantiated) or from an exported .safetensors file such as the shipped models/fmnist_resnet.safetensors (no
    pickle), with the data split it was trained on."""
    model, trained_with = load_with_split(path, SPLIT_KEYS, role="Teacher ")
    model.eval().requires_grad_(False)
    return Teacher(path, {k: trained_with[k] for k in SHARED_DATA_KEYS if k in trained_with}, model)


class Distiller(Classifier):
    """A Classifier trained on its teachers' soft targets as well as on the labels. `teacher`: runs (run dirs,
    checkpoint files or globs), checkpoint (best | last), temperature, alpha (the labels' weight); every other
    argument is the Classifier's (the student's network and recipe)."""

    def __init__(self, teacher: dict, **classifier_kwargs: Any) -> None:
        super().__init__(**classifier_kwargs)
        settings = plain(teacher) or {}
        if not settings.get("runs"):
            raise UserError(
                "teacher.runs is empty: name the teachers' run directories, checkpoints or a glob, e.g. "
                "'teacher.runs=[outputs/train/runs/<run>]' (one teacher of the same size: self-distillation)."
            )
        self.temperature, self.alpha = float(settings.get("temperature", 1.0)), float(settings.get("alpha", 0.5))
        if self.temperature <= 0 or not 0 <= self.alpha <= 1:
            raise UserError(
                f"teacher.temperature={self.temperature} must be > 0 and teacher.alpha={self.alpha} in [0, 1] "
                "(the weight of the labels' cross-entropy; 1 - alpha goes to the teachers' soft targets)."
            )
        which = str(settings.get("checkpoint", "best"))
        # a plain list, not a ModuleList: the teachers' weights stay out of the student's state_dict and checkpoint
        self.teachers = [load_teacher(p) for p in expand_runs(settings["runs"], which, at_least=1)]
        for t in self.teachers:
            if t.model.hparams.class_names != self.hparams.class_names:
                raise UserError(f"Teacher {t.ckpt_path} predicts other classes than the student.")
        if conflict := split_conflict([(t.ckpt_path, t.split) for t in self.teachers], SHARED_DATA_KEYS):
            path, other, differ = conflict
            raise UserError(
                f"Teachers {path} and {other} were trained on different splits ({differ}): distil from runs trained "
                "with the same data.val_size, data.split_seed, data.train_fraction and data set."
            )
        self.save_hyperparameters(
            {
                "distillation": {
                    "teachers": [str(t.ckpt_path) for t in self.teachers],
                    "checkpoint": which,
                    "temperature": self.temperature,
                    "alpha": self.alpha,
                }
            }
        )
        self.extra_metrics: dict[str, Any] = {}  # the teachers' record, for the run's metrics.json (on_fit_start)

    def setup(self, stage: str) -> None:
        """Refuse teachers that were validated on other images than the student: their soft targets would carry
        the student's validation labels into its training."""
        datamodule = self.trainer.datamodule
        if stage != "fit" or datamodule is None:
            return
        student = {k: datamodule.hparams.get(k) for k in SHARED_DATA_KEYS}
        for t in self.teachers:
            if differ := split_differences(t.split, student, SHARED_DATA_KEYS):
                raise UserError(
                    f"Teacher {t.ckpt_path} was trained on another data split than this student ({differ}, teacher "
                    "vs student): its soft targets would leak the student's validation images into training. Train "
                    "the student with the teachers' data settings, e.g. "
                    + " ".join(f"data.{k}={t.split[k]}" for k in SPLIT_KEYS)
                    + ", or choose teachers trained on the student's split."
                )

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for t in self.teachers:
            t.model.to(self.device).eval()
        self.extra_metrics = self.teacher_record()

    @torch.no_grad()
    def teacher_record(self) -> dict[str, Any]:
        """The teachers (checkpoint paths) with their accuracy on the shared validation split, each and averaged
        at the temperature (the soft targets' own accuracy), and the distillation settings."""
        val_set = self.trainer.datamodule.val_set
        batch = self.trainer.datamodule.hparams.eval_batch_size
        correct = torch.zeros(len(self.teachers) + 1)
        with self.trainer.precision_plugin.forward_context():
            for start in range(0, len(val_set), batch):
                images = val_set.images[start : start + batch].to(self.device)  # uint8: each model converts it
                labels = val_set.labels[start : start + batch].to(self.device)
                probs = [F.softmax(t.model(images).float() / self.temperature, dim=1) for t in self.teachers]
                for i, p in enumerate([*probs, torch.stack(probs).mean(0)]):
                    correct[i] += (p.argmax(1) == labels).sum().item()
        accuracy = (correct / len(val_set)).tolist()
        each = zip(self.teachers, accuracy[:-1], strict=True)
        teachers = [{"ckpt_path": str(t.ckpt_path), "val_acc": a} for t, a in each]
        log.info(f"Teachers' validation accuracy: {[round(a, 4) for a in accuracy[:-1]]}, averaged {accuracy[-1]:.4f}")
        return {
            "teachers": teachers,
            "teachers/val_acc_ensemble": accuracy[-1],
            "distill/temperature": self.temperature,
            "distill/alpha": self.alpha,
        }

    def training_loss(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The teachers' soft targets on this very (augmented) batch, mixed with the hard labels."""
        with torch.no_grad():
            soft_targets = ensemble_probs([t.model for t in self.teachers], images, self.temperature)
        return distillation_loss(
            logits, targets, soft_targets, self.temperature, self.alpha, self.hparams.label_smoothing
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint a plain Classifier's: the distillation settings (and the teachers' record) move out
        of its hyperparameters, so rebuilding the student never needs the teachers."""
        distillation = checkpoint["hyper_parameters"].pop("distillation", {})
        checkpoint["distillation"] = {**distillation, **self.extra_metrics}
