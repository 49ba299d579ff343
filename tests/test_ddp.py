"""Lightning DDP with two CPU processes through the real CLI: one run directory, exact validation metrics."""

from __future__ import annotations

import json

import pytest
import torch

from fmnist.data import FashionMNISTDataModule
from fmnist.models.classifier import Classifier

from conftest import only_run_dir, run_cli, tiny_overrides

MODELS = {
    "cnn": [],
    # the default model on its time budget: the two processes share one clock (fmnist/models/schedules.py)
    "resnet_budget": ["model=resnet", "model.backbone.widths=[8,16,32]", "model.backbone.stem=8",
                      "trainer.max_time=00:00:05:00"],
}  # fmt: skip


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
@pytest.mark.slow  # two training processes per model on 2 cores: the slow set (second step of .ci/run)
@pytest.mark.parametrize("model", MODELS)
def test_ddp_two_cpu_processes(model, tiny_data, tmp_path):
    overrides = [
        *tiny_overrides(tiny_data, tmp_path),
        *MODELS[model],
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.max_epochs=1",
        "data.val_size=101",  # odd: a padding sampler would score one image twice and shift the accuracy
        "model.optimizer.lr=0.002",  # a partly trained model, so that accuracy is not trivially 0 or 1
    ]
    result = run_cli("train.py", *overrides, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run_dir(tmp_path)  # exactly one run directory for both processes
    assert len(list(tmp_path.rglob("metrics.json"))) == 1
    assert (run / "train_ddp_process_1.log").is_file(), "the second process ran"
    metrics = json.loads((run / "metrics.json").read_text())

    # the same checkpoint scored in this single process over the whole validation split
    directory, checksums = tiny_data
    datamodule = FashionMNISTDataModule(str(directory), None, False, checksums=checksums, val_size=101)
    datamodule.setup("fit")
    model = Classifier.load_from_checkpoint(run / "checkpoints" / "last.ckpt", weights_only=True).eval()
    with torch.no_grad():
        predictions = model(datamodule.val_set.images).argmax(1)
    expected = (predictions == datamodule.val_set.labels).float().mean().item()
    assert 0.0 < expected < 1.0, "the check needs a partly trained model"
    assert metrics["val/acc"] == pytest.approx(expected, abs=1e-6)
