"""`aug=gan`: training batches in which a share of the images (and their labels) are synthetic, from a GAN.

`gan_augment` is the `_target_` of conf/aug/gan.yaml. It resolves `aug.source` to a synthetic set held in memory as
uint8 (like the real data), then builds the usual BatchAugment with it, so the other augmentations of the group
(translate, flip, affine, erasing, mixing) apply to real and synthetic images alike:
  - a synthetic set (.safetensors, from scripts/generate.py or a `python gan.py` run) is loaded;
  - a generator checkpoint (a `python gan.py` run's checkpoints/last.ckpt) generates `aug.n_per_class` images per
    class (seeded by `aug.gan_seed`); any other checkpoint is refused (CheckpointError);
  - null: the default GAN (`aug.default_gan`) is trained on this run's training split — never on validation or
    test images, and only on the `data.train_fraction` share a low-data run sees — with a progress bar, then its set
    is cached under <aug.cache_dir>/<hash of its settings, split and seed>/ and reused by later runs.
The random state is restored after training or generating, so a run continues identically whether the set was
cached or not. The log says which set was used.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities.seed import isolate_rng

from fmnist.data.augment import BatchAugment
from fmnist.data.synthetic import SyntheticMix, generate_set, load_generator, load_synthetic, save_synthetic
from fmnist.gan.metrics import cache_key, seeded, split_settings
from fmnist.utils.errors import UserError
from fmnist.utils.loggers import CSVLogger
from fmnist.utils.runtime import write_json

log = logging.getLogger("fmnist")
SET_NAME = "synthetic.safetensors"


def train_default_gan(settings: dict[str, Any], data: dict[str, Any], directory: Path) -> Path:
    """Train the GAN of `settings` on the training split of `data`; write its checkpoint, per-epoch sample grids
    and finally its synthetic set (whose presence marks a complete cache entry) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    with seeded(settings["seed"]):
        datamodule = instantiate(data, batch_size=settings["batch_size"], augment=None)
        gan = instantiate(settings["model"])
        trainer = pl.Trainer(
            max_steps=2 * settings["steps"],  # Lightning counts the generator's and the discriminator's steps
            max_epochs=-1, precision="32-true", default_root_dir=str(directory),
            logger=CSVLogger(str(directory), name="", version=""), callbacks=[RichProgressBar()],
            enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
        )  # fmt: skip
        trainer.fit(gan, datamodule=datamodule)
        trainer.save_checkpoint(directory / "generator.ckpt", weights_only=True)
        images, labels = generate_set(gan.cpu(), settings["n_per_class"], seed=settings["seed"])
    write_json(directory / "settings.json", settings)
    return save_synthetic(directory / SET_NAME, images, labels, source=str(directory / "generator.ckpt"),
                          seed=settings["seed"], n_per_class=settings["n_per_class"])  # fmt: skip


def default_gan_set(
    default_gan: dict[str, Any], data: dict[str, Any], n_per_class: int, gan_seed: int, cache_dir: str | Path
) -> tuple[Path, bool]:
    """The cached synthetic set of the default GAN for this training split, trained first when missing.
    Returns (path, trained now)."""
    settings = {
        "model": default_gan["model"],
        "steps": int(default_gan["steps"]),
        "batch_size": int(default_gan["batch_size"]),
        "split": split_settings(data),
        "seed": int(gan_seed),
        "n_per_class": int(n_per_class),
    }
    directory = Path(cache_dir) / cache_key(settings)
    path = directory / SET_NAME
    if path.is_file():
        return path, False
    log.info(f"aug=gan: no cached synthetic set for these settings; training the default GAN ({settings['steps']} "
             f"steps) into {directory}")  # fmt: skip
    return train_default_gan(settings, data, directory), True


def synthetic_source(
    source: str | None, n_per_class: int, gan_seed: int, default_gan: dict, cache_dir: str, data: dict
) -> tuple[Any, Any, str]:
    """(uint8 images, labels, description) of the configured synthetic source."""
    if source is None:
        path, trained = default_gan_set(default_gan, data, n_per_class, gan_seed, cache_dir)
        images, labels, _ = load_synthetic(path)
        return images, labels, f"default GAN set {path} ({'trained now' if trained else 'cached'})"
    path = Path(source)
    if not path.exists():
        raise UserError(
            f"aug.source={source} does not exist. Give a synthetic set (.safetensors from scripts/generate.py or a "
            "`python gan.py` run), a generator checkpoint (<gan run>/checkpoints/last.ckpt), or null for the "
            "default GAN."
        )
    if path.suffix == ".safetensors":
        images, labels, _ = load_synthetic(path)
        return images, labels, f"synthetic set {path}"
    gan = load_generator(path)  # CheckpointError for a classifier or any other checkpoint
    with isolate_rng():
        images, labels = generate_set(gan, n_per_class, seed=gan_seed)
    return images, labels, f"{n_per_class} images per class generated from {path} (seed {gan_seed})"


def gan_augment(
    source: str | None = None,
    share: float = 0.25,
    n_per_class: int = 6000,
    gan_seed: int = 0,
    default_gan: dict | None = None,
    cache_dir: str = "outputs/cache/gan",
    data: dict | None = None,
    **augment: Any,
) -> BatchAugment:
    """BatchAugment(**augment) whose first step replaces `share` of each training batch with synthetic images."""
    if not 0 < share <= 1:
        raise UserError(f"aug.share={share} must be in (0, 1]: the share of each training batch that is synthetic.")
    if source is None and (not default_gan or not data):
        raise UserError("aug.source=null needs aug.default_gan and aug.data (conf/aug/gan.yaml sets both).")
    images, labels, description = synthetic_source(source, n_per_class, gan_seed, default_gan, cache_dir, data)
    log.info(f"aug=gan: {description}: {len(labels)} images; {share:.0%} of every training batch is synthetic")
    return BatchAugment(**augment, synthetic=SyntheticMix(images, labels, share))
