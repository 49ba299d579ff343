"""Figures of a run: the normalised confusion matrix and the learning curves (drawn from the CSV logger's file)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display here or on clusters
import matplotlib.pyplot as plt
import torch
from matplotlib.ticker import MaxNLocator


def plot_confusion_matrix(confusion: torch.Tensor, class_names: Sequence[str], path: Path, title: str) -> Path:
    """Rows = true class, normalised to sum to 1 (per-class recall on the diagonal)."""
    counts = confusion.double()
    norm = counts / counts.sum(1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(8.5, 7.5))
    im = ax.imshow(norm.numpy(), cmap="Blues", vmin=0, vmax=1)
    n = len(class_names)
    ax.set(xticks=range(n), yticks=range(n), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    for i in range(n):
        for j in range(n):
            value = norm[i, j].item()
            if value >= 0.005:
                color = "white" if value > 0.5 else "black"
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_epoch_metrics(metrics_csv: Path) -> dict[str, dict[int, float]]:
    """metric name -> {epoch: value} from Lightning's CSV logger file (rows mix step and epoch metrics)."""
    series: dict[str, dict[int, float]] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                series.setdefault(key, {})[epoch] = float(value)
    return series


def plot_learning_curves(metrics_csv: Path, path: Path, title: str = "") -> Path | None:
    """Train/val loss and accuracy by epoch (epochs counted from 1); None when there is nothing to draw."""
    series = read_epoch_metrics(metrics_csv)
    if not any(k in series for k in ("train/loss", "val/loss")):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, what in zip(axes, ("loss", "acc"), strict=True):
        for split, style in (("train", "o-"), ("val", "s-")):
            points = sorted(series.get(f"{split}/{what}", {}).items())
            if points:
                epochs, values = zip(*points, strict=True)
                ax.plot([e + 1 for e in epochs], values, style, label=split, markersize=4)
        ax.set(xlabel="epoch", ylabel="accuracy" if what == "acc" else "cross-entropy", title=what)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
        if what == "acc":
            ys = [v for s in ("train", "val") for v in series.get(f"{s}/acc", {}).values()]
            if ys:  # zoom on the interesting part instead of 0..1
                ax.set_ylim(max(0.0, math.floor(min(ys) * 20) / 20), 1.0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
