"""On the real Fashion-MNIST (skipped only where the files are absent; CI installs them)."""

from __future__ import annotations

import pytest

from fmnist.data import FashionMNISTDataModule
from fmnist.train import train

from conftest import HAVE_REAL_DATA, REAL_DATA, compose_cfg

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not HAVE_REAL_DATA, reason=f"real data not in {REAL_DATA}: apt-get install dataset-fashion-mnist"
    ),
]


def test_real_files_pass_every_check_and_split_as_documented():
    dm = FashionMNISTDataModule(data_dir="/nonexistent", system_dir=str(REAL_DATA), download=False)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    assert dm.val_set.labels.bincount().tolist() == [500] * 10
    mean = dm.train_set.images.float().div(255).mean().item()
    assert mean == pytest.approx(0.2860, abs=0.001)


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_one_short_epoch_learns(tmp_path):
    overrides = [
        f"data.system_dir={REAL_DATA}", f"data.data_dir={tmp_path / 'none'}", "data.download=false", "model=cnn",
        "data.train_fraction=0.2", "trainer.max_epochs=1", "trainer.accelerator=cpu", f"paths.log_dir={tmp_path}",
    ]  # fmt: skip
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    val_acc = train(cfg)
    assert val_acc > 0.80, "one epoch on 11k real images reaches > 80 % only when the whole pipeline works"
