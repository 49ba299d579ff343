"""Start-up order and the schedule estimate: cheap checks (config, weights, data files) fail within seconds, before
any expensive step; a hopeless schedule is announced with a measured estimate and the preset to use instead."""

from __future__ import annotations

import logging
import time

import pytest

from fmnist.train import build, train
from fmnist.utils.errors import DataError

from conftest import compose_cfg, run_cli, tiny_data_overrides, tiny_overrides


def test_convnext_with_aug_gan_fails_on_missing_weights_before_the_augmentation(tiny_data, tmp_path):
    """The design card's command without network or cached weights: the weights message within seconds. On the tiny
    data the shipped generator would be refused (another split), so that error would show had aug=gan come first."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}  # the hub's offline mode, an empty cache
    start = time.monotonic()
    result = run_cli("train.py", *tiny_overrides(tiny_data, tmp_path), "model=convnext", "aug=gan", env=env,
                     timeout=120)  # fmt: skip
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Pretrained weights for convnext_tiny" in output and "model.pretrained=false" in output, output[-3000:]
    assert "Traceback" not in output and "aug=gan" not in output and "shipped generator" not in output
    assert elapsed < 60, f"{elapsed:.0f} s: should fail right after start-up"
    assert not list(tmp_path.rglob("*.ckpt")) and not (tmp_path / "cache").exists(), "nothing trained or cached"


def test_missing_data_files_fail_before_the_augmentation_is_built(tiny_data, tmp_path):
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), f"data.data_dir={tmp_path / 'nowhere'}", "model=cnn",
                 "aug=gan", f"aug.source={tmp_path / 'no_such_set.safetensors'}"]  # fmt: skip
    with pytest.raises(DataError, match="Fashion-MNIST files not found"):
        build(compose_cfg("train", overrides, tmp_path / "run"), loggers=[])


def estimate_run(tiny_data, tmp_path, caplog, *extra: str) -> str:
    timing = ["callbacks.schedule_estimate.warmup_steps=1", "callbacks.schedule_estimate.timed_steps=3"]
    overrides = [*tiny_overrides(tiny_data, tmp_path), "trainer.max_epochs=1", "test=false", *timing, *extra]
    with caplog.at_level(logging.INFO, logger="fmnist"):
        train(compose_cfg("train", overrides, tmp_path / "run"))
    return "\n".join(f"{r.levelname} {r.getMessage()}" for r in caplog.records if "Schedule estimate" in r.message)


def test_schedule_estimate_is_logged_from_timed_steps(tiny_data, tmp_path, caplog):
    logged = estimate_run(tiny_data, tmp_path, caplog)
    assert logged.startswith("INFO Schedule estimate, measured over 3 training steps"), logged
    assert "per epoch" in logged and "WARNING" not in logged


def test_hopeless_schedule_on_a_cpu_warns_with_the_models_cpu_preset(tiny_data, tmp_path, caplog):
    """A threshold of ~0 makes the tiny run 'hopeless'; model=resnet's preset (conf/model_data/) is named."""
    small_resnet = ["model=resnet", "model.backbone.widths=[8,8,8]", "model.backbone.stem=8"]
    hopeless = "callbacks.schedule_estimate.cpu_warn_hours=1e-9"
    logged = estimate_run(tiny_data, tmp_path, caplog, *small_resnet, hopeless)
    assert logged.startswith("WARNING Schedule estimate"), logged
    assert "on this CPU: use the CPU preset experiment=fast" in logged


def test_a_frozen_warm_up_is_not_taken_for_the_whole_schedule(tiny_data, tmp_path, caplog):
    """Timed during the warm-up, the estimate counts the later steps as whole-network steps; it is measured again
    when the backbone starts training."""
    timm = ["model=timm", "model.pretrained=false", "model.backbone.name=resnet10t", "model.image_size=32",
            "trainer.max_epochs=2"]  # fmt: skip
    logged = estimate_run(tiny_data, tmp_path, caplog, *timm).splitlines()
    assert len(logged) == 2, logged
    assert "the backbone is frozen until epoch 1, so the steps after it are counted at 3x these" in logged[0]
    assert "frozen" not in logged[1] and "measured over 3 training steps" in logged[1]
