"""The Fashion-MNIST LightningDataModule: all 70,000 images in memory as uint8, batches cut by index.

Batches leave the loader as uint8 (B, 28, 28) and become float (B, 1, 28, 28) in [0, 1] after the transfer to the
device, where the training augmentation also runs, batched. Normalisation and resizing belong to the model (its
checkpoint then knows how it must be fed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from fmnist.data.sources import MIRRORS, SYSTEM_DIR, load_arrays, locate
from fmnist.dataset import to_unit_float
from fmnist.utils.errors import UserError

log = logging.getLogger(__name__)


class TensorBatches(Dataset):
    """A dataset over in-memory tensors that hands out whole batches through `__getitems__` (no per-sample
    indexing and stacking in the DataLoader)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index], self.labels[index]


def _identity(batch):  # module level so DataLoader workers can pickle it
    return batch


def stratified_split(labels: torch.Tensor, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (chosen, rest): `n` indices drawn per class in proportion to the class sizes (largest remainder
    rounding, so exactly `n`), from a seeded permutation. Both index tensors are sorted."""
    generator = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = exact.floor().long()
    shortfall = n - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True, stable=True)[:shortfall]] += 1
    chosen = []
    for c, k in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == c).nonzero().squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:k]])
    chosen_idx = torch.cat(chosen).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[chosen_idx] = False
    return chosen_idx, mask.nonzero().squeeze(1)


class FashionMNISTDataModule(pl.LightningDataModule):
    """The whole data set as in-memory uint8 tensors, split into train/val by a seeded stratified draw; batches are
    converted (and augmented, when training) after they reach the device. Images stay 28x28 here: the model resizes
    them to its `image_size`.
    """

    def __init__(
        self,
        data_dir: str = "data/fashion-mnist",
        system_dir: str | None = SYSTEM_DIR,
        download: bool = True,
        mirrors: Sequence[str] = MIRRORS,
        checksums: dict[str, str] | None = None,
        val_size: int = 5000,
        split_seed: int = 0,
        train_fraction: float = 1.0,
        batch_size: int = 256,
        eval_batch_size: int = 1024,
        num_workers: int = 0,
        augment: Callable | None = None,
    ) -> None:
        super().__init__()
        if not 0 < train_fraction <= 1:
            raise UserError(f"data.train_fraction={train_fraction} must be in (0, 1].")
        if val_size < 1:
            raise UserError(f"data.val_size={val_size} must be at least 1 (checkpointing monitors val/acc).")
        if batch_size < 1 or eval_batch_size < 1:
            raise UserError("data.batch_size and data.eval_batch_size must be positive.")
        # plain containers only, so a checkpoint's copy loads with weights_only=True
        self.save_hyperparameters(ignore=["augment"])
        self.hparams.mirrors = list(mirrors)
        self.hparams.checksums = dict(checksums) if checksums is not None else None
        self.augment = augment
        self.train_set: TensorBatches | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        directory = locate(hp.data_dir, hp.system_dir, hp.download, hp.mirrors, hp.checksums)
        log.info(f"Fashion-MNIST from {directory}")
        arrays = load_arrays(Path(directory), hp.checksums)
        images, labels = arrays["train_images"], arrays["train_labels"].long()
        if hp.val_size >= len(labels):
            raise UserError(f"data.val_size={hp.val_size} leaves no training images (only {len(labels)}).")
        self.val_idx, self.train_idx = stratified_split(labels, hp.val_size, hp.split_seed)
        if hp.train_fraction < 1:
            n_keep = max(1, round(hp.train_fraction * len(self.train_idx)))
            kept, _ = stratified_split(labels[self.train_idx], n_keep, hp.split_seed + 1)
            self.train_idx = self.train_idx[kept]
        self.train_set = TensorBatches(images[self.train_idx], labels[self.train_idx])
        self.val_set = TensorBatches(images[self.val_idx], labels[self.val_idx])
        self.test_set = TensorBatches(arrays["test_images"], arrays["test_labels"].long())

    def _loader(self, dataset: TensorBatches, train: bool) -> DataLoader:
        sampler = None
        if not train and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # under DDP, shard validation/test without the padding of DistributedSampler (which repeats samples):
            # every image is scored exactly once and the synced metrics equal a single-process evaluation
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.hparams.batch_size if train else self.hparams.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            drop_last=train and len(dataset) > self.hparams.batch_size,
            collate_fn=_identity,
            num_workers=self.hparams.num_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        images = to_unit_float(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            images, labels = self.augment(images, labels)
        return images, labels
