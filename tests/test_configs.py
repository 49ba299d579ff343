"""Every option of every config group composes, and its parts instantiate."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
from hydra.utils import instantiate

from fmnist.utils.runtime import instantiate_group

from conftest import CONF_DIR, compose_cfg, run_cli, tiny_data_overrides, tiny_overrides

GROUPS = ["data", "model", "aug", "trainer", "logger", "callbacks", "debug", "experiment", "hparams_search"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tiny_data, tmp_path):
    overrides = [*tiny_overrides(tiny_data, tmp_path), f"{group}={option}"]
    if group == "model":  # timm models would fetch pretrained weights; there is no network here (tests/test_timm.py)
        overrides.append("++model.pretrained=false")
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    assert cfg.get(group) is not None or group in ("debug", "experiment", "hparams_search")
    if group in ("data", "model", "trainer"):
        obj = instantiate(cfg[group])
        assert isinstance(obj, pl.LightningDataModule | pl.LightningModule | pl.Trainer)
    if group in ("callbacks", "logger"):
        objects = instantiate_group(cfg[group])
        assert objects or option == "none"


@pytest.mark.parametrize("name", ["train", "eval"])
def test_entry_configs_compose(name, tiny_data, tmp_path):
    overrides = ["ckpt_path=x.ckpt"] if name == "eval" else []
    cfg = compose_cfg(name, [*tiny_data_overrides(tiny_data, tmp_path), *overrides], tmp_path / "run")
    assert cfg.task_name == name
    assert str(cfg.optimized_metric if name == "train" else cfg.splits[0]).startswith(("val/", "test"))


def test_unknown_option_lists_the_choices():
    result = run_cli("train.py", "model=nope")
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    assert "cnn" in result.stderr  # Hydra lists the available options


def test_help_and_cfg_job_work():
    result = run_cli("train.py", "--help")
    assert result.returncode == 0 and "model: cnn" in result.stdout
    result = run_cli("train.py", "--cfg", "job", "trainer.max_epochs=3", "seed=1")
    assert result.returncode == 0 and "max_epochs: 3" in result.stdout and "seed: 1" in result.stdout
