"""Which parameters take weight decay: one rule for the Classifier, the timm fine-tuning groups and the plain-loop
benchmark."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def takes_weight_decay(p: torch.Tensor) -> bool:
    """Weights of convolutions and linears decay; norms' scales and biases (1-d) do not (the usual rule: timm,
    airbench, Page's ResNet-9)."""
    return p.ndim > 1


def weight_decay_groups(parameters: Iterable[torch.Tensor]) -> list[dict]:
    """Two optimizer groups: the parameters that take weight decay, and the rest with weight_decay 0."""
    parameters = list(parameters)
    return [
        {"params": [p for p in parameters if takes_weight_decay(p)]},
        {"params": [p for p in parameters if not takes_weight_decay(p)], "weight_decay": 0.0},
    ]
