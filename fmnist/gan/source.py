"""`aug=gan`: training batches in which a share of the images (and their labels) are synthetic, from a GAN.

`gan_augment` is the `_target_` of conf/aug/gan.yaml. It resolves `aug.source` to a synthetic set held in memory as
uint8 (like the real data), then builds the usual BatchAugment with it, so the other augmentations of the group
(translate, flip, affine, erasing, mixing) apply to real and synthetic images alike:
  - null: the shipped generator (`aug.shipped`, models/fmnist_gan.safetensors, card models/fmnist_gan.md) generates
    `aug.n_per_class` images per class (seeded by `aug.gan_seed`) in seconds. It learnt from the default training
    split (55,000 images, data.val_size=5000, data.split_seed=0), so a run on another split is refused: its
    validation images, or images a low-data run must not see, were the GAN's training data;
  - a synthetic set (.safetensors, from scripts/generate.py or a `python gan.py` run) is loaded;
  - a generator (a `python gan.py` run's generator.safetensors or checkpoints/last.ckpt) generates
    `aug.n_per_class` images per class (seeded by `aug.gan_seed`); any other checkpoint is refused (CheckpointError).
Training a GAN is an explicit step (`python gan.py`, then `aug.source=<run>/generator.safetensors`), never a side
effect of `aug=gan`. Generating leaves the global random state alone. The log says which set was used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities.seed import isolate_rng

from fmnist.data.augment import BatchAugment
from fmnist.data.synthetic import SyntheticMix, generate_set, load_synthetic
from fmnist.gan.metrics import split_settings
from fmnist.models.generator_file import is_generator_file, load_any_generator, load_generator_file
from fmnist.utils.errors import UserError

log = logging.getLogger("fmnist")


def check_split(trained_on: dict[str, Any], data: dict[str, Any] | None, path: Path) -> None:
    """Refuse the shipped generator for a run whose training split is not the one the generator learnt from."""
    asked = split_settings(data or {})
    differ = sorted(k for k in asked if asked.get(k) != trained_on.get(k))
    if differ:
        raise UserError(
            f"aug=gan: the shipped generator ({path}) learnt from the training split of "
            f"{', '.join(f'data.{k}={trained_on.get(k)}' for k in differ)}, and this run has "
            f"{', '.join(f'data.{k}={asked.get(k)}' for k in differ)}: on another split the GAN has seen this run's "
            "validation images (or images a low-data run must not see). Train a GAN on this run's split and use it: "
            f"python gan.py {' '.join(f'data.{k}={asked.get(k)}' for k in differ if k != 'checksums')}  then  "
            "aug.source=outputs/gan/runs/<run>/generator.safetensors"
        )


def synthetic_source(
    source: str | None, shipped: str, n_per_class: int, gan_seed: int, data: dict | None
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(uint8 images, labels, description) of the configured synthetic source."""
    if source is None:
        if not Path(shipped).is_file():
            raise UserError(
                f"aug=gan: the shipped generator {shipped} is missing. Train one (python gan.py) and pass it with "
                "aug.source=outputs/gan/runs/<run>/generator.safetensors, or copy that file to the path above."
            )
        gan = load_generator_file(shipped)
        check_split(gan.split, data, Path(shipped))
        images, labels = generate_set(gan, n_per_class, seed=gan_seed)
        cas = gan.quality.get("quality/cas")
        about = f"seed {gan_seed}" + (f", CAS {cas:.1%}" if cas is not None else "")
        return images, labels, f"{n_per_class} images per class from the shipped generator {shipped} ({about})"
    path = Path(source)
    if not path.exists():
        raise UserError(
            f"aug.source={source} does not exist. Give a synthetic set (.safetensors from scripts/generate.py or a "
            "`python gan.py` run), a generator (<gan run>/generator.safetensors or <gan run>/checkpoints/last.ckpt), "
            "or null for the shipped generator."
        )
    if path.suffix == ".safetensors" and not is_generator_file(path):
        images, labels, _ = load_synthetic(path)
        return images, labels, f"synthetic set {path}"
    gan = load_any_generator(path)  # CheckpointError for a classifier or any other checkpoint
    images, labels = generate_set(gan, n_per_class, seed=gan_seed)
    return images, labels, f"{n_per_class} images per class generated from {path} (seed {gan_seed})"


def gan_augment(
    source: str | None = None,
    shipped: str = "models/fmnist_gan.safetensors",
    share: float = 0.25,
    n_per_class: int = 6000,
    gan_seed: int = 0,
    data: dict | None = None,
    **augment: Any,
) -> BatchAugment:
    """BatchAugment(**augment) whose first step replaces `share` of each training batch with synthetic images."""
    if not 0 < share <= 1:
        raise UserError(f"aug.share={share} must be in (0, 1]: the share of each training batch that is synthetic.")
    with isolate_rng():  # building a generator draws its initial weights: the run's random numbers stay its own
        images, labels, description = synthetic_source(source, shipped, n_per_class, gan_seed, data)
    log.info(f"aug=gan: {description}: {len(labels)} images; {share:.0%} of every training batch is synthetic")
    return BatchAugment(**augment, synthetic=SyntheticMix(images, labels, share))
