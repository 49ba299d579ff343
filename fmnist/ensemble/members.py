"""The members of an ensemble: finished runs' checkpoints, found (run dirs, files, globs), loaded safely, checked to
share one validation split, and their logits on a split (with test-time augmentation). Used by the ensemble task
(fmnist.ensemble.run) and by the teacher relabelling of GAN images (fmnist.gan.relabel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fmnist.dataset import VAL_SPLIT_KEYS, to_unit_float
from fmnist.models.classifier import Classifier
from fmnist.models.files import load_with_split, split_conflict
from fmnist.models.tta import tta_logits
from fmnist.utils.errors import UserError
from fmnist.utils.run_info import describe_run, run_dir_of

SHARED_KEYS = (*VAL_SPLIT_KEYS, "checksums")  # members must agree on these: the same validation images


@dataclass
class Member:
    name: str
    ckpt_path: Path
    run_dir: Path | None
    split: dict  # the data settings the member was trained with (SHARED_KEYS it records)
    data: dict  # its recorded data settings: a checkpoint's all (data_dir, ...), an exported file's split only
    model: Classifier


def member_name(index: int, ckpt_path: Path, run_dir: Path | None) -> str:
    """'m0 cnn s1' from the run's model choice and seed; the checkpoint's file name when it has no run."""
    if run_dir is None:
        return f"m{index} {ckpt_path.stem}"
    info = describe_run(run_dir)
    parts = [f"m{index}", str(info["model"] or "model"), f"s{info['seed']}" if info["seed"] is not None else ""]
    return " ".join(p for p in parts if p)


def load_members(paths: list[Path], data_checksums: dict | None) -> list[Member]:
    """Load every model file (a .ckpt weights_only, an exported .safetensors without pickle) and refuse members that
    were validated on different images."""
    members = []
    for i, path in enumerate(paths):
        model, trained_with = load_with_split(path, VAL_SPLIT_KEYS)  # refuses unsafe, corrupt, GAN and foreign files
        split = {k: trained_with[k] for k in SHARED_KEYS if k in trained_with}
        run_dir = run_dir_of(path)
        members.append(Member(member_name(i, path, run_dir), path, run_dir, split, trained_with, model))
        if model.hparams.class_names != members[0].model.hparams.class_names:
            raise UserError(f"{path} predicts different classes than {members[0].ckpt_path}.")
    if conflict := split_conflict([(m.run_dir or m.ckpt_path, m.split) for m in members], SHARED_KEYS):
        path, other, differ = conflict
        raise UserError(
            f"{path} was trained with a different validation split than {other} ({differ}). Weights fitted on "
            "validation would see some members' training images: ensemble runs trained with the same "
            "data.val_size, data.split_seed and data set."
        )
    recorded = [m.split["checksums"] for m in members if "checksums" in m.split]  # older exported files: none
    if data_checksums is not None and any(c != data_checksums for c in recorded):
        raise UserError(
            "data.checksums differs from the checksums the members were trained with: pass the data settings the "
            "members were trained with (the same data.checksums)."
        )
    return members


def member_tta(member: Member, tta: str) -> str:
    """The test-time augmentation a member is scored with: `auto` = the one its run scored it with (its checkpoint's
    `scoring`; none when it records none), else `tta`."""
    return member.model.tta if tta == "auto" else tta


def describe_tta(members: list[Member], tta: str) -> str:
    """'flip' when all members use one TTA, else 'm0 cnn s1: flip, m1 resnet s0: flip+shift'."""
    modes = [member_tta(m, tta) for m in members]
    if len(set(modes)) == 1:
        return modes[0]
    return ", ".join(f"{m.name}: {t}" for m, t in zip(members, modes, strict=True))


def recorded_temperatures(members: list[Member], tta: str) -> torch.Tensor | None:
    """(M,) the temperatures the members' runs fitted on this validation split under their own TTA, when every
    member records one and is scored with its own TTA (`tta=auto`); else None, and the ensemble fits them."""
    temperatures = [(m.model.hparams.get("scoring") or {}).get("temperature") for m in members]
    if tta != "auto" or any(t is None for t in temperatures):
        return None
    return torch.tensor(temperatures, dtype=torch.float64)


def predict(
    members: list[Member], images: torch.Tensor, split: str, tta: str, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Each member's logits for uint8 `images` (N, 28, 28) under its TTA (`member_tta`): (M, N, C) floats on the
    CPU, computed once."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    outputs = []
    with Progress(*columns) as progress, torch.inference_mode():
        for member in members:
            task = progress.add_task(f"{split} · {member.name}", total=len(images))
            model, logits = member.model.to(device).eval(), []
            for start in range(0, len(images), batch_size):
                batch = to_unit_float(images[start : start + batch_size].to(device))
                logits.append(tta_logits(model, batch, member_tta(member, tta)).float().cpu())
                progress.advance(task, len(batch))
            outputs.append(torch.cat(logits))
    return torch.stack(outputs)
