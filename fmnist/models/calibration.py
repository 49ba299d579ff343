"""How a classifier is scored, fitted on the validation split: a temperature for its logits (Guo et al. 2017) and
the energy score (-logsumexp of the calibrated logits) above which a prediction is flagged `uncertain`.

The result is a plain dict, the Classifier's `scoring` hyperparameter, so it travels in every form of the model (a
.ckpt's hyperparameters, the JSON metadata of a .safetensors file) and `Classifier.load_from_checkpoint(...,
weights_only=True)` still rebuilds the model from the file alone:

    {"tta": "flip", "temperature": 0.71, "uncertain_above": -2.4, "uncertain_quantile": 0.05,
     "fitted_on": "val", "val_images": 5000, "precision": "bf16-mixed"}

`uncertain_above` is an energy score (Liu et al. 2020), -logsumexp of the calibrated logits: an image whose energy
is above it is flagged. It is the (1 - `uncertain_quantile`) quantile over the validation images, so by
construction about that share of images like the training data is flagged. Energy, not the top probability
(Hendrycks & Gimpel 2017): the models give noise confident top classes (the CNN a median 0.74 to noise photos), but
lower logits overall; docs/predict.md has the measurements.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from fmnist.dataset import to_unit_float
from fmnist.models.classifier import Classifier
from fmnist.models.tta import tta_logits
from fmnist.utils.io import atomic_path, read_classifier_checkpoint

log = logging.getLogger("fmnist")

UNCERTAIN_QUANTILE = 0.05  # the share of validation images flagged uncertain (docs/predict.md: the trade-off)
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e2  # a degenerate fit (one class, perfect separation) stays finite


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) on (N, C) validation logits (or log-probabilities:
    softmax is shift-invariant, so both give the same T) and (N,) labels; L-BFGS on log T."""
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    logits = logits.detach().double().clone()  # a normal tensor also when it came from inference mode
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        nll = F.cross_entropy(logits / log_t.exp(), labels)
        nll.backward()
        return nll

    with torch.enable_grad():
        optimizer.step(closure)
    return float(log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE))


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(N,) energy score of (N, C) logits after temperature: -logsumexp(logits / T). Higher = less like the
    training data."""
    return -torch.logsumexp(logits.double() / temperature, dim=-1)


def uncertainty_threshold(logits: torch.Tensor, temperature: float, quantile: float = UNCERTAIN_QUANTILE) -> float:
    """The (1 - `quantile`) quantile of the energy of validation logits: an image with a higher energy is flagged
    uncertain, about `quantile` of images like the validation ones."""
    return float(torch.quantile(energy(logits, temperature), 1 - quantile))


def batches(images: torch.Tensor, labels: torch.Tensor, size: int = 1024) -> Iterator[tuple[torch.Tensor, ...]]:
    """(images, labels) in batches of `size`, in order: the whole split in every process (no sampler)."""
    for start in range(0, len(labels), size):
        yield images[start : start + size], labels[start : start + size]


@torch.no_grad()
def logits_and_labels(
    model: torch.nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    tta: str,
    device: torch.device | str = "cpu",
    context: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's (N, C) float32 logits (averaged over the `tta` views) and the (N,) labels of (images, labels)
    batches; `context` is a context-manager factory for the forward passes (e.g. the trainer's autocast)."""
    logits, labels = [], []
    for images, targets in batches:
        with context() if context else contextlib.nullcontext():
            out = tta_logits(model, to_unit_float(images.to(device)), tta)
        logits.append(out.float().cpu())
        labels.append(targets.cpu())
    return torch.cat(logits), torch.cat(labels)


def fit_scoring(
    logits: torch.Tensor, labels: torch.Tensor, tta: str, quantile: float = UNCERTAIN_QUANTILE, **extra: Any
) -> dict[str, Any]:
    """The `scoring` record from validation logits (computed with `tta`) and labels."""
    temperature = fit_temperature(logits, labels)
    return {
        "tta": tta,
        "temperature": round(temperature, 6),
        "uncertain_above": round(uncertainty_threshold(logits, temperature, quantile), 6),
        "uncertain_quantile": quantile,
        "fitted_on": "val",
        "val_images": len(labels),
        **extra,
    }


def calibrate_checkpoint(path: str | Path, tta: str, val_set: Any, trainer: pl.Trainer) -> dict[str, Any]:
    """`fit_scoring` on a training run's best checkpoint: its validation logits under the test's `tta`, on the
    trainer's device and precision (`val_set`: .images and .labels). The record is written into the checkpoint's
    hyperparameters (`scoring`), so eval, export, ensembles and predict score the model as the run did. Every
    process of a multi-process run computes the same record on the whole validation split; the first one writes it."""
    checkpoint = read_classifier_checkpoint(path)
    device = trainer.strategy.root_device
    model = Classifier.load_from_checkpoint(path, map_location=device, weights_only=True).eval()
    context = trainer.precision_plugin.test_step_context
    logits, labels = logits_and_labels(model, batches(val_set.images, val_set.labels), tta, device, context)
    scoring = fit_scoring(logits, labels, tta, precision=str(trainer.precision))
    if trainer.is_global_zero:
        checkpoint["hyper_parameters"]["scoring"] = scoring
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
    trainer.strategy.barrier()
    log.info(
        f"calibrated on {len(labels)} validation images (tta={tta}): temperature {scoring['temperature']:.3f}, "
        f"uncertain above energy {scoring['uncertain_above']:.3f}"
    )
    return scoring
