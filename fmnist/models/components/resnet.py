"""A small residual CNN for 28x28 inputs, after David Page's ResNet-9 (DAWNBench CIFAR-10) and airbench.

Layout: a conv-BN-ReLU stem at the full 28 px, then one stage per entry of `widths`, each
conv-BN-ReLU -> 2x2 max-pool -> `depth` residual blocks of two conv-BN-ReLU, then a global pool and a linear head
whose logits are multiplied by `scale`. With widths [w1, w2, w3] the maps go 28 -> 14 -> 7 -> 3 px (-> 4 px with
`ceil_pool`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    # no conv bias: BatchNorm's shift makes it redundant
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class Residual(nn.Module):
    """x + f(x) with f = two conv-BN-ReLU at constant width: the identity path keeps gradients flowing, so the
    extra convolutions add capacity without making the short schedule harder to optimise."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(width, width), conv_bn(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet(nn.Module):
    """Page's ResNet-9 shape, sized for Fashion-MNIST on a CPU.

    widths: output width of each stage; each stage halves the resolution (conv, then max-pool, as in ResNet-9:
        the conv sees the full-resolution map, the pool keeps its strongest responses).
    depth: residual blocks per stage, one int for all stages or one per stage (ResNet-9 is [1, 0, 1]).
    stem: width of the 28-px stem conv; None = widths[0]. No patchify stem: at 28 px there are few pixels to spare.
    pool: "max" (Page's choice: the strongest response anywhere) or "avg" for the global pooling before the head.
    scale: multiplies the logits; Page's 0.125 keeps the early softmax soft, which behaves like a lower learning rate
        on the head and stabilises the high-lr SGD schedule. 1.0 = a plain linear head.
    ceil_pool: round each 2x2 max-pool's output size up (7 -> 4 px instead of 3). Rounding down, as torch does by
        default, drops the last row and column of an odd-sized map: at 28 px input that is the bottom and right
        4 pixels of the image in the last stage (hems, trouser legs), which only the stage's 3x3 conv then carries.
    whiten: initialise the stem conv from the training data (airbench): "frozen" or "trainable", null = random.
        The stem's filters become the top principal directions of the 3x3 input patches, scaled to unit variance,
        each with its negation, so the ReLU after it keeps both signs. See `init_whitening`.
    num_classes, in_chans, image_size: the same keywords as SimpleCNN, filled in by conf/model/*.yaml.
    """

    def __init__(
        self,
        widths: Sequence[int] = (64, 128, 256),
        depth: int | Sequence[int] = 1,
        stem: int | None = None,
        pool: str = "max",
        scale: float = 0.125,
        whiten: str | None = None,
        ceil_pool: bool = False,
        num_classes: int = 10,
        in_chans: int = 1,
        image_size: int = 28,
    ) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        depths = [int(depth)] * len(widths) if isinstance(depth, int) else [int(d) for d in depth]
        if not widths or len(depths) != len(widths):
            raise ValueError(f"ResNet needs one depth per stage: widths={widths}, depth={depth}")
        if min(widths) < 1 or min(depths) < 0:
            raise ValueError(f"widths must be at least 1 and depth at least 0: widths={widths}, depth={depth}")
        if image_size < 2 ** len(widths):
            # every stage halves the map; below one pixel there is nothing left to pool
            raise ValueError(f"image_size={image_size} is too small for {len(widths)} stages")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', not {pool!r}")

        if whiten not in (None, "frozen", "trainable"):
            raise ValueError(f"whiten must be 'frozen', 'trainable' or null, not {whiten!r}")
        c_in = stem or widths[0]
        if whiten and (c_in % 2 or c_in // 2 > in_chans * 9):
            # pairs of +-filters, at most one pair per dimension of a 3x3 patch
            raise ValueError(f"whiten needs an even stem width of at most {2 * in_chans * 9}, not {c_in}")
        self.whiten = whiten
        layers: list[nn.Module] = [conv_bn(in_chans, c_in)]
        for width, n_blocks in zip(widths, depths, strict=True):
            layers += [conv_bn(c_in, width), nn.MaxPool2d(2, ceil_mode=ceil_pool)]
            layers += [Residual(width) for _ in range(n_blocks)]
            c_in = width
        self.features = nn.Sequential(*layers)
        # global pooling makes the head independent of the final map size (3 px at 28, 4 px at 32)
        self.pool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        # no bias, as in ResNet-9: the scaled logits need no offset
        self.head = nn.Linear(c_in, num_classes, bias=False)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.features(x)).flatten(1)
        return self.head(features) * self.scale

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem conv to the whitening filters of `images` ((N, C, H, W), normalised as the model sees
        them): the eigenvectors of the 3x3-patch covariance with the largest eigenvalues, divided by the square
        root of their eigenvalue, and their negations. The first layer then starts out decorrelating its input,
        which airbench found to shorten training; `frozen` keeps it fixed (fewer parameters to fit)."""
        conv: nn.Conv2d = self.features[0][0]
        c_in = conv.in_channels
        patches = F.unfold(images.float(), kernel_size=3).transpose(1, 2).reshape(-1, c_in * 9)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        k = conv.out_channels // 2
        top = eigenvectors[:, -k:].T / (eigenvalues[-k:, None] + eps).sqrt()
        filters = torch.cat([top, -top]).view_as(conv.weight)
        conv.weight.copy_(filters.to(conv.weight.dtype))
        conv.weight.requires_grad_(self.whiten != "frozen")
