"""A corruption suite for (B, 1, H, W) float images in [0, 1], after MNIST-C (Mu & Gilmer 2019) and
Fashion-MNIST-C (Weiss & Tonella 2022): noise, blur, photometric and geometric changes that leave the garment's
class unchanged.

Each corruption is a batched function `apply(images, strength, generator)`: `strength` holds one value per image of
the corruption's own parameter (a noise sigma, a rotation angle, ...); `generator` draws the random parts (the noise,
the sign of an angle), so the same generator state gives the same images. The benchmark uses one fixed SEVERITY per
corruption (`corrupt`), fixed before any robust training was measured and listed in docs/robustness.md; training
augmentation (fmnist.data.augment) draws strengths between no change and a multiple of it. The ops come from kornia
(photometric, blur, geometry) and torch; the three noises and the glass blur's local pixel shuffle are a line or two
of tensor code each, because kornia's versions draw from the global generator only (no seeded, per-call generator).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from kornia import enhance, filters
from kornia.geometry import transform

from fmnist.utils.errors import UserError

SUITE_VERSION = 1  # bump when a corruption's definition or severity changes: cached sets are then regenerated
Generator = torch.Generator | None


def _signs(n: int, generator: Generator, device: torch.device) -> torch.Tensor:
    """+1 or -1 per image, so geometric corruptions go either way."""
    return torch.randint(0, 2, (n,), generator=generator, device=device).float() * 2 - 1


def gaussian_noise(images: torch.Tensor, sigma: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, device=images.device)
    return images + noise * sigma.view(-1, 1, 1, 1)


def shot_noise(images: torch.Tensor, scale: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Photon noise: Poisson counts with 1/scale photons at full white, rescaled (scale 0 = no noise)."""
    scale = scale.view(-1, 1, 1, 1).clamp_min(1e-6)
    return torch.poisson(images / scale, generator=generator) * scale


def impulse_noise(images: torch.Tensor, amount: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Salt and pepper: a share `amount` of the pixels set to black or white, half each."""
    hit = torch.rand(images.shape, generator=generator, device=images.device) < amount.view(-1, 1, 1, 1)
    salt = torch.rand(images.shape, generator=generator, device=images.device) < 0.5
    return torch.where(hit, salt.to(images.dtype), images)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    sigma = sigma.clamp_min(1e-3)[:, None].expand(-1, 2)  # kornia takes a (B, 2) sigma: one per image
    return filters.gaussian_blur2d(images, 9, sigma, border_type="constant")


def motion_blur(images: torch.Tensor, length: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """A straight streak of `length` pixels (odd; one kernel size per call) at a random angle per image."""
    size = int(length.max().round()) | 1
    if size < 3:
        return images
    angle = torch.rand(len(images), generator=generator, device=images.device) * 180
    return filters.motion_blur(images, size, angle, torch.zeros_like(angle), border_type="constant")


def glass_blur(images: torch.Tensor, sigma: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """ImageNet-C's glass blur: blur, move every pixel to a random neighbour within 1 px (as frosted glass does),
    blur again. The shuffle is a gather with random offsets (kornia has no glass blur)."""
    b, c, h, w = images.shape
    blurred = gaussian_blur(images, sigma)
    dy, dx = (torch.randint(-1, 2, (2, b, 1, h, w), generator=generator, device=images.device)).unbind(0)
    rows = (torch.arange(h, device=images.device).view(1, 1, h, 1) + dy).clamp(0, h - 1)
    cols = (torch.arange(w, device=images.device).view(1, 1, 1, w) + dx).clamp(0, w - 1)
    shuffled = blurred.flatten(2).gather(2, (rows * w + cols).expand(b, c, h, w).flatten(2)).view(b, c, h, w)
    return gaussian_blur(shuffled, sigma)


def brightness(images: torch.Tensor, shift: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Add `shift` to every pixel: a lighter (grey) background, as in ImageNet-C's brightness."""
    return enhance.adjust_brightness(images, shift, clip_output=False)


def contrast(images: torch.Tensor, factor: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Pull every pixel towards the image's mean grey: factor 1 = unchanged, 0 = flat grey."""
    return enhance.adjust_contrast_with_mean_subtraction(images, factor)


def gamma(images: torch.Tensor, exponent: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """x ** gamma: darker mid-tones for gamma > 1 (a badly exposed photo); grayscale has no saturation to change."""
    return enhance.adjust_gamma(images.clamp(0, 1), exponent)


def inversion(images: torch.Tensor, strength: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """A dark garment on a white background (blended with the original by `strength` in [0, 1])."""
    s = strength.view(-1, 1, 1, 1)
    return (1 - s) * images + s * enhance.invert(images.clamp(0, 1))


def rotate(images: torch.Tensor, degrees: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    angle = degrees * _signs(len(images), generator, images.device)
    return transform.rotate(images, angle, align_corners=False)


def shear(images: torch.Tensor, factor: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Horizontal shear: x += factor * y (factor 0.4 tilts verticals by about 22 degrees), either direction."""
    s = factor * _signs(len(images), generator, images.device)
    return transform.shear(images, torch.stack([s, torch.zeros_like(s)], 1))


def scale(images: torch.Tensor, factor: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Zoom about the centre: factor < 1 shrinks the garment (a photo from further away)."""
    return transform.scale(images, factor[:, None].expand(-1, 2), align_corners=False)


def translate(images: torch.Tensor, pixels: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Shift by `pixels` in x and in y, each in a random direction (the garment leaves the centre)."""
    n, dev = len(images), images.device
    shift = pixels[:, None] * torch.stack([_signs(n, generator, dev), _signs(n, generator, dev)], 1)
    return transform.translate(images, shift, align_corners=False)


def rot90(images: torch.Tensor, strength: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """A quarter turn, clockwise or anticlockwise per image (a photo taken sideways); strength is 0 or 1."""
    left = _signs(len(images), generator, images.device) > 0
    turned = torch.where(left.view(-1, 1, 1, 1), images.rot90(1, (-2, -1)), images.rot90(-1, (-2, -1)))
    return torch.where(strength.view(-1, 1, 1, 1) > 0.5, turned, images)


def vflip(images: torch.Tensor, strength: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """Upside down; strength is 0 or 1."""
    return torch.where(strength.view(-1, 1, 1, 1) > 0.5, transform.vflip(images), images)


@dataclass(frozen=True)
class Corruption:
    apply: Callable[[torch.Tensor, torch.Tensor, Generator], torch.Tensor]
    severity: float  # the benchmark's fixed strength, in the unit below
    identity: float  # the strength that leaves an image unchanged
    unit: str
    discrete: bool = False  # on/off (inversion, turns, flips): augmentation applies it at full strength


# The suite, one fixed severity each (MNIST-C / Fashion-MNIST-C style: clearly visible, the class still readable).
# Chosen before any robust training; changing one needs SUITE_VERSION + 1 and new figures.
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption(gaussian_noise, 0.2, 0.0, "noise sigma"),
    "shot_noise": Corruption(shot_noise, 1 / 15, 0.0, "1 / photons at white"),
    "impulse_noise": Corruption(impulse_noise, 0.1, 0.0, "share of pixels"),
    "gaussian_blur": Corruption(gaussian_blur, 1.5, 0.0, "sigma, px"),
    "motion_blur": Corruption(motion_blur, 7.0, 1.0, "streak length, px"),
    "glass_blur": Corruption(glass_blur, 0.7, 0.0, "sigma, px (+1 px shuffle)"),
    "brightness": Corruption(brightness, 0.4, 0.0, "added to every pixel"),
    "contrast": Corruption(contrast, 0.3, 1.0, "contrast factor"),
    "gamma": Corruption(gamma, 2.5, 1.0, "gamma exponent"),
    "inversion": Corruption(inversion, 1.0, 0.0, "on/off", discrete=True),
    "rotate": Corruption(rotate, 30.0, 0.0, "degrees, either way"),
    "shear": Corruption(shear, 0.4, 0.0, "shear factor, either way"),
    "scale": Corruption(scale, 0.6, 1.0, "zoom factor"),
    "translate": Corruption(translate, 5.0, 0.0, "px in x and y, either way"),
    "rot90": Corruption(rot90, 1.0, 0.0, "on/off", discrete=True),
    "vflip": Corruption(vflip, 1.0, 0.0, "on/off", discrete=True),
}


def check_names(names: str | Sequence[str]) -> list[str]:
    """'all' or a list of corruption names -> the names; UserError listing the choices otherwise."""
    chosen = list(CORRUPTIONS) if names == "all" else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in chosen if n not in CORRUPTIONS]
    if not chosen or unknown:
        what = f"Unknown corruption(s) {unknown}" if unknown else "No corruption named"
        raise UserError(f"{what}: choose `all` or a list of {', '.join(CORRUPTIONS)} (docs/robustness.md).")
    return chosen


def seed_of(name: str, seed: int) -> int:
    """Each corruption's own stream, stable across Python runs (crc32, not hash())."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**63


def corrupt(images: torch.Tensor, name: str, seed: int) -> torch.Tensor:
    """The benchmark copy of `images` (N, 1, H, W) in [0, 1] under corruption `name` at its fixed severity, from
    `seed`: the same seed gives the same images, in [0, 1] (float32). The chunk size is part of the definition
    (a noise draws per chunk), so it is fixed here and covered by SUITE_VERSION."""
    corruption = CORRUPTIONS[check_names([name])[0]]
    generator = torch.Generator(device=images.device).manual_seed(seed_of(name, seed))
    out = []
    for part in images.split(2000):
        strength = torch.full((len(part),), corruption.severity, device=images.device)
        out.append(corruption.apply(part.float(), strength, generator).clamp(0, 1))
    return torch.cat(out)


def random_corruptions(
    images: torch.Tensor, p: float = 0.5, strength: float = 1.0, names: str | Sequence[str] = "all", groups: int = 4
) -> torch.Tensor:
    """Training augmentation: each image, with probability p, gets one corruption at its own random strength,
    uniform between no change and `strength` x the benchmark severity (on/off corruptions at full strength). Each
    batch draws `groups` of the `names` and shares its corrupted images among them: every kernel runs once per batch
    on a sub-batch, so the cost stays a few ops per step while every corruption is seen every few batches.
    Randomness from torch's global generator, so seeded runs are reproducible."""
    chosen_names = check_names(names)
    n, dev = len(images), images.device
    drawn = torch.randperm(len(chosen_names))[: max(1, groups)].tolist()
    which = torch.randint(len(drawn), (n,), device=dev)
    which[torch.rand(n, device=dev) >= p] = -1  # these stay clean
    out = images.clone()
    for i, name_index in enumerate(drawn):
        index = (which == i).nonzero().squeeze(1)
        if index.numel() == 0:
            continue
        c = CORRUPTIONS[chosen_names[name_index]]
        if c.discrete:
            amount = torch.ones(index.numel(), device=dev)
        else:
            amount = c.identity + torch.rand(index.numel(), device=dev) * strength * (c.severity - c.identity)
        out[index] = c.apply(images[index], amount, None).clamp(0, 1)
    return out
