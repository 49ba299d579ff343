"""Combining classifiers: soft and hard voting, validation-accuracy weights, greedy forward selection (Caruana et
al. 2004), temperature scaling, and the metrics of a prediction.

Everything works on log-probabilities: a (M, N, C) stack for M members, N images and C classes, or (N, C) for one
prediction. The fitting functions (`accuracy_weights`, `greedy_selection`, `fit_temperature`, `fit_combination`)
take validation predictions and labels, and nothing else; `fmnist.ensemble.run` computes the test predictions only
after every fit is done, and scores them once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_calibration_error,
    multiclass_confusion_matrix,
)

from fmnist.models.calibration import fit_temperature  # the same fit as every training run's
from fmnist.utils.errors import UserError

METHODS = {  # config value -> what the table calls it
    "soft": "soft voting",
    "hard": "hard voting",
    "val_acc": "val-accuracy weights",
    "greedy": "greedy selection",
}
ECE_BINS = 15  # as the Classifier's test/ece, so member figures match their runs' metrics.json


def check_methods(methods: list[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise UserError(f"methods={methods}: choose one or more of {', '.join(METHODS)}, e.g. methods=[soft,greedy].")
    return list(dict.fromkeys(methods))  # without repeats, in the given order


def _normalised_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    if weights.shape != (n,) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers with a positive sum, got {weights.tolist()}")
    return weights / weights.sum()


def soft_vote(member_log_probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """log of the (weighted) mean of the members' probabilities: (M, N, C) -> (N, C)."""
    w = _normalised_weights(weights, len(member_log_probs)).to(member_log_probs)
    return torch.logsumexp(member_log_probs + w.log().view(-1, 1, 1), dim=0)


def hard_vote(member_log_probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """log of the (weighted) share of votes per class: (M, N, C) -> (N, C). Each member votes for its top class.
    Ties go to the class with the higher mean probability (mixed in with a 1e-6 share, far below one vote)."""
    m, _, c = member_log_probs.shape
    w = _normalised_weights(weights, m).to(member_log_probs)
    votes = F.one_hot(member_log_probs.argmax(-1), c).to(member_log_probs)  # (M, N, C)
    shares = (votes * w.view(-1, 1, 1)).sum(0)
    shares = (shares + 1e-6 * soft_vote(member_log_probs).exp()) / (1 + 1e-6)
    return shares.log()


def accuracy_weights(val_log_probs: torch.Tensor, val_labels: torch.Tensor) -> torch.Tensor:
    """Each member's weight proportional to its validation accuracy: (M, N, C), (N,) -> (M,), summing to 1."""
    accs = (val_log_probs.argmax(-1) == val_labels).double().mean(1)
    if accs.sum() == 0:
        return torch.full((len(accs),), 1.0 / len(accs), dtype=torch.float64)
    return accs / accs.sum()


def greedy_selection(
    val_log_probs: torch.Tensor, val_labels: torch.Tensor, rounds: int = 50, metric: str = "nll"
) -> torch.Tensor:
    """Forward selection with replacement (Caruana et al. 2004): start empty, add in each round the member whose
    addition gives the best soft-voted validation `metric` ("nll", or "acc" with NLL breaking ties), and keep the
    round with the best score. Returns how often each member was picked, (M,) ints; weights are counts / total."""
    if metric not in ("nll", "acc"):
        raise UserError(f"greedy.metric={metric!r}: choose nll or acc.")
    if rounds < 1:
        raise UserError(f"greedy.rounds={rounds} must be at least 1.")
    m = len(val_log_probs)
    probs = val_log_probs.double().exp()
    total = torch.zeros_like(probs[0])  # sum of the chosen members' probabilities
    counts = torch.zeros(m, dtype=torch.long)
    best_counts, best_loss = counts.clone(), (math.inf, math.inf)

    def loss(mean_probs: torch.Tensor) -> tuple[float, float]:
        nll = F.nll_loss(mean_probs.clamp_min(1e-300).log(), val_labels).item()
        if metric == "nll":
            return (nll, nll)
        return (-(mean_probs.argmax(-1) == val_labels).double().mean().item(), nll)

    for k in range(1, rounds + 1):
        candidates = [loss((total + probs[i]) / k) for i in range(m)]
        pick = min(range(m), key=candidates.__getitem__)  # ties: the lower index
        total += probs[pick]
        counts[pick] += 1
        if candidates[pick] < best_loss:
            best_loss, best_counts = candidates[pick], counts.clone()
    return best_counts


def apply_temperature(log_probs: torch.Tensor, temperature: float | torch.Tensor) -> torch.Tensor:
    """softmax(log p / T): T > 1 softens over-confident predictions; the top class never changes. A tensor T
    broadcasts (e.g. (M, 1, 1): one temperature per member)."""
    if isinstance(temperature, torch.Tensor):
        temperature = temperature.to(log_probs)
    return F.log_softmax(log_probs / temperature, dim=-1)


@dataclass
class Combination:
    """A fitted combination rule: which voting, each member's weight, and the ensemble's temperature (if any)."""

    method: str
    weights: torch.Tensor  # (M,), summing to 1
    temperature: float | None = None
    member_temperatures: torch.Tensor | None = None  # (M,): each member calibrated before the vote, or None

    @property
    def probabilistic(self) -> bool:
        """Whether the output is a probability model (hard voting gives vote shares, whose NLL means nothing)."""
        return self.method != "hard"

    def combine(self, member_log_probs: torch.Tensor) -> torch.Tensor:
        """The ensemble's log-probabilities before temperature scaling."""
        if self.member_temperatures is not None:
            member_log_probs = apply_temperature(member_log_probs, self.member_temperatures.view(-1, 1, 1))
        vote = hard_vote if self.method == "hard" else soft_vote
        return vote(member_log_probs, self.weights)

    def __call__(self, member_log_probs: torch.Tensor) -> torch.Tensor:
        combined = self.combine(member_log_probs)
        return combined if self.temperature is None else apply_temperature(combined, self.temperature)


def fit_combination(
    method: str,
    val_log_probs: torch.Tensor,
    val_labels: torch.Tensor,
    temperature_scaling: bool = False,
    greedy_rounds: int = 50,
    greedy_metric: str = "nll",
    member_temperatures: torch.Tensor | None = None,
) -> Combination:
    """Fit `method` (a key of METHODS) on validation predictions (M, N, C) and labels (N,) alone.

    member_temperatures: (M,) temperatures (fitted on the same validation predictions) that calibrate each member
    before the vote and before the weights are fitted. Members trained differently (with and without label
    smoothing, say) differ in confidence far more than in accuracy; uncalibrated, the most confident member
    dominates the soft vote and an NLL-driven greedy selection, whatever its accuracy."""
    check_methods([method])
    m = len(val_log_probs)
    calibrated = val_log_probs  # what the weights are fitted on
    if member_temperatures is not None:
        member_temperatures = torch.as_tensor(member_temperatures, dtype=torch.float64)
        calibrated = apply_temperature(val_log_probs, member_temperatures.view(-1, 1, 1))
    weights = torch.full((m,), 1.0 / m, dtype=torch.float64)  # soft and hard voting
    if method == "val_acc":
        weights = accuracy_weights(calibrated, val_labels)
    elif method == "greedy":
        counts = greedy_selection(calibrated, val_labels, greedy_rounds, greedy_metric)
        weights = counts.double() / counts.sum()
    combination = Combination(method, weights, member_temperatures=member_temperatures)
    if temperature_scaling and combination.probabilistic:
        combination.temperature = fit_temperature(combination.combine(val_log_probs), val_labels)
    return combination


def scores(log_probs: torch.Tensor, labels: torch.Tensor, probabilistic: bool = True) -> dict:
    """Accuracy, NLL (None when `probabilistic` is false), ECE (15 bins, L1) and per-class accuracy of (N, C)
    log-probabilities against (N,) labels, with torchmetrics."""
    c = log_probs.shape[-1]
    # clamped: rounding can put a probability a hair above 1 (11 votes of 1/11 sum to 1.0000001 in float32), and
    # torchmetrics then takes the whole batch for logits and softmaxes it (a unanimous vote scored 0.23 confidence)
    probs = log_probs.float().exp().clamp_(0.0, 1.0)
    return {
        "acc": multiclass_accuracy(probs, labels, c, average="micro").item(),
        "nll": F.cross_entropy(log_probs.double(), labels).item() if probabilistic else None,
        "ece": multiclass_calibration_error(probs, labels, c, n_bins=ECE_BINS, norm="l1").item(),
        "class_acc": multiclass_accuracy(probs, labels, c, average=None).tolist(),
    }


def confusion(log_probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(C, C) counts, rows = true class."""
    return multiclass_confusion_matrix(log_probs.argmax(-1), labels, log_probs.shape[-1])


def disagreement(member_log_probs: torch.Tensor) -> torch.Tensor:
    """(M, M): the share of images on which members i and j predict different classes."""
    predictions = member_log_probs.argmax(-1)  # (M, N)
    return (predictions[:, None, :] != predictions[None, :, :]).double().mean(-1)
