"""hparams_search=resnet (the default model's recipe) end to end: a 2-trial sweep on tiny data through the real CLI,
each trial on the space's fixed epoch schedule with Hyperband pruning, its winner repeatable as a plain run."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from conftest import compose_cfg, run_cli, tiny_data_overrides


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_resnet_search_runs_two_trials_on_its_fixed_schedule(tiny_data, tmp_path):
    data = [o for o in tiny_data_overrides(tiny_data, tmp_path) if not o.startswith("data.batch_size=")]
    result = run_cli(
        "train.py", "-m", "hparams_search=resnet", *data, "threads=1", "hydra.sweeper.n_trials=2",
        "trainer.max_epochs=2", "hydra.sweeper.pruner.max_resource=2",
        "data.batch_size=choice(50,100)",  # tiny data: 500 training images
        "model.backbone.widths=[8,16,32]", "model.backbone.stem=8",  # a searched key fixed: fast trials
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    study = optuna.load_study(study_name="resnet", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for t in study.trials:
        cfg = OmegaConf.load(Path(t.user_attrs["run_dir"]) / ".hydra" / "config.yaml")
        assert cfg.model.backbone._target_.endswith("resnet.ResNet") and cfg.trainer.max_epochs == 2
        assert cfg.model.backbone.widths == [8, 16, 32]  # fixed on the command line, not sampled
        lr = t.params["model.optimizer.lr"]
        assert 0.05 <= lr <= 0.8 and cfg.model.optimizer.lr == lr
        assert cfg.aug.erasing.p == t.params["aug.erasing.p"] and cfg.aug.affine.p == t.params["aug.affine.p"]
        assert cfg.model.backbone.depth == t.params["model.backbone.depth"]
        assert set(t.intermediate_values) == {0, 1}  # reported after each of its 2 epochs, for the pruner
        metrics = json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())
        assert t.value == pytest.approx(metrics["val/acc_best"]) and metrics["epochs"] == 2
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    single = compose_cfg("train", results["best_overrides"], sweep_dir / "repeat")
    assert single.test is True and "optuna_pruning" not in single.callbacks
    assert single.model.optimizer.lr == study.best_params["model.optimizer.lr"]
