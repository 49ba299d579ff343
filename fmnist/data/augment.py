"""Training-time augmentation of whole batches on their device, with independent random parameters per sample.

`BatchAugment` is what the `aug` config group builds: it runs on (B, 1, H, W) float images in [0, 1] with integer
labels, after the batch reached the device (FashionMNISTDataModule.on_after_batch_transfer, training only), in this
order: translate + flip (a gather of per-sample crops), a small random affine and random erasing, the corruption
suite of fmnist.data.corruptions (aug=robust: one random corruption per chosen image), then batch mixing
(torchvision's MixUp / CutMix), which turns labels into soft targets (B, num_classes) that sum to one. Randomness
comes from torch's global generator, so seeded runs are reproducible. With aug=gan (fmnist.gan.source), synthetic
images first replace a share of the batch, so every transform applies to them too.

Translate, flip, affine and erasing are a few tensor ops of our own with the semantics of torchvision's / kornia's
RandomAffine and RandomErasing: on batches of 128 images of 28x28 they measured 2-5x faster than
kornia.augmentation, whose per-call parameter machinery costs more than the warp itself at this size, and that keeps
`aug=strong` within 5 % of the step time (docs/augmentation.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.transforms import v2

from fmnist.data.corruptions import check_names, random_corruptions
from fmnist.utils.config_check import check_arguments
from fmnist.utils.errors import UserError


def random_translate(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Shift each image by its own (dx, dy) in [-max_shift, max_shift], filling with zeros (pad + per-sample crop)."""
    if max_shift <= 0:
        return images
    b, c, h, w = images.shape
    padded = nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b, 1), device=images.device)
    rows = offsets[0] + torch.arange(h, device=images.device)  # (B, H): source rows of each sample
    cols = offsets[1] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(images: torch.Tensor, p: float) -> torch.Tensor:
    """Mirror each image left-right with probability p."""
    if p <= 0:
        return images
    mask = torch.rand(images.shape[0], 1, 1, 1, device=images.device) < p
    return torch.where(mask, images.flip(-1), images)


def random_affine(
    images: torch.Tensor, degrees: float = 0.0, scale: tuple[float, float] = (1.0, 1.0), shear: float = 0.0,
    translate: tuple[float, float] = (0.0, 0.0), p: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """Rotate by U(-degrees, degrees), zoom by U(*scale), shear along x by U(-shear, shear) degrees and shift by up to
    translate (fractions of width, height) about the centre, each image with probability p; bilinear, zero fill."""
    chosen = (torch.rand(images.shape[0], device=images.device) < p).nonzero().squeeze(1)
    if chosen.numel() == 0:
        return images
    n, dev = chosen.numel(), images.device
    angle = torch.empty(n, device=dev).uniform_(-degrees, degrees).deg2rad()
    zoom = torch.empty(n, device=dev).uniform_(*scale)
    tan = torch.empty(n, device=dev).uniform_(-shear, shear).deg2rad().tan()
    cos, sin = angle.cos(), angle.sin()
    # affine_grid maps output to input coordinates: the inverse of rotate . shear . zoom, i.e. zoom^-1 shear^-1 rot^-1
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 1] = (cos + tan * sin) / zoom, (sin - tan * cos) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = -sin / zoom, cos / zoom
    shift = torch.tensor(translate, device=dev, dtype=torch.float) * 2  # normalised coordinates span 2
    theta[:, :, 2] = -(torch.rand(n, 2, device=dev) * 2 - 1) * shift
    grid = nn.functional.affine_grid(theta, [n, *images.shape[1:]], align_corners=False)
    out = images.clone()
    out[chosen] = nn.functional.grid_sample(images[chosen], grid, align_corners=False)  # zeros outside
    return out


def random_erasing(
    images: torch.Tensor, scale: tuple[float, float] = (0.02, 0.33), ratio: tuple[float, float] = (0.3, 3.3),
    value: float = 0.0, p: float = 0.5,
) -> torch.Tensor:  # fmt: skip
    """Fill one box per image with `value`, with probability p: area U(*scale) of the image, aspect ratio (h/w)
    log-uniform in ratio, position uniform (the box stays inside the image)."""
    b, _, h, w = images.shape
    dev = images.device
    area = torch.empty(b, device=dev).uniform_(*scale) * h * w
    aspect = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    box_h = (area * aspect).sqrt().round().clamp(1, h)
    box_w = (area / aspect).sqrt().round().clamp(1, w)
    top = (torch.rand(b, device=dev) * (h - box_h + 1)).floor()
    left = (torch.rand(b, device=dev) * (w - box_w + 1)).floor()
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (B, W)
    chosen = torch.rand(b, 1, 1, device=dev) < p
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & chosen)[:, None]  # (B, 1, H, W)
    return images.masked_fill(mask, value)


class BatchAugment(nn.Module):
    def __init__(
        self,
        translate: int = 0,
        flip: float = 0.0,
        affine: dict | None = None,
        erasing: dict | None = None,
        mix: dict | None = None,
        corrupt: dict | None = None,
        num_classes: int = 10,
        synthetic: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # aug=gan (fmnist.gan.source): a transform that replaces a share of the batch with synthetic images first
        self.synthetic = synthetic
        if translate < 0:
            raise UserError(f"aug.translate={translate}: a shift in pixels must be >= 0 (0 turns it off).")
        if not 0 <= flip <= 1:
            raise UserError(f"aug.flip={flip}: a probability must be in [0, 1] (0 turns mirroring off).")
        self.translate, self.flip, self.num_classes = int(translate), float(flip), num_classes
        # keys and value types against the functions they are passed to, before training: one message, exit code 2
        checks = (("affine", affine, random_affine), ("erasing", erasing, random_erasing),
                  ("corrupt", corrupt, random_corruptions))  # fmt: skip
        for name, given, function in checks:
            if given:
                check_arguments(f"aug.{name}", function, given)
        for name, given in (("affine", affine), ("erasing", erasing), ("mix", mix), ("corrupt", corrupt)):
            p = (given or {}).get("p")
            if p is not None and not (isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1):
                raise UserError(f"aug.{name}.p={p}: a probability must be in [0, 1] (the share of images or batches).")
        self.affine, self.erasing = dict(affine or {}), dict(erasing or {})
        self.mix = self._make_mix(dict(mix)) if mix else None
        if corrupt:
            check_names(corrupt.get("names", "all"))  # a wrong name fails before training, not at the first batch
        self.corrupt = dict(corrupt or {})

    def _make_mix(self, mix: dict) -> nn.Module:
        kind, p = mix.pop("kind", "mixup"), float(mix.pop("p", 1.0))
        makers = {"mixup": v2.MixUp, "cutmix": v2.CutMix}
        if kind not in makers:
            raise UserError(f"aug.mix.kind={kind!r}: choose mixup or cutmix.")
        self.mix_p = p  # the share of batches that are mixed; the others keep hard labels
        return makers[kind](num_classes=self.num_classes, **mix)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.synthetic is not None:  # first, so the transforms below apply to synthetic images too
            images, labels = self.synthetic(images, labels)
        images = random_flip(random_translate(images, self.translate), self.flip)
        if self.affine:
            images = random_affine(images, **self.affine)
        if self.erasing:
            images = random_erasing(images, **self.erasing)
        if self.corrupt:
            images = random_corruptions(images, **self.corrupt)
        if self.mix is not None and torch.rand(()) < self.mix_p:
            images, labels = self.mix(images, labels)
        return images.clamp_(0, 1), labels

    def extra_repr(self) -> str:
        return f"translate={self.translate}, flip={self.flip}"
