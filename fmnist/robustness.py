"""Scoring a model on the corruption suite: `python eval.py ckpt_path=<model> corruptions=all` (docs/robustness.md).

For each split scored and each corruption, the split's cached corrupted copy (fmnist.data.corrupted_sets) goes
through the same Trainer.test as the clean split, so test-time augmentation and precision are the same. Adds to the
metrics `<split>/corrupted/<name>/acc`, `<split>/corrupted/mean_acc` (the mean over the corruptions) and
`<split>/corrupted/relative_drop` (1 - mean / clean accuracy); draws a bar chart and a grid of examples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig
from rich.progress import track
from torch.utils.data import DataLoader

from fmnist.data.corrupted_sets import corrupted_set
from fmnist.data.corruptions import CORRUPTIONS, check_names
from fmnist.data.datamodule import FashionMNISTDataModule, TensorBatches
from fmnist.utils.containers import as_list
from fmnist.utils.errors import UserError, config_int

log = logging.getLogger("fmnist")


def score_corruptions(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: FashionMNISTDataModule, splits: Sequence[str],
    names: Sequence[str], seed: int, cache_dir: str | Path, clean: dict[str, float],
) -> dict[str, float]:  # fmt: skip
    """Accuracy per corruption for each split; `clean` holds the clean `<split>/acc` already measured."""
    metrics: dict[str, float] = {}
    for split in splits:
        dataset = datamodule.val_set if split == "val" else datamodule.test_set
        for name in track(names, description=f"corrupted {split} sets", total=len(names)):
            images = corrupted_set(dataset.images, split, name, seed, cache_dir)
            loader = DataLoader(
                TensorBatches(images, dataset.labels), batch_size=datamodule.hparams.eval_batch_size,
                collate_fn=lambda batch: batch,
            )  # fmt: skip
            (results,) = trainer.test(model, dataloaders=loader, verbose=False)
            metrics[f"{split}/corrupted/{name}/acc"] = float(results["test/acc"])
        mean = sum(metrics[f"{split}/corrupted/{n}/acc"] for n in names) / len(names)
        metrics[f"{split}/corrupted/mean_acc"] = mean
        metrics[f"{split}/corrupted/relative_drop"] = 1 - mean / clean[f"{split}/acc"]
    return metrics


def table_text(metrics: dict, split: str, names: Sequence[str]) -> str:
    """The per-corruption accuracies as a plain table for the log."""
    rows = [("clean", metrics[f"{split}/acc"])] + [(n, metrics[f"{split}/corrupted/{n}/acc"]) for n in names]
    rows.append(("mean over corruptions", metrics[f"{split}/corrupted/mean_acc"]))
    width = max(len(r[0]) for r in rows)
    lines = [f"{split} accuracy under corruption (severity in docs/robustness.md)"]
    lines += [f"  {name:<{width}}  {acc * 100:6.2f} %" for name, acc in rows]
    lines.append(f"  {'relative drop':<{width}}  {metrics[f'{split}/corrupted/relative_drop'] * 100:6.2f} %")
    return "\n".join(lines)


def plot_bars(metrics: dict, split: str, names: Sequence[str], path: Path, title: str) -> Path:
    accs = [metrics[f"{split}/corrupted/{n}/acc"] * 100 for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.bar(range(len(names)), accs, color="tab:orange")
    ax.axhline(metrics[f"{split}/acc"] * 100, color="tab:blue", label=f"clean {metrics[f'{split}/acc'] * 100:.2f} %")
    mean = metrics[f"{split}/corrupted/mean_acc"] * 100
    ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean over corruptions {mean:.2f} %")
    for i, acc in enumerate(accs):
        ax.text(i, acc + 1, f"{acc:.0f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylim=(0, 105), ylabel=f"{split} accuracy, %", title=title)
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_examples(
    source: torch.Tensor, names: Sequence[str], seed: int, cache_dir: str | Path, split: str, path: Path,
    count: int = 8,
) -> Path:  # fmt: skip
    """A grid: one row per corruption (the clean images first), `count` examples each, from the cached sets."""
    rows = [("clean", source[:count])]
    rows += [(n, corrupted_set(source, split, n, seed, cache_dir)[:count]) for n in names]
    fig, axes = plt.subplots(len(rows), count, figsize=(count * 0.9 + 1.6, len(rows) * 0.9), squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(count):
            ax = axes[r, c]
            ax.imshow(images[c].reshape(images.shape[-2:]).numpy(), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        severity = "" if name == "clean" else f" {CORRUPTIONS[name].severity:.3g}"
        axes[r, 0].set_ylabel(name + severity, rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.22, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.05)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def check_corruptions(spec: object) -> list[str]:
    """The eval config's `corruptions` (all, a name or a list) -> names; UserError listing the choices."""
    return check_names(spec if isinstance(spec, str) else [str(n) for n in as_list(spec, "corruptions")])


def check_settings(settings: DictConfig) -> None:
    """eval.py's `robustness:` values, before any scoring: whole numbers, and a cache folder that can be made."""
    config_int(settings, "examples", minimum=1, where="robustness.")
    config_int(settings, "seed", where="robustness.")
    try:
        Path(settings.cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"robustness.cache_dir={settings.cache_dir}: cannot create it ({e.strerror or e}).") from None


def evaluate_corruptions(
    cfg: DictConfig, model: pl.LightningModule, datamodule: FashionMNISTDataModule, run_dir: Path,
    loggers: Sequence[Logger], metrics: dict,
) -> dict[str, Path]:  # fmt: skip
    """eval.py's `corruptions=` step: score, log the table, add to `metrics`, draw the figures (returned by name)."""
    names, splits = check_corruptions(cfg.corruptions), as_list(cfg.splits, "splits")
    settings = cfg.robustness
    # a Trainer without loggers: its per-set test/acc must not overwrite the clean one in W&B
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[], enable_progress_bar=False)
    clean = {f"{s}/acc": metrics[f"{s}/acc"] for s in splits}
    found = score_corruptions(trainer, model, datamodule, splits, names, settings.seed, settings.cache_dir, clean)
    metrics.update(found)
    for logger in loggers:
        logger.log_metrics(found)
    figures = {}
    for split in splits:
        log.info(table_text(metrics, split, names))
        suffix = "" if split == "test" else f"_{split}"
        title = f"{Path(cfg.ckpt_path).name} — {split}, tta={model.tta}"  # tta=auto: the model's own
        figures[f"corruptions{suffix}"] = plot_bars(metrics, split, names, run_dir / f"corruptions{suffix}.png", title)
    source = datamodule.test_set if "test" in splits else datamodule.val_set
    split = "test" if "test" in splits else "val"
    figures["corruption_examples"] = plot_examples(
        source.images, names, settings.seed, settings.cache_dir, split, run_dir / "corruption_examples.png",
        settings.examples,
    )  # fmt: skip
    return figures
