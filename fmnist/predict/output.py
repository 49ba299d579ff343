"""Writing prediction results: CSV/JSON tables and the PNG grid of what the model saw (atomic writes).

`wide` (the default): one row per image, as timm's inference.py writes them: file, top-1 class and probability,
then the other top-k classes and probabilities, the `uncertain` flag with its energy score, and the preprocessing.
`long`: one row per (image, rank) in a CSV, the image's `uncertain` flag on each; in JSON one entry per image with
its top-k list and flag. The `wide` JSON keeps the same fields as the CSV and adds how the model scored (`scoring`)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmnist.utils.io import atomic_path

FORMATS = ("wide", "long")  # cfg.format


def wide_columns(top_k: int) -> list[str]:
    """file, class, index, probability, class_2, probability_2, ..., uncertain, energy, preprocess."""
    ranked = [c for rank in range(2, top_k + 1) for c in (f"class_{rank}", f"probability_{rank}")]
    return ["file", "class", "index", "probability", *ranked, "uncertain", "energy", "preprocess"]


def wide_row(row: dict) -> dict:
    """A prediction (task.py's row: top-1 fields plus `top`, a list of {class, index, probability}) as CSV cells."""
    cells = {k: row[k] for k in ("file", "class", "index", "probability", "energy", "preprocess")}
    for rank, top in enumerate(row["top"][1:], start=2):
        cells |= {f"class_{rank}": top["class"], f"probability_{rank}": top["probability"]}
    cells["uncertain"] = flag(row)
    return cells


LONG_COLUMNS = ["file", "rank", "class", "index", "probability", "uncertain"]


def flag(row: dict) -> str:
    return "" if row["uncertain"] is None else str(row["uncertain"]).lower()  # "" = no threshold


def long_rows(rows: list[dict]) -> list[dict]:
    """LONG_COLUMNS per (image, rank)."""
    return [
        {"file": row["file"], "rank": rank, **top, "uncertain": flag(row)}
        for row in rows
        for rank, top in enumerate(row["top"], 1)
    ]


def write_predictions(path: Path, rows: list[dict], layout: str = "wide", scoring: dict | None = None) -> None:
    """`rows` (one per image, from task.py) to .csv or .json by the suffix, in the `wide` or `long` layout."""
    top_k = len(rows[0]["top"]) if rows else 1
    with atomic_path(path) as tmp:
        if path.suffix == ".json" and layout == "long":
            data = [{"file": row["file"], "top": row["top"], "uncertain": row["uncertain"]} for row in rows]
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        elif path.suffix == ".json":
            tmp.write_text(json.dumps({"scoring": scoring or {}, "predictions": rows}, indent=2) + "\n")
        else:
            table = long_rows(rows) if layout == "long" else [wide_row(row) for row in rows]
            names = LONG_COLUMNS if layout == "long" else wide_columns(top_k)
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=names)
                writer.writeheader()
                writer.writerows(table)


def save_grid(path: Path, pixels: list[np.ndarray], captions: list[str], scale: int = 4, columns: int = 8) -> None:
    """A PNG of the 28x28 inputs (scaled `scale`x, nearest) with a caption under each."""
    font = ImageFont.load_default()
    cell_w, text_h = 28 * scale, 12
    columns = max(1, min(columns, len(pixels)))
    rows = math.ceil(len(pixels) / columns)
    pad = 6
    width, height = columns * (cell_w + pad) + pad, rows * (cell_w + text_h + 2 * pad) + pad
    canvas = Image.new("L", (width, height), 64)
    draw = ImageDraw.Draw(canvas)
    for i, (array, caption) in enumerate(zip(pixels, captions, strict=True)):
        r, c = divmod(i, columns)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_w + text_h + 2 * pad)
        canvas.paste(Image.fromarray(array).resize((cell_w, cell_w), Image.Resampling.NEAREST), (x, y))
        draw.text((x, y + cell_w + 2), caption[:18], fill=255, font=font)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
