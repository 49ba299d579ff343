"""Rebuilding a Classifier from saved hyperparameters and weights (a checkpoint's, or an exported file's), after
checking what they would instantiate. It lives with the models, so that a model that loads others (a distillation
student's teachers, fmnist/models/distill.py) needs nothing from the task layers; fmnist.predict.model builds on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException

from fmnist.models.classifier import Classifier
from fmnist.utils.errors import CheckpointError
from fmnist.utils.io import check_targets, read_classifier_checkpoint


def build(hparams: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> Classifier:
    """A Classifier in eval mode from its hyperparameters and weights; CheckpointError naming `path` otherwise."""
    if "backbone" not in hparams:
        raise CheckpointError(f"{path} is not a Classifier model (its hyperparameters name no backbone).")
    check_targets(hparams, path)
    try:
        model = Classifier(**hparams)
        model.load_state_dict(state_dict, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError, InstantiationException) as e:
        raise CheckpointError(f"{path} does not rebuild a Classifier ({str(e).splitlines()[0]}).") from e
    return model.eval()


def load_checkpoint_model(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """A Classifier in eval mode on the CPU from a Lightning .ckpt (weights_only loading), and the checkpoint dict
    (its `datamodule_hyper_parameters` record the data split it was trained with)."""
    checkpoint = read_classifier_checkpoint(path)
    return build(dict(checkpoint["hyper_parameters"]), checkpoint["state_dict"], Path(path)), checkpoint
