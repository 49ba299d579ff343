"""`python predict.py images=<file, folder or glob>`: classify images with a trained model.

Each input becomes the 28x28 uint8 image the model sees (fmnist.predict.images, fmnist.predict.preprocess), the
batch goes through Classifier.forward as floats in [0, 1], and the top-k classes with their probabilities are
printed as a table and, with out=preds.csv|.json, written atomically. A file named directly must be readable
(else one message and exit 2); a bad file found in a folder or by a glob is reported and skipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image
from rich.console import Console
from rich.table import Table

from fmnist.predict.images import Item, expand, read_items
from fmnist.predict.model import load_classifier
from fmnist.predict.output import save_grid, write_predictions
from fmnist.predict.preprocess import MODES
from fmnist.utils.errors import DataError, UserError, config_int
from fmnist.utils.runtime import setup_runtime
from fmnist.utils.task import hydra_task

log = logging.getLogger("fmnist")


def check_config(cfg: DictConfig) -> None:
    if cfg.preprocess not in MODES:
        raise UserError(f"preprocess={cfg.preprocess}: choose from {', '.join(MODES)}.")
    if not 1 <= config_int(cfg, "top_k") <= 10:
        raise UserError(f"top_k={cfg.top_k} must be between 1 and 10 (the number of classes).")
    if cfg.out and Path(cfg.out).suffix not in (".csv", ".json"):
        raise UserError(f"out={cfg.out}: name a .csv or .json file.")
    if cfg.get("max_image_pixels") is not None:
        config_int(cfg, "max_image_pixels", minimum=1)  # or null for Pillow's default


def gather(cfg: DictConfig) -> tuple[list[Item], list[tuple[Path, str]]]:
    """The readable inputs, and (file, reason) for each skipped one."""
    specs = list(cfg.images) if isinstance(cfg.images, ListConfig) else [cfg.images]
    items, skipped = [], []
    for path, named_directly in expand(specs):
        try:
            items.extend(read_items(path, cfg.preprocess))
        except UserError as e:
            if named_directly:
                raise
            skipped.append((path, str(e)))
            log.warning(f"skipped: {e}")
    if not items:
        reasons = "; ".join(reason for _, reason in skipped)
        raise DataError(f"No input could be read: {reasons}")
    return items, skipped


@torch.inference_mode()
def classify(model, items: list[Item], top_k: int, batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, class indices), each (N, top_k), best first."""
    pixels = torch.from_numpy(np.stack([item.pixels for item in items]))
    probs = []
    for start in range(0, len(pixels), batch_size):
        batch = pixels[start : start + batch_size].float().div(255).unsqueeze(1)  # (B, 1, 28, 28) in [0, 1]
        probs.append(model(batch).float().softmax(1))
    return torch.cat(probs).topk(top_k, dim=1)


def show(items: list[Item], top_p: torch.Tensor, top_i: torch.Tensor, names: list[str], source: str) -> None:
    table = Table(title=f"Predictions · {source}", title_justify="left")
    table.add_column("input", overflow="fold")
    for rank in range(top_p.shape[1]):
        table.add_column("class" if rank == 0 else f"#{rank + 1}")
    for item, p, i in zip(items, top_p.tolist(), top_i.tolist(), strict=True):
        table.add_row(item.name, *(f"{names[c]} {q:.1%}" for c, q in zip(i, p, strict=True)))
    Console(width=max(100, Console().width)).print(table)


def predict(cfg: DictConfig) -> list[dict]:
    check_config(cfg)
    setup_runtime(cfg)
    model = load_classifier(cfg.ckpt_path)
    default_limit = Image.MAX_IMAGE_PIXELS
    try:
        if cfg.get("max_image_pixels") is not None:
            Image.MAX_IMAGE_PIXELS = int(cfg.max_image_pixels)
        items, skipped = gather(cfg)
    finally:
        Image.MAX_IMAGE_PIXELS = default_limit
    names = list(model.hparams.class_names)
    top_p, top_i = classify(model, items, int(cfg.top_k))
    show(items, top_p, top_i, names, Path(cfg.ckpt_path).name)
    rows = [
        {"input": item.name, "rank": rank + 1, "class": names[c], "index": c, "probability": round(q, 6)}
        for item, p, i in zip(items, top_p.tolist(), top_i.tolist(), strict=True)
        for rank, (c, q) in enumerate(zip(i, p, strict=True))
    ]
    if cfg.out:
        write_predictions(Path(cfg.out), rows)
        log.info(f"predictions written to {cfg.out}")
    if cfg.save_inputs:
        run_dir = Path(cfg.paths.output_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        captions = [
            f"{Path(it.name).name[:10]}: {names[c][:7]}" for it, c in zip(items, top_i[:, 0].tolist(), strict=True)
        ]
        save_grid(run_dir / "inputs.png", [item.pixels for item in items], captions)
        log.info(f"what the model saw: {run_dir / 'inputs.png'}")
    if skipped:
        log.warning(f"{len(skipped)} of {len(skipped) + len(set(r['input'] for r in rows))} inputs skipped")
    return rows


@hydra_task("predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)
