"""`python predict.py images=<file, folder or glob>`: classify images with a trained model.

Each input becomes the 28x28 uint8 image the model sees (fmnist.predict.images, fmnist.predict.preprocess; images
already in the data set's form skip the photo steps), the batch is scored as the model records (`scoring`: its
test-time augmentation and the temperature fitted on validation, Classifier.calibrated), and the top-k classes
with their calibrated probabilities are printed as a table and, with out=preds.csv|.json, written atomically, one
row per image. `uncertain` flags an energy score (-logsumexp of the calibrated logits) above the model's
validation threshold: an input unlike the training data, or a hard one (fmnist.models.calibration). A file named
directly must be readable (else one message and exit 2); a bad file in a folder or glob is reported and skipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image
from rich.console import Console
from rich.table import Table

from fmnist.models.calibration import energy
from fmnist.models.classifier import Classifier
from fmnist.models.files import load_classifier
from fmnist.models.tta import check_tta
from fmnist.predict.images import Item, expand, read_items
from fmnist.predict.output import FORMATS, save_grid, write_predictions
from fmnist.predict.preprocess import MODES
from fmnist.task import hydra_task
from fmnist.utils.errors import DataError, UserError, config_int
from fmnist.utils.io import check_output_path
from fmnist.utils.run_info import scored_checkpoint
from fmnist.utils.runtime import setup_runtime

log = logging.getLogger("fmnist")


def check_config(cfg: DictConfig) -> None:
    if cfg.preprocess not in MODES:
        raise UserError(f"preprocess={cfg.preprocess}: choose from {', '.join(MODES)}.")
    if not 1 <= config_int(cfg, "top_k") <= 10:
        raise UserError(f"top_k={cfg.top_k} must be between 1 and 10 (the number of classes).")
    if cfg.out and Path(cfg.out).suffix not in (".csv", ".json"):
        raise UserError(f"out={cfg.out}: name a .csv or .json file.")
    if cfg.out:
        check_output_path(Path(cfg.out))  # before predicting
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format}: choose wide (one row per image) or long (one row per class and image).")
    if cfg.tta != "auto":
        check_tta(cfg.tta)
    if cfg.uncertain_above not in ("auto", None) and not isinstance(cfg.uncertain_above, int | float):
        raise UserError(f"uncertain_above={cfg.uncertain_above}: an energy score (e.g. -2.5), auto or null.")
    if cfg.get("max_image_pixels") is not None:
        config_int(cfg, "max_image_pixels", minimum=1)  # or null for Pillow's default


def gather(cfg: DictConfig) -> tuple[list[Item], list[tuple[Path, str]]]:
    """The readable inputs, and (file, reason) for each skipped one."""
    specs = list(cfg.images) if isinstance(cfg.images, ListConfig) else [cfg.images]
    items, skipped = [], []
    for path, named_directly in expand(specs):
        try:
            items.extend(read_items(path, cfg.preprocess))
        except (UserError, OSError) as e:  # OSError: no permission, an I/O error
            error = e if isinstance(e, UserError) else DataError(f"{path} cannot be read: {e.strerror or e}.")
            if named_directly:
                raise error from None
            skipped.append((path, str(error)))
            log.warning(f"skipped: {error}")
    if not items and not skipped:
        raise DataError(f"images={specs}: names no file. Give a file, a folder or a glob, e.g. images='shots/*.jpg'.")
    if not items:
        reasons = "; ".join(reason for _, reason in skipped)
        raise DataError(f"No input could be read: {reasons}")
    return items, skipped


def scoring_of(model: Classifier, cfg: DictConfig) -> dict:
    """How predictions are scored: the model's recorded TTA, temperature and threshold unless overridden."""
    recorded = model.hparams.get("scoring") or {}
    if cfg.tta != "auto" and cfg.tta != model.tta and recorded:
        log.warning(f"tta={cfg.tta}: the temperature (and the uncertainty threshold) were fitted on validation with "
                    f"tta={model.tta}; with other views the probabilities are calibrated only roughly.")  # fmt: skip
    model.tta = model.tta if cfg.tta == "auto" else cfg.tta
    threshold = recorded.get("uncertain_above") if cfg.uncertain_above == "auto" else cfg.uncertain_above
    if cfg.uncertain_above == "auto" and threshold is None:
        log.warning(f"{cfg.ckpt_path} records no uncertainty threshold (trained before runs fitted one): the "
                    "uncertain column stays empty. Fit one: python export.py ckpt_path=<it> format=safetensors "
                    "calibrate=true, or set uncertain_above=<energy>.")  # fmt: skip
    return {"tta": model.tta, "temperature": model.val_temperature, "uncertain_above": threshold}


@torch.inference_mode()
def classify(model: Classifier, items: list[Item], top_k: int, batch_size: int = 512) -> tuple[torch.Tensor, ...]:
    """(probabilities, class indices), each (N, top_k), best first, calibrated (Classifier.calibrated), and the
    (N,) energy scores of the calibrated logits."""
    pixels = torch.from_numpy(np.stack([item.pixels for item in items]))
    logits = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].float().div(255).unsqueeze(1)  # (B, 1, 28, 28) in [0, 1]
        logits.append(model.calibrated(batch))
    logits = torch.cat(logits)
    return *logits.softmax(1).topk(top_k, dim=1), energy(logits)


def describe(name: str, scoring: dict) -> str:
    """'fmnist_resnet.safetensors · tta flip+shift · temperature 0.665 · uncertain above energy -2.61'."""
    threshold = scoring["uncertain_above"]
    flag = f"uncertain above energy {threshold:.2f}" if threshold is not None else "no uncertainty threshold"
    return f"{name} · tta {scoring['tta']} · temperature {scoring['temperature']:.3f} · {flag}"


def shared_folder(files: list[str]) -> str | None:
    """The folder every input lies in (None when they share none, or there is one input): the table names the inputs
    relative to it, so a folder of photos reads as file names, not as wrapped absolute paths."""
    try:
        folder = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    except ValueError:  # different drives
        return None
    return folder if len(files) > 1 else None


def show(rows: list[dict], title: str) -> None:
    """The predictions as a table on the console (files relative to their shared folder; CSV and JSON keep the
    paths as given)."""
    folder = shared_folder([row["file"] for row in rows])
    title = f"Predictions · {title}" + (f" · in {folder}" if folder else "")
    table = Table(title=title, title_justify="left")
    table.add_column("file", overflow="fold")
    for rank in range(len(rows[0]["top"])):
        table.add_column("class" if rank == 0 else f"#{rank + 1}")
    table.add_column("uncertain")
    for row in rows:
        flag = {True: "uncertain", False: "", None: "–"}[row["uncertain"]]
        name = os.path.relpath(os.path.abspath(row["file"]), folder) if folder else row["file"]
        table.add_row(name, *(f"{t['class']} {t['probability']:.1%}" for t in row["top"]), flag)
    Console(width=max(100, Console().width)).print(table)


def predict(cfg: DictConfig) -> list[dict]:
    """One row per readable input: file, class, index, probability, top (the top-k), uncertain, energy, preprocess."""
    check_config(cfg)
    setup_runtime(cfg)
    cfg.ckpt_path = scored_checkpoint(cfg.ckpt_path)  # a run directory: the checkpoint validation chose
    model = load_classifier(cfg.ckpt_path)
    scoring = scoring_of(model, cfg)
    default_limit = Image.MAX_IMAGE_PIXELS
    try:
        if cfg.get("max_image_pixels") is not None:
            Image.MAX_IMAGE_PIXELS = int(cfg.max_image_pixels)
        items, skipped = gather(cfg)
    finally:
        Image.MAX_IMAGE_PIXELS = default_limit
    names = list(model.hparams.class_names)
    top_p, top_i, energies = classify(model, items, int(cfg.top_k))
    threshold = scoring["uncertain_above"]
    rows = []
    for item, p, i, e in zip(items, top_p.tolist(), top_i.tolist(), energies.tolist(), strict=True):
        top = [{"class": names[c], "index": c, "probability": round(q, 6)} for c, q in zip(i, p, strict=True)]
        uncertain = None if threshold is None else bool(e > threshold)
        rows.append({"file": item.name, **top[0], "top": top, "uncertain": uncertain, "energy": round(e, 4),
                     "preprocess": item.preprocess})  # fmt: skip
    title = describe(Path(cfg.ckpt_path).name, scoring)
    show(rows, title)
    flagged = sum(bool(r["uncertain"]) for r in rows)
    log.info(f"{len(rows)} images · {title} · {flagged} uncertain")
    if cfg.out:
        write_predictions(Path(cfg.out), rows, cfg.format, scoring | {"model": str(cfg.ckpt_path)})
        log.info(f"predictions written to {cfg.out} ({cfg.format})")
    if cfg.save_inputs:
        run_dir = Path(cfg.paths.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        captions = [f"{Path(r['file']).name[:10]}: {r['class'][:7]}" for r in rows]
        save_grid(run_dir / "inputs.png", [item.pixels for item in items], captions)
        log.info(f"what the model saw: {run_dir / 'inputs.png'}")
    if skipped:
        log.warning(f"{len(skipped)} of {len(skipped) + len(set(r['file'] for r in rows))} inputs skipped")
    return rows


@hydra_task("predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)
