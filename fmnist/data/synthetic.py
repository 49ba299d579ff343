"""Synthetic (GAN-generated) Fashion-MNIST sets: the file format, generating one from a GAN (loaded with
fmnist.models.files.load_generator), loading a set, and mixing it into training batches.

Format of a synthetic set (written by `scripts/generate.py`, `python gan.py` and the default-GAN cache): a
`.safetensors` file — tensors only, so loading it cannot run code — holding
  images  uint8 (N, 28, 28), 0 = black background, like the real idx files
  labels  int64 (N,), class indices 0..9 (fmnist.dataset.CLASSES), or float32 (N, 10) soft labels: probabilities
          that sum to one (a teacher's, written by `scripts/relabel.py`)
and string metadata: `format` ("fmnist-synthetic-v1"), `source` (the generator checkpoint), `seed`, `n_per_class`.
Read it with `load_synthetic(path)` or `safetensors.torch.load_file(path)`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from fmnist.data.datamodule import FashionMNISTDataModule, TensorBatches
from fmnist.dataset import CLASSES, to_unit_float
from fmnist.utils.errors import DataError, UserError
from fmnist.utils.io import atomic_path

FORMAT = "fmnist-synthetic-v1"


def save_synthetic(path: str | Path, images: torch.Tensor, labels: torch.Tensor, **metadata: object) -> Path:
    """Write a synthetic set atomically (a reader, or a crash, never sees half a file)."""
    path = Path(path)
    labels = labels.to(torch.float32 if labels.is_floating_point() else torch.int64)  # soft labels stay soft
    tensors = {"images": images.to(torch.uint8).contiguous(), "labels": labels.contiguous()}
    meta = {"format": FORMAT, **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_synthetic(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """(uint8 images (N, 28, 28), labels, metadata) of a synthetic set; DataError when it is not one. Labels are int64
    (N,) class indices, or float32 (N, 10) probabilities for a relabelled set (scripts/relabel.py)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Synthetic set {path} does not exist. Write one: python scripts/generate.py ckpt_path=<GAN checkpoint>"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a readable synthetic set ({e}); write one with scripts/generate.py.") from e
    images, labels = tensors.get("images"), tensors.get("labels")
    if metadata.get("format") != FORMAT or images is None or labels is None:
        raise DataError(f"{path} is not a synthetic set of this project (format {FORMAT}: images + labels).")
    if images.dtype != torch.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28) or len(labels) != len(images):
        raise DataError(f"{path}: expected uint8 images (N, 28, 28) and N labels, got {tuple(images.shape)} "
                        f"{images.dtype} and {len(labels)} labels.")  # fmt: skip
    if len(labels) == 0:
        raise DataError(f"{path}: the set is empty.")
    if labels.is_floating_point():
        rows_ok = labels.ndim == 2 and labels.shape[1] == len(CLASSES) and (labels >= 0).all()
        if not rows_ok or not torch.allclose(labels.sum(1), torch.ones(len(labels)), atol=1e-3):
            raise DataError(f"{path}: soft labels must be (N, {len(CLASSES)}) probabilities that sum to one.")
        return images, labels, metadata
    if labels.ndim != 1 or labels.min() < 0 or labels.max() >= len(CLASSES):
        raise DataError(f"{path}: labels must be class indices 0..{len(CLASSES) - 1}.")
    return images, labels.long(), metadata


def class_indices(classes: Sequence[int | str] | None) -> list[int]:
    """Class indices from indices or names (e.g. [0, "Trouser"]); None = all ten."""
    if classes is None:
        return list(range(len(CLASSES)))
    if not classes:
        raise UserError("classes=[]: name at least one class (indices 0..9 or names), or classes=null for all ten.")
    out = []
    for c in classes:
        if isinstance(c, str) and not c.isdigit():
            if c not in CLASSES:
                raise UserError(f"Unknown class {c!r}; classes are indices 0..9 or names: {', '.join(CLASSES)}.")
            out.append(CLASSES.index(c))
        elif not 0 <= int(c) < len(CLASSES):
            raise UserError(f"Class index {c} is outside 0..{len(CLASSES) - 1}.")
        else:
            out.append(int(c))
    return out


class Sampler(Protocol):
    """What generate_set needs of a generator (fmnist.models.gan.GAN, or a generator file's GeneratorSampler)."""

    latent_dim: int

    def sample(self, labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor: ...


@torch.no_grad()
def generate_set(
    gan: Sampler, n_per_class: int, classes: Sequence[int] | None = None, seed: int = 0, batch_size: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class uint8 images of each class (sorted by class) from a GAN, with a seeded noise generator (the
    global random state is left alone)."""
    if n_per_class < 1:
        raise UserError(f"n_per_class={n_per_class} must be at least 1.")
    labels = torch.tensor(class_indices(classes)).repeat_interleave(n_per_class)
    generator = torch.Generator().manual_seed(seed)
    chunks = []
    for start in range(0, len(labels), batch_size):
        part = labels[start : start + batch_size]
        noise = torch.randn(len(part), gan.latent_dim, generator=generator)
        chunks.append(gan.sample(part, noise=noise).mul(255).round().to(torch.uint8).squeeze(1).cpu())
    return torch.cat(chunks), labels


class SyntheticMix(nn.Module):
    """Replaces the first round(share * B) images of a (shuffled) training batch, and their labels, with random
    samples of a synthetic set held in memory as uint8. Runs before the other augmentations (BatchAugment), so they
    apply to real and synthetic images alike. With soft labels (a relabelled set) the batch's targets become
    (B, C) probabilities: one-hot for the real images, the teacher's for the synthetic ones."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, share: float) -> None:
        super().__init__()
        if not 0 < share <= 1:
            raise UserError(f"aug.share={share} must be in (0, 1]: the share of each training batch that is synthetic.")
        self.soft = labels.is_floating_point()
        self.images, self.labels, self.share = images, labels.float() if self.soft else labels.long(), float(share)

    @torch.no_grad()
    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = round(self.share * len(images))
        if k == 0:
            return images, labels
        pick = torch.randint(len(self.labels), (k,))  # global generator: seeded runs are reproducible
        synthetic = to_unit_float(self.images[pick].to(images.device)).to(images.dtype)
        images = torch.cat([synthetic, images[k:]])
        picked = self.labels[pick].to(labels.device)
        if self.soft:
            real = nn.functional.one_hot(labels[k:], picked.shape[1]) if labels.ndim == 1 else labels[k:]
            return images, torch.cat([picked, real.to(picked.dtype)])
        return images, torch.cat([picked.to(labels.dtype), labels[k:]])

    def extra_repr(self) -> str:
        return f"share={self.share}, set={len(self.labels)} images{', soft labels' if self.soft else ''}"


class SyntheticDataModule(FashionMNISTDataModule):
    """FashionMNISTDataModule whose training split is a synthetic set (a file of the format above); validation and
    test stay the real ones. Used for the classification accuracy score (train on synthetic, test on real)."""

    def __init__(self, synthetic: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.synthetic = str(synthetic)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        images, labels, _ = load_synthetic(self.synthetic)
        self.train_set = TensorBatches(images, labels)
