"""The residual CNN (fmnist/models/components/resnet.py), its model config and the `fast` preset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from fmnist.models.classifier import Classifier
from fmnist.models.components.resnet import ResNet
from fmnist.train import train

from conftest import compose_cfg, tiny_data_overrides, tiny_overrides

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


def test_ceil_pool_keeps_the_edge_of_odd_sized_maps():
    torch.manual_seed(0)
    floor, ceil = ResNet(widths=(8, 16, 32)).eval(), ResNet(widths=(8, 16, 32), ceil_pool=True).eval()
    images = torch.randn(2, 1, 28, 28)
    assert ceil.features(images).shape == (2, 32, 4, 4)  # 28 -> 14 -> 7 -> 4 px
    # the last stage's pool (features: ..., conv_bn, pool, residual): the 7-px map's last row is dropped by the
    # floor pool and kept by the ceil pool
    edge = torch.zeros(2, 32, 7, 7)
    edge[..., 6, :] = 100.0  # a large activation on the last row only
    assert floor.features[-2](edge).amax() == 0.0
    assert ceil.features[-2](edge).amax() == 100.0


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
    with pytest.raises(ValueError, match="widths must be at least 1 and depth at least 0"):
        ResNet(widths=(0, 0, 0))
    with pytest.raises(ValueError, match="widths must be at least 1 and depth at least 0"):
        ResNet(widths=(8, 16), depth=-1)


def test_fast_preset_runs_end_to_end_fast_dev_run(tiny_data, tmp_path):
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), *PRESET, "debug=fdr"], tmp_path / "run")
    assert cfg.trainer.fast_dev_run
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and metrics["choice/model"] == "resnet"
    assert metrics["tta"] == "flip" and 0 <= metrics["test/acc"] <= 1


# each ingredient of the presets, switched on (or off) alone, with the plain CNN and the ResNet
INGREDIENTS = {
    "ema": ["callbacks=ema"],
    "erasing": ["aug=strong"],
    "tta_flip_shift": ["aug=flip", "tta=flip+shift"],
    "label_smoothing_off": ["model.label_smoothing=0"],
}
RESNET_ONLY = {  # the CNN's AdamW has no Nesterov switch; whitening and ceil_pool are the ResNet's
    "heavy_ball": ["model.optimizer.nesterov=false"],
    "whiten_trainable": ["model.backbone.whiten=trainable"],
    "ceil_pool": ["model.backbone.ceil_pool=true"],
}
CASES = [(m, i) for m in ("cnn", "resnet") for i in INGREDIENTS] + [("resnet", i) for i in RESNET_ONLY]


@pytest.mark.parametrize(("model", "ingredient"), CASES, ids=[f"{m}-{i}" for m, i in CASES])
def test_each_ingredient_runs_with_the_cnn_and_the_resnet(model, ingredient, tiny_data, tmp_path):
    options = {**INGREDIENTS, **RESNET_ONLY}[ingredient]
    overrides = [*tiny_overrides(tiny_data, tmp_path), f"model={model}", *options, "debug=fdr"]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["choice/model"] == model and metrics["global_step"] == 1 and 0 <= metrics["test/acc"] <= 1
    if ingredient == "tta_flip_shift":
        assert metrics["tta"] == "flip+shift"


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


# --- whitening init of the stem (airbench) --------------------------------------------------------------------------
def stem_outputs(model: ResNet, images: torch.Tensor) -> torch.Tensor:
    """The stem conv's responses as (pixels, channels), without BN and ReLU."""
    conv = model.features[0][0]
    return torch.nn.functional.conv2d(images, conv.weight).permute(0, 2, 3, 1).reshape(-1, conv.out_channels)


def test_whitening_init_makes_the_stem_decorrelate_its_input():
    torch.manual_seed(0)
    images = torch.nn.functional.avg_pool2d(torch.rand(400, 1, 30, 30), 3, stride=1)  # neighbouring pixels correlate
    model = ResNet(widths=(16, 32), stem=16, whiten="frozen")
    raw = torch.corrcoef(stem_outputs(model, images).T)[:8, :8]
    model.init_whitening(images, eps=1e-8)  # the default eps damps the faintest directions, by design
    responses = stem_outputs(model, images)
    white = torch.cov(responses[:, :8].T)  # the 8 principal directions: unit variance, uncorrelated
    assert torch.allclose(white, torch.eye(8), atol=0.05), white
    assert (raw - torch.eye(8)).abs().max() > 0.3, "a random init does not decorrelate"
    assert torch.allclose(responses[:, 8:], -responses[:, :8])  # the negated copies
    conv = model.features[0][0]
    assert not conv.weight.requires_grad
    trainable = ResNet(widths=(16, 32), stem=16, whiten="trainable")
    trainable.init_whitening(images)
    assert trainable.features[0][0].weight.requires_grad


def test_whitening_refuses_a_stem_it_cannot_fill():
    with pytest.raises(ValueError, match="even stem width of at most 18"):
        ResNet(widths=(16, 32), stem=20, whiten="frozen")
    with pytest.raises(ValueError, match="whiten must be"):
        ResNet(widths=(16, 32), whiten="yes")


# --- EMA of the weights: what is validated, saved and tested ----------------------------------------------------
@pytest.fixture(scope="module")
def ema_run(tiny_data, tmp_path_factory) -> Path:
    """Two epochs of the fast preset with EMA and a frozen whitened stem, on the tiny data."""
    root = tmp_path_factory.mktemp("ema")
    overrides = [*tiny_overrides(tiny_data, root), *PRESET, "callbacks=ema", "callbacks.ema.decay=0.9"]
    overrides += ["model.backbone.whiten=frozen", "model.backbone.widths=[16,32,64]"]
    train(compose_cfg("train", overrides, root / "run"))
    return root / "run"


def test_ema_weights_are_the_ones_saved_and_scored(ema_run, tiny_data):
    from fmnist.evaluate import evaluate

    path = ema_run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    name = "backbone.head.weight"
    assert not torch.allclose(averaged[name], raw[name]), "the average differs from the last raw weights"
    metrics = json.loads((ema_run / "metrics.json").read_text())
    # scoring the averaged weights again gives the run's test figures; the raw weights give other ones
    eval_overrides = [*tiny_data_overrides(tiny_data, ema_run.parent), f"ckpt_path={path}", "tta=flip"]
    again = evaluate(compose_cfg("eval", eval_overrides, ema_run.parent / "eval"))
    assert again["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert again["test/nll"] == pytest.approx(metrics["test/nll"], abs=1e-5)
    torch.save({**checkpoint, "state_dict": raw}, ema_run.parent / "raw.ckpt")
    eval_overrides[-2] = f"ckpt_path={ema_run.parent / 'raw.ckpt'}"
    raw_scores = evaluate(compose_cfg("eval", eval_overrides, ema_run.parent / "eval_raw"))
    # before the validation temperature (which flattens both untrained tiny models towards ln 10)
    assert raw_scores["test/nll_raw"] != pytest.approx(metrics["test/nll_raw"], abs=1e-4)


def test_frozen_whitened_stem_is_kept_through_training(ema_run):
    loaded = Classifier.load_from_checkpoint(ema_run / "checkpoints" / "last.ckpt", weights_only=True)
    trained = loaded.backbone.features[0][0].weight.detach()
    fresh = ResNet(widths=(16, 32, 64), stem=16, whiten="frozen")
    assert not torch.allclose(trained, fresh.features[0][0].weight), "not the random init"
    pairs = trained.view(16, -1)
    assert torch.allclose(pairs[8:], -pairs[:8])  # still the +- whitening filters: the frozen layer never moved


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_a_time_budget_ends_training_with_the_learning_rate_annealed(tiny_data, tmp_path):
    # 1,000 epochs asked, 8 seconds allowed: the schedule follows the clock and ends near zero when time is up
    overrides = [*tiny_overrides(tiny_data, tmp_path), "model=resnet", "trainer.max_epochs=1000",
                 "trainer.max_time=00:00:00:08", "trainer.log_every_n_steps=1",
                 "callbacks.lr_monitor.logging_interval=step"]  # fmt: skip
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    train(cfg)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 1 <= metrics["epochs"] < 1000, "max_time stopped the run"
    with open(tmp_path / "run" / "metrics.csv") as f:
        lrs = [float(row["lr-SGD/pg1"]) for row in csv.DictReader(f) if row.get("lr-SGD/pg1")]
    peak = cfg.model.optimizer.lr
    assert max(lrs) > 0.5 * peak, "the warm-up reached the peak within the budget"
    assert lrs[-1] < 0.05 * peak, "annealed by the budget's end, not cut at a high learning rate"
