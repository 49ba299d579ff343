"""Quality of GAN samples without Inception weights (which cannot be fetched here), measured with the project's own CNN:

- CAS (classification accuracy score): the CNN recipe trained on synthetic images only, tested on the real test set;
  compare it with `real_test_acc`, the same recipe trained on real images.
- Fréchet distance (torchmetrics' FID formula) between real test images and generated ones, in the feature space of
  the CNN trained on real data (its penultimate layer), overall and per class. A set against itself gives ~0.
- Agreement: the share of generated images that the real-data CNN assigns to their conditioning class (for real
  images with their true labels, this is the CNN's accuracy).

The real-data CNN is trained once per data set, recipe and seed, and cached under <cache_dir>/<key>/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.seed import isolate_rng
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from fmnist.data.datamodule import FashionMNISTDataModule
from fmnist.data.synthetic import SyntheticDataModule
from fmnist.dataset import CLASSES, SPLIT_KEYS
from fmnist.models.classifier import Classifier, metric_suffix
from fmnist.utils.io import scalar_metrics, write_json
from fmnist.utils.loggers import CSVLogger

log = logging.getLogger("fmnist")
TRAINED_ON = (*SPLIT_KEYS, "checksums")  # what defines the training split


def as_dict(cfg: DictConfig | dict) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def cache_key(settings: dict[str, Any]) -> str:
    """A short stable hash of JSON-able settings: the name of a cache entry."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_settings(data_cfg: DictConfig | dict) -> dict[str, Any]:
    data = as_dict(data_cfg)
    return {k: data.get(k) for k in TRAINED_ON}


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and random inside the block and restore the previous random state after it: a nested
    training (the real-data CNN) does not change what the enclosing run draws next. (Lightning's
    seed_everything would also overwrite the run's PL_GLOBAL_SEED.)"""
    with isolate_rng():
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        yield


def fit_classifier(
    model_cfg: dict,
    datamodule: FashionMNISTDataModule,
    epochs: int,
    run_dir: Path,
    trainer_kwargs: dict,
    seed: int,
    save_to: Path | None = None,
) -> tuple[Classifier, dict[str, float]]:
    """Train a Classifier for `epochs` (final weights, no checkpoint selection), optionally save it (weights only),
    and score the real test split once. The global random state is restored afterwards, so a cached or uncached
    run continues identically."""
    with seeded(seed):
        model = instantiate(model_cfg)
        trainer = pl.Trainer(
            max_epochs=epochs, default_root_dir=str(run_dir), logger=CSVLogger(str(run_dir), name="", version=""),
            callbacks=[RichProgressBar()], enable_checkpointing=False, enable_model_summary=False,
            num_sanity_val_steps=0, **trainer_kwargs,
        )  # fmt: skip
        trainer.fit(model, datamodule=datamodule)
        if save_to is not None:
            trainer.save_checkpoint(save_to, weights_only=True)
        metrics = scalar_metrics(trainer.callback_metrics)
        trainer.test(model, datamodule=datamodule, verbose=False)
        metrics.update(scalar_metrics(trainer.callback_metrics))
    return model.eval(), metrics


def real_data_classifier(
    model_cfg: dict, data_cfg: DictConfig | dict, epochs: int, seed: int, cache_dir: Path, trainer_kwargs: dict
) -> tuple[Classifier, dict[str, Any]]:
    """The CNN trained on the real training split (all of it: it is a measuring instrument), cached."""
    data = {**as_dict(data_cfg), "train_fraction": 1.0}
    settings = {"model": as_dict(model_cfg), "split": split_settings(data), "epochs": epochs, "seed": seed}
    directory = Path(cache_dir) / cache_key(settings)
    checkpoint, info_path = directory / "classifier.ckpt", directory / "info.json"
    if not info_path.is_file():  # written last: marks a complete entry
        log.info(f"Training the real-data CNN for the GAN metrics (once; cached in {directory})")
        directory.mkdir(parents=True, exist_ok=True)
        datamodule = instantiate(data, augment=None)
        _, metrics = fit_classifier(settings["model"], datamodule, epochs, directory, trainer_kwargs, seed, checkpoint)
        write_json(info_path, {"settings": settings, "metrics": metrics})
    else:
        log.info(f"Real-data CNN for the GAN metrics: cached {checkpoint}")
    model = Classifier.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    return model, json.loads(info_path.read_text())


class Precomputed(nn.Identity):
    """Feeds already computed features to torchmetrics' FID (its `feature` network), so each image is embedded once."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


@torch.no_grad()
def penultimate_features(
    classifier: Classifier, images: torch.Tensor, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, logits) of images (N, 28, 28) uint8 or (N, 1, 28, 28) in [0, 1]: the input of the backbone's last
    linear layer (after ReLU, before dropout's identity in eval mode) and the classifier's output."""
    last = [m for m in classifier.backbone.modules() if isinstance(m, nn.Linear)][-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_pre_hook(lambda _module, args: captured.append(args[0].flatten(1).float()))
    logits = []
    try:
        classifier.eval()
        for start in range(0, len(images), batch_size):
            logits.append(classifier(images[start : start + batch_size].to(classifier.device)).float().cpu())
    finally:
        handle.remove()
    return torch.cat(captured).cpu(), torch.cat(logits)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, d) (torchmetrics' FID computation)."""
    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def sample_quality(
    classifier: Classifier,
    real_images: torch.Tensor,
    real_labels: torch.Tensor,
    fake_images: torch.Tensor,
    fake_labels: torch.Tensor,
) -> dict[str, float]:
    """Fréchet distance (overall and per class) between real and generated images, and the agreement of the
    classifier with the generated images' classes (overall and per class)."""
    real_features, _ = penultimate_features(classifier, real_images)
    fake_features, fake_logits = penultimate_features(classifier, fake_images)
    agree = (fake_logits.argmax(1) == fake_labels).float()
    metrics = {"quality/fd": frechet_distance(real_features, fake_features), "quality/agreement": agree.mean().item()}
    for c in fake_labels.unique().tolist():
        name = metric_suffix(CLASSES[c])
        metrics[f"quality/fd_{name}"] = frechet_distance(
            real_features[real_labels == c], fake_features[fake_labels == c]
        )
        metrics[f"quality/agreement_{name}"] = agree[fake_labels == c].mean().item()
    return metrics


def classification_accuracy_score(
    model_cfg: dict,
    data_cfg: DictConfig | dict,
    synthetic_path: Path,
    epochs: int,
    run_dir: Path,
    trainer_kwargs: dict,
    seed: int,
) -> dict[str, float]:
    """CAS: the classifier recipe trained on the synthetic set only, tested once on the real test split."""
    data = as_dict(data_cfg)
    data.pop("_target_", None)
    datamodule = SyntheticDataModule(synthetic=str(synthetic_path), **data)
    _, metrics = fit_classifier(as_dict(model_cfg), datamodule, epochs, run_dir, trainer_kwargs, seed)
    return {"quality/cas": metrics["test/acc"], "quality/cas_val_acc": metrics.get("val/acc", float("nan"))}
