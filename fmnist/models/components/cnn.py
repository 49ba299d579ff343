"""The simple CNN: stacks of conv3x3-BN-ReLU with max-pooling, then a small MLP head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # no conv bias: BatchNorm's shift makes it redundant
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SimpleCNN(nn.Module):
    """`stages` is a list of stages, each a list of conv widths; every stage ends with a 2x2 max-pool, so the
    maps shrink 28 px -> 14 -> 7 over two stages.

    The default [[32], [64], [128]] is conv32-pool-conv64-pool-conv128-pool-fc128 (242k parameters): pooling right
    after the first 28-px convolution made it 3.5x faster on the CPU than conv32-conv64-pool-conv128-pool-fc128,
    for the same accuracy per epoch (docs/RESULTS.md).
    """

    def __init__(
        self,
        stages: Sequence[Sequence[int]] = ((32,), (64,), (128,)),
        hidden: int = 128,
        dropout: float = 0.2,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_chans, image_size
        for widths in stages:
            for width in widths:
                layers.append(conv_bn(c_in, width))
                c_in = width
            layers.append(nn.MaxPool2d(2))
            size //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in * size * size, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
