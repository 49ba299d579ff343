"""Training-time augmentation of whole batches on their device, with independent random parameters per sample.

`BatchAugment` is what the `aug` config group builds: it runs on (B, 1, H, W) float images in [0, 1] with integer
labels, after the batch reached the device (FashionMNISTDataModule.on_after_batch_transfer, training only), in this
order: translate + flip (our own tensor ops: a gather of per-sample crops, measured faster than kornia's warp-based
crop, docs/RESULTS.md), small affine and random erasing (kornia.augmentation), then batch mixing (torchvision's
MixUp / CutMix), which turns labels into soft targets (B, num_classes) that sum to one. Randomness comes from torch's
global generator, so seeded runs are reproducible. With aug=gan (fmnist.gan_augment), synthetic images first replace
a share of the batch, so every transform applies to them too.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.transforms import v2

from fmnist.errors import UserError


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


class BatchAugment(nn.Module):
    def __init__(
        self,
        translate: int = 0,
        flip: float = 0.0,
        affine: dict | None = None,
        erasing: dict | None = None,
        mix: dict | None = None,
        num_classes: int = 10,
        synthetic: nn.Module | None = None,
    ) -> None:
        super().__init__()
        # aug=gan (fmnist.gan_augment): a transform that replaces a share of the batch with synthetic images first
        self.synthetic = synthetic
        if translate < 0 or not 0 <= flip <= 1:
            raise UserError(f"aug.translate={translate} must be >= 0 and aug.flip={flip} a probability in [0, 1].")
        self.translate, self.flip, self.num_classes = int(translate), float(flip), num_classes
        self.affine = K.RandomAffine(**affine) if affine else None
        self.erasing = K.RandomErasing(**erasing) if erasing else None
        self.mix = self._make_mix(dict(mix)) if mix else None

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
        if self.affine is not None:
            images = self.affine(images)
        if self.erasing is not None:
            images = self.erasing(images)
        if self.mix is not None and torch.rand(()) < self.mix_p:
            images, labels = self.mix(images, labels)
        return images.clamp_(0, 1), labels

    def extra_repr(self) -> str:
        return f"translate={self.translate}, flip={self.flip}"
