"""The split (stratified, seeded, disjoint), train_fraction, and what batches look like."""

from __future__ import annotations

import pytest
import torch

from fmnist.data import FashionMNISTDataModule, stratified_split
from fmnist.utils.errors import UserError


def make_dm(tiny_data, **kwargs) -> FashionMNISTDataModule:
    directory, checksums = tiny_data
    dm = FashionMNISTDataModule(data_dir=str(directory), system_dir=None, download=False, checksums=checksums, **kwargs)
    dm.setup("fit")
    return dm


def test_stratified_split_exact_size_and_proportions():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([100, 300, 600])])
    chosen, rest = stratified_split(labels, 100, seed=0)
    assert len(chosen) == 100 and len(rest) == 900
    assert torch.bincount(labels[chosen]).tolist() == [10, 30, 60]
    assert set(chosen.tolist()).isdisjoint(rest.tolist())
    assert sorted(chosen.tolist() + rest.tolist()) == list(range(1000))


def test_stratified_split_rounds_to_the_requested_size():
    labels = torch.tensor([0] * 7 + [1] * 7 + [2] * 7)
    chosen, _ = stratified_split(labels, 10, seed=1)
    assert len(chosen) == 10
    assert sorted(torch.bincount(labels[chosen]).tolist()) == [3, 3, 4]


def test_split_is_seeded_and_disjoint(tiny_data):
    a, b = make_dm(tiny_data, val_size=100), make_dm(tiny_data, val_size=100)
    assert torch.equal(a.val_idx, b.val_idx)
    c = make_dm(tiny_data, val_size=100, split_seed=1)
    assert not torch.equal(a.val_idx, c.val_idx)
    assert set(a.val_idx.tolist()).isdisjoint(a.train_idx.tolist())
    assert len(a.val_set) == 100 and len(a.train_set) == 500 and len(a.test_set) == 200
    assert torch.bincount(a.val_set.labels).tolist() == [10] * 10


def test_train_fraction_keeps_class_balance(tiny_data):
    dm = make_dm(tiny_data, val_size=100, train_fraction=0.2)
    assert len(dm.train_set) == 100
    assert torch.bincount(dm.train_set.labels).tolist() == [10] * 10
    assert set(dm.train_idx.tolist()).isdisjoint(dm.val_idx.tolist())


def test_batches_are_whole_tensors_and_become_unit_floats(tiny_data):
    dm = make_dm(tiny_data, val_size=100, batch_size=32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (32, 28, 28) and images.dtype == torch.uint8 and labels.shape == (32,)
    x, y = dm.on_after_batch_transfer((images, labels))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() >= 0 and x.max() <= 1 and torch.equal(y, labels)
    assert len(dm.train_dataloader()) == 500 // 32  # drop_last in training


@pytest.mark.parametrize("kwargs", [{"train_fraction": 0}, {"val_size": 0}, {"batch_size": 0}])
def test_bad_values_are_refused(kwargs):
    with pytest.raises(UserError):
        FashionMNISTDataModule(**kwargs)
