"""The residual CNN (fmnist/models/components/resnet.py), its model config and the `fast` preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fmnist.models.classifier import Classifier
from fmnist.models.components.resnet import ResNet
from fmnist.train import train

from conftest import compose_cfg, tiny_overrides

PRESET = ["model=resnet", "experiment=fast"]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("widths", [(16, 32, 64), (32, 64, 128)])
def test_resnet_shapes_at_28px(widths):
    model = ResNet(widths=widths, depth=1, num_classes=10, in_chans=1, image_size=28).eval()
    images = torch.randn(3, 1, 28, 28)
    assert model.features(images).shape == (3, widths[-1], 3, 3)  # 28 -> 14 -> 7 -> 3 px
    assert model(images).shape == (3, 10)
    channels_last = model.to(memory_format=torch.channels_last)
    assert channels_last(images.contiguous(memory_format=torch.channels_last)).shape == (3, 10)


def test_parameter_count_depends_on_widths_and_depth():
    small, large = ResNet(widths=(16, 32, 64)), ResNet(widths=(32, 64, 128))
    assert n_params(small) < n_params(large)
    assert n_params(ResNet(widths=(16, 32, 64), depth=0)) < n_params(small)
    # ResNet-9's [1, 0, 1]: only the middle stage's residual block (2 convs of 32 -> 32, with BN) goes
    uneven = ResNet(widths=(16, 32, 64), depth=[1, 0, 1])
    assert n_params(small) - n_params(uneven) == 2 * (32 * 32 * 9 + 2 * 32)


def test_head_scale_and_pooling():
    torch.manual_seed(0)
    plain = ResNet(widths=(8, 16), scale=1.0).eval()
    scaled = ResNet(widths=(8, 16), scale=0.125).eval()
    scaled.load_state_dict(plain.state_dict())
    images = torch.randn(2, 1, 28, 28)
    assert torch.allclose(scaled(images), plain(images) * 0.125, atol=1e-6)
    assert isinstance(ResNet(widths=(8,), pool="avg").pool, torch.nn.AdaptiveAvgPool2d)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="one depth per stage"):
        ResNet(widths=(8, 16), depth=[1])
    with pytest.raises(ValueError, match="too small"):
        ResNet(widths=(8, 16, 32, 64, 128, 256), image_size=28)
    with pytest.raises(ValueError, match="pool"):
        ResNet(widths=(8,), pool="median")


def test_fast_preset_composes(tiny_data, tmp_path):
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), *PRESET], tmp_path / "run")
    assert cfg.model.backbone._target_ == "fmnist.models.components.resnet.ResNet"
    assert cfg.model.optimizer._target_ == "torch.optim.SGD" and cfg.model.optimizer.nesterov
    assert cfg.model.optimizer.momentum == 0.9 and cfg.model.label_smoothing == 0.2
    assert cfg.aug.flip > 0 and cfg.tta == "flip"
    assert cfg.trainer.max_epochs >= 1 and cfg.trainer.accelerator == "cpu"
    assert cfg.model.backbone.image_size == 28 and cfg.model.backbone.in_chans == 1


def test_fast_preset_runs_end_to_end_fast_dev_run(tiny_data, tmp_path):
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), *PRESET, "debug=fdr"], tmp_path / "run")
    assert cfg.trainer.fast_dev_run
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and metrics["choice/model"] == "resnet"
    assert metrics["tta"] == "flip" and 0 <= metrics["test/acc"] <= 1


@pytest.fixture(scope="module")
def resnet_run(tiny_data, tmp_path_factory) -> Path:
    """One real epoch of the fast preset on the tiny data, with checkpoints."""
    root = tmp_path_factory.mktemp("resnet")
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, root), *PRESET, "trainer.max_epochs=1"], root / "run")
    train(cfg)
    return root / "run"


def test_checkpoint_rebuilds_with_the_same_logits(resnet_run):
    path = resnet_run / "checkpoints" / "best.ckpt"
    loaded = Classifier.load_from_checkpoint(path, weights_only=True).eval()
    assert isinstance(loaded.backbone, ResNet)
    checkpoint = torch.load(path, weights_only=True)
    assert "momentum_buffer" in next(iter(checkpoint["optimizer_states"][0]["state"].values())), "SGD trained it"
    # the same weights in a model built from the config alone: identical logits
    hparams = checkpoint["hyper_parameters"]
    rebuilt = Classifier(**hparams).eval()
    rebuilt.load_state_dict(checkpoint["state_dict"])
    images = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(images), rebuilt(images))
        assert loaded(images).shape == (6, 10)
    metrics = json.loads((resnet_run / "metrics.json").read_text())
    assert metrics["best_checkpoint"] == str(path) and metrics["tta"] == "flip"
