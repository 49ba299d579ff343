"""Test-time augmentation: a model's logits averaged over label-preserving views of each batch.

Modes: `none`, `flip` (the image and its mirror), `flip+shift` (also ±1 px shifts of the image; the background of
Fashion-MNIST is 0, so shifted-in pixels are zero-padded). A run's final test uses it, and so do eval, ensembles,
predict and export, with the mode the model was scored with unless told otherwise (`tta=...`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from fmnist.utils.errors import UserError

TTA_MODES = ("none", "flip", "flip+shift")
SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def shift(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate (B, C, H, W) images by (dx, dy) pixels, filling with zeros."""
    h, w = images.shape[-2:]
    pad = max(abs(dx), abs(dy))
    padded = F.pad(images, (pad, pad, pad, pad))
    return padded[..., pad - dy : pad - dy + h, pad - dx : pad - dx + w]


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise UserError(f"tta={mode!r}: choose one of {', '.join(TTA_MODES)}.")
    return mode


def tta_views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    check_tta(mode)
    views = [images]
    if mode in ("flip", "flip+shift"):
        views.append(images.flip(-1))
    if mode == "flip+shift":
        views += [shift(images, dx, dy) for dx, dy in SHIFTS]
    return views


def tta_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, mode: str) -> torch.Tensor:
    """Mean of the model's logits over the views of `images` ((B, 1, H, W) floats in [0, 1])."""
    views = tta_views(images, mode)
    if len(views) == 1:
        return model(images)
    return torch.stack([model(view).float() for view in views]).mean(0)
