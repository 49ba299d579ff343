"""Model files: a Classifier loaded from a Lightning .ckpt or a pickle-free .safetensors file (and saved to the
latter), and the GAN of a checkpoint written by `python gan.py`.

The .safetensors form (`python export.py format=safetensors`, the shipped models/fmnist_cnn.safetensors) holds the
state dict as tensors and the Classifier's hyperparameters as JSON in the file's metadata (key `fmnist.hparams`), so
loading it runs no pickle at all. Either way, the `_target_`s the hyperparameters name (backbone, optimizer, ...)
must belong to fmnist, torch.optim or timm before anything is instantiated.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.errors import InstantiationException

from fmnist.dataset import SPLIT_KEYS, split_differences
from fmnist.models.classifier import Classifier
from fmnist.utils.errors import CheckpointError
from fmnist.utils.io import (
    atomic_path,
    check_targets,
    read_classifier_checkpoint,
    read_gan_checkpoint,
    read_safetensors,
)

if TYPE_CHECKING:
    from fmnist.models.gan import GAN  # loaded by load_generator only: scoring a classifier needs no GAN code

HPARAMS_KEY = "fmnist.hparams"
SPLIT_KEY = "fmnist.split"  # JSON of the data settings the model was trained with (RECORDED_KEYS), when known
RECORDED_KEYS = (*SPLIT_KEYS, "checksums")  # which images it trained and was validated on: all an export keeps
SOURCE_KEY = "fmnist.source"  # the file name of the checkpoint it was exported from
FORMAT_KEY = "fmnist.format"
FORMAT = "fmnist-classifier-v1"


def build(hparams: dict[str, Any], state_dict: dict[str, torch.Tensor], path: Path) -> Classifier:
    """A Classifier in eval mode from its hyperparameters and weights; CheckpointError naming `path` otherwise."""
    if "backbone" not in hparams:
        raise CheckpointError(f"{path} is not a Classifier model (its hyperparameters name no backbone).")
    check_targets(hparams, path)
    try:
        model = Classifier(**hparams)
        model.load_state_dict(state_dict, strict=True)
    except (TypeError, ValueError, RuntimeError, KeyError, InstantiationException) as e:
        detail = " ".join(line.strip() for line in str(e).splitlines()[:2])  # load_state_dict's first mismatch
        raise CheckpointError(
            f"{path} does not rebuild a Classifier ({detail[:300]}): its weights do not fit the model its own "
            "hyperparameters describe, so it was changed or written elsewhere. Use the file its run wrote."
        ) from e
    return model.eval()


def load_safetensors(path: str | Path) -> Classifier:
    """Rebuild a Classifier from a file written by `save_safetensors` (no pickle involved). The data settings it
    was trained with, when the file records them, are in `model.trained_split` (else an empty dict)."""
    state_dict, metadata = read_safetensors(path, "Model file")
    if metadata.get(FORMAT_KEY) != FORMAT or HPARAMS_KEY not in metadata:
        raise CheckpointError(
            f"{path} is a safetensors file but not an fmnist classifier (no {FORMAT_KEY}={FORMAT} metadata); write one "
            "with `python export.py ckpt_path=<run>/checkpoints/best.ckpt format=safetensors`."
        )
    try:
        hparams = json.loads(metadata[HPARAMS_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its {HPARAMS_KEY} metadata is not valid JSON ({e}).") from e
    try:
        trained_split = json.loads(metadata.get(SPLIT_KEY, "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: its {SPLIT_KEY} metadata is not valid JSON ({e}).") from e
    trained_split = checked_split(trained_split, path, f"its {SPLIT_KEY} metadata")
    if unknown := sorted(set(trained_split) - set(RECORDED_KEYS)):  # an export writes no others (e.g. data_dir)
        raise CheckpointError(f"{path}: its {SPLIT_KEY} metadata records unknown settings {unknown}.")
    model = build(hparams, state_dict, path)
    model.trained_split = trained_split
    model.source = metadata.get(SOURCE_KEY)  # the checkpoint it was exported from, when recorded
    return model


def save_safetensors(model: Classifier, path: str | Path, extra: dict[str, str] | None = None) -> None:
    """The model's state dict as tensors, its hyperparameters as JSON metadata (written atomically)."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {FORMAT_KEY: FORMAT, HPARAMS_KEY: json.dumps(dict(model.hparams), sort_keys=True), **(extra or {})}
    with atomic_path(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=metadata)


def load_trained(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """A Classifier in eval mode on the CPU (weights_only loading for a .ckpt, no pickle for a .safetensors) and the
    data settings it was trained with: a .ckpt's datamodule hyperparameters, or the RECORDED_KEYS an exported file
    keeps (files exported before the data checksums were kept, such as the shipped ones, have no `checksums`); {}
    when the file records none."""
    path = Path(path)
    if path.suffix == ".safetensors":
        model = load_safetensors(path)
        return model, dict(model.trained_split)
    checkpoint = read_classifier_checkpoint(path)
    model = build(dict(checkpoint["hyper_parameters"]), checkpoint["state_dict"], path)
    trained_with = checkpoint.get("datamodule_hyper_parameters") or {}
    return model, checked_split(trained_with, path, "its datamodule_hyper_parameters")


def load_with_split(path: str | Path, required: tuple[str, ...], role: str = "") -> tuple[Classifier, dict[str, Any]]:
    """`load_trained`, refusing a file that does not record the `required` data settings (its validation images
    cannot be known, so it cannot be compared with other runs). `role` ("Teacher ") starts the message."""
    model, trained_with = load_trained(path)
    if any(k not in trained_with for k in required):
        raise CheckpointError(
            f"{role}{path} does not record the data split it was trained with, so its validation images cannot be "
            "known. Use checkpoints written by `python train.py`, or files exported from them by `python export.py`."
        )
    return model, trained_with


def split_conflict(recorded: list[tuple[Path, dict]], keys: tuple[str, ...]) -> tuple[Path, Path, str] | None:
    """The first two of several (file, data settings) pairs that differ in `keys`, with the differences; None when
    they agree. Every pair is compared: an older exported file has no checksums to compare through."""
    for j, (path, split) in enumerate(recorded):
        for other_path, other in recorded[:j]:
            if differ := split_differences(split, other, keys):
                return path, other_path, differ
    return None


def checked_split(settings: Any, path: Path, where: str) -> dict[str, Any]:
    """`settings` as a dict when its RECORDED_KEYS have the types a datamodule gives them; CheckpointError naming
    the file otherwise (ensembles, distillation and eval.py rebuild and compare splits from them)."""
    if not isinstance(settings, Mapping):
        raise CheckpointError(f"{path}: {where} is not a mapping of data settings; re-export or retrain the model.")
    valid = {
        "val_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        "split_seed": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "train_fraction": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 1,
        "checksums": lambda v: v is None or (isinstance(v, Mapping) and all(isinstance(x, str) for x in v.values())),
    }
    for key, ok in valid.items():
        if key in settings and not ok(settings[key]):
            raise CheckpointError(f"{path}: {where} records {key}={settings[key]!r}, which no datamodule writes.")
    return dict(settings)


def load_classifier(path: str | Path) -> Classifier:
    """A Classifier in eval mode on the CPU from a .safetensors file or a Lightning .ckpt (weights_only loading)."""
    return load_trained(path)[0]


def load_generator(path: str | Path) -> GAN:
    """The GAN of a checkpoint written by `python gan.py` (weights_only loading), in eval mode; CheckpointError
    otherwise."""
    from fmnist.models.gan import GAN

    read_gan_checkpoint(path)  # refuses unsafe, corrupt and classifier files with a message
    try:
        model = GAN.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except (TypeError, ValueError, RuntimeError, KeyError, InstantiationException) as e:
        raise CheckpointError(f"{path} does not rebuild a GAN ({str(e).splitlines()[0]}).") from e
    return model.eval()
