"""Reading checkpoints safely (`torch.load(weights_only=True)` only, so a file from elsewhere cannot run code) and
writing outputs atomically (a temporary file beside the target, then a rename: no reader sees half a file), JSON and
metrics included."""

from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from fmnist.utils.errors import CheckpointError, UserError


def check_output_path(path: Path) -> None:
    """UserError (not a traceback) when output file `path` cannot be written: it is a folder, a file stands where a
    folder must be, or the folder that would hold it is read-only. Creates nothing: callers check before the work
    (and before their run directory exists), atomic_path makes the folders when it writes."""
    if path.is_dir():
        raise UserError(f"Cannot write {path}: it is a folder. Give a file name, e.g. {path / ('out' + path.suffix)}.")
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise UserError(f"Cannot write {path}: {existing} is a file, not a folder. Choose another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"Cannot write {path}: {existing} is not writable. Choose a folder you can write to.")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (its folder created); on success it replaces `path`, so no reader sees
    half a file."""
    check_output_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a pseudo file system, a full disk
        raise UserError(f"Cannot write {path}: {e.strerror or e}. Choose a folder you can write to.") from None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # a read-only or full folder
        raise UserError(f"Cannot write {path}: {e.strerror or e}. Choose a folder you can write to.") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint dict, loaded on the CPU without executing pickled code; CheckpointError otherwise."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("checkpoints/*.ckpt")) or sorted(path.glob("*.ckpt"))
        files = ", ".join(str(f) for f in found[:3]) or "none found there"
        raise CheckpointError(f"Checkpoint {path} is a folder: pass a checkpoint file in it ({files}).")
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Pass an existing file: a run's checkpoints/best.ckpt to score or "
            "predict with it, its last.ckpt to resume it (`python scripts/runs.py --all --wide` lists the runs)"
        )
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise CheckpointError(f"Checkpoint {path} is unreadable: not a torch checkpoint archive (or truncated).")
    try:  # torch.load does not check the archive's CRCs: a damaged copy would load and predict garbage
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        damaged = str(e)
    if damaged:
        raise CheckpointError(
            f"Checkpoint {path} is damaged: {damaged} fails the archive's CRC check. Copy it again from its source."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))  # torch's words for the refused object
        what = f"it names {found[1]}" if found else "it holds objects"
        raise CheckpointError(
            f"Checkpoint {path} was refused: {what}, which only a full unpickling could rebuild, and that could "
            "run code. Only load checkpoints written by fmnist, or re-save the state_dict from a trusted source."
        ) from e
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as e:
        raise CheckpointError(f"Checkpoint {path} is unreadable ({e}); it is truncated or not a checkpoint.") from e
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no 'state_dict').")
    check_targets(checkpoint.get("hyper_parameters") or {}, path)
    return checkpoint


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the metadata of a .safetensors file, read without pickle; CheckpointError when
    the file is missing, truncated or corrupt. `what` names the file in the message ("Model file")."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} {path} is a folder: pass a .safetensors file.")
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path), device="cpu"), metadata
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it is truncated or corrupt.") from e


# What a checkpoint's hyperparameters may name to instantiate (backbone, optimizer, schedule, GAN nets, ...).
ALLOWED_MODULES = ("fmnist.", "torch.optim.", "timm.")


def targets(value: Any) -> list[str]:
    """Every `_target_` string inside nested dicts/lists."""
    if isinstance(value, dict):
        found = [str(value["_target_"])] if "_target_" in value else []
        return found + [t for v in value.values() for t in targets(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in targets(v)]
    return []


def check_targets(hparams: dict[str, Any], path: str | Path) -> None:
    """Refuse hyperparameters that would instantiate anything but an fmnist, torch.optim or timm callable.

    weights_only loading stops pickled code, but Lightning rebuilds a module by instantiating the `_target_`s its
    saved hyperparameters name, so a crafted file could name `os.system`. A prefix test alone is not enough (Hydra
    walks attributes: `fmnist.utils.io.os.system` is os.system), so each target is resolved and the module that
    defines it must be one of ALLOWED_MODULES.
    """
    from hydra.utils import get_object

    unsafe = []
    for target in targets(hparams):
        try:
            defined_in = get_object(target).__module__ if target.startswith(ALLOWED_MODULES) else ""
        except Exception:  # an unresolvable name is refused like an unsafe one
            defined_in = ""
        if not (defined_in or "").startswith(ALLOWED_MODULES):
            unsafe.append(target)
    if unsafe:
        raise CheckpointError(
            f"{path} names {', '.join(unsafe)} to instantiate; only classes and functions defined in fmnist, "
            "torch.optim and timm are allowed. Use a checkpoint written by fmnist (or one from a source you trust, "
            "re-saved from its state_dict)."
        )


def checkpoint_kind(checkpoint: dict[str, Any]) -> str:
    """What wrote a Lightning checkpoint: "classifier" (train.py), "gan" (gan.py) or "other"."""
    hparams = checkpoint.get("hyper_parameters") or {}
    return "classifier" if "backbone" in hparams else "gan" if "generator" in hparams else "other"


def read_classifier_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of fmnist.models.classifier.Classifier (not of a GAN or another module)."""
    checkpoint = read_checkpoint(path)
    if (kind := checkpoint_kind(checkpoint)) != "classifier":
        raise CheckpointError(
            f"{path} is {'a GAN' if kind == 'gan' else 'not a Classifier'} checkpoint; this command needs a "
            "classifier checkpoint from `python train.py` (<run>/checkpoints/best.ckpt or last.ckpt)."
        )
    return checkpoint


def read_gan_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint of fmnist.models.gan.GAN (not of a classifier or another module)."""
    checkpoint = read_checkpoint(path)
    if (kind := checkpoint_kind(checkpoint)) != "gan":
        raise CheckpointError(
            f"{path} is {'a classifier' if kind == 'classifier' else 'not a GAN'} checkpoint; a generator "
            "checkpoint from `python gan.py` is needed (outputs/gan/runs/<run>/checkpoints/last.ckpt; "
            "scripts/generate.py and aug.source also take a generator .safetensors file)."
        )
    return checkpoint


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically: a reader (or a crash) never sees a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor) or v.numel() == 1}
