"""Writing prediction results: CSV/JSON tables and the PNG grid of what the model saw (atomic writes)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fmnist.utils.io import atomic_path


def write_predictions(path: Path, rows: list[dict]) -> None:
    """rows: {"input", "rank", "class", "index", "probability"} per (image, rank); .csv or .json by suffix."""
    with atomic_path(path) as tmp:
        if path.suffix == ".json":
            by_input: dict[str, list[dict]] = {}
            for row in rows:
                top = {k: row[k] for k in ("class", "index", "probability")}
                by_input.setdefault(row["input"], []).append(top)
            data = [{"input": name, "top": top} for name, top in by_input.items()]
            tmp.write_text(json.dumps(data, indent=2) + "\n")
        else:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=["input", "rank", "class", "index", "probability"])
                writer.writeheader()
                writer.writerows(rows)


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
