"""How a checkpoint is scored, one way in every command: a training run fits a temperature and an uncertainty
threshold on validation and records them with its test-time augmentation in best.ckpt; eval.py, export and predict
use that record unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from fmnist.data import FashionMNISTDataModule
from fmnist.models.calibration import batches, energy, fit_temperature, logits_and_labels
from fmnist.models.classifier import Classifier
from fmnist.predict.export import export
from fmnist.utils.errors import report_user_errors

from conftest import compose_cfg, only_run_dir, run_cli, tiny_data_overrides, tiny_overrides


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory) -> Path:
    """A partly trained tiny run (aug=flip, tta=auto: tested with mirrored views)."""
    root = tmp_path_factory.mktemp("scored")
    result = run_cli("train.py", *tiny_overrides(tiny_data, root), "trainer.max_epochs=1", "model.optimizer.lr=0.002")
    assert result.returncode == 0, result.stderr[-3000:]
    return only_run_dir(root)


def test_eval_with_no_options_reproduces_the_runs_metrics(trained, tiny_data, tmp_path):
    """Given the run directory, eval.py scores the checkpoint validation chose, as the run did."""
    run_metrics = json.loads((trained / "metrics.json").read_text())
    assert run_metrics["tta"] == "flip" and run_metrics["temperature"] != 1.0
    result = run_cli("eval.py", *tiny_data_overrides(tiny_data, tmp_path), f"ckpt_path={trained}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads((only_run_dir(tmp_path, "eval") / "metrics.json").read_text())
    assert evaluated["ckpt_path"] == str((trained / "checkpoints" / "best.ckpt").resolve())
    for key in ("test/acc", "test/nll", "test/ece", "test/nll_raw", "test/ece_raw", "tta", "temperature"):
        assert evaluated[key] == run_metrics[key], key  # the same number, not a close one
    assert f"tta=flip · temperature {run_metrics['temperature']:.3f}" in result.stdout + result.stderr


def test_temperature_and_threshold_come_from_validation(trained, tiny_data):
    """Recomputed here from the validation split alone, they are what the run recorded; the temperature lowers
    the validation NLL, and accuracy is the same before and after it."""
    best = trained / "checkpoints" / "best.ckpt"
    scoring = torch.load(best, weights_only=True)["hyper_parameters"]["scoring"]
    model = Classifier.load_from_checkpoint(best, weights_only=True).eval()  # still rebuilds from the file alone
    assert model.tta == "flip" and model.val_temperature == scoring["temperature"]
    directory, checksums = tiny_data
    datamodule = FashionMNISTDataModule(str(directory), None, False, checksums=checksums, val_size=100)
    datamodule.setup("fit")
    val = datamodule.val_set
    logits, labels = logits_and_labels(model, batches(val.images, val.labels), "flip")
    temperature = fit_temperature(logits, labels)
    assert temperature == pytest.approx(scoring["temperature"], abs=1e-5)
    nll = torch.nn.functional.cross_entropy
    assert nll(logits / temperature, labels) < nll(logits, labels)
    share = (energy(logits, temperature) > scoring["uncertain_above"]).double().mean().item()
    assert share <= scoring["uncertain_quantile"] and scoring["val_images"] == 100
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test/nll"] != metrics["test/nll_raw"] and metrics["test/ece"] != metrics["test/ece_raw"]
    with torch.no_grad():
        assert torch.equal(model.calibrated(val.images).argmax(1), logits.argmax(1)), "the temperature keeps classes"


def test_export_carries_the_scoring(trained, tmp_path):
    best = trained / "checkpoints" / "best.ckpt"
    scoring = torch.load(best, weights_only=True)["hyper_parameters"]["scoring"]
    out = tmp_path / "model.safetensors"
    cfg = compose_cfg("export", [f"paths.log_dir={tmp_path}", f"ckpt_path={best}", "format=safetensors", f"out={out}"],
                      tmp_path / "run")  # fmt: skip
    report_user_errors(export, cfg)
    with safe_open(str(out), framework="pt") as f:
        assert json.loads(f.metadata()["fmnist.hparams"])["scoring"] == scoring
    assert json.loads(out.with_suffix(".json").read_text())["scoring"] == scoring
