"""Facts of the Fashion-MNIST data set that both the data and the model side need: the class names, the training pixels'
statistics, how uint8 images become model input and which data settings define a run's split (recorded in its
checkpoints, compared between runs). Only torch is imported, so a model can know them without loading the data pipeline.
The configs read the same values from conf/dataset/fashion_mnist.yaml."""

from __future__ import annotations

import torch

CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FMNIST_STATS = {"mean": [0.2860], "std": [0.3530]}  # training pixels in [0, 1]


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, H, W) or (B, 1, H, W) -> float (B, 1, H, W) in [0, 1]; float input passes unchanged."""
    if images.dtype == torch.uint8:
        images = images.float().div_(255)
    return images.unsqueeze(1) if images.ndim == 3 else images


VAL_SPLIT_KEYS = ("val_size", "split_seed")  # the validation split is drawn from these alone (stratified_split)
SPLIT_KEYS = (*VAL_SPLIT_KEYS, "train_fraction")  # and the share of the rest kept for training


def split_differences(split: dict, other: dict, keys: tuple[str, ...]) -> str:
    """'data.split_seed=1 vs 0, ...' for the `keys` where two runs' data settings differ; '' when they agree. A key
    one side does not record (a model file exported before checksums were kept has none) is not compared."""
    differ = [k for k in keys if k in split and k in other and split[k] != other[k]]
    return ", ".join(f"data.{k}={split[k]} vs {other[k]}" for k in differ)
