"""Distillation (experiment=distill, fmnist/models/distill.py): two tiny teacher runs, then students trained on their
soft targets through the real CLI; the student's checkpoint is a plain Classifier's that eval.py scores alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fmnist.models.classifier import Classifier
from fmnist.models.distill import Distiller, distillation_loss
from fmnist.utils.errors import UserError

from conftest import only_run_dir, run_cli, tiny_data_overrides, tiny_overrides

# a small ResNet student (the default model) for one epoch: seconds on a CPU
STUDENT = ["model.backbone.widths=[8,16,32]", "model.backbone.stem=8", "trainer.max_epochs=1", "tta=none", "threads=1"]


@pytest.fixture(scope="module")
def teachers(tiny_data, tmp_path_factory) -> list[Path]:
    """Two one-epoch CNN runs (seeds 0 and 1, one multirun) on the tiny data's default split."""
    root = tmp_path_factory.mktemp("teachers")
    sweep = root / "train" / "multiruns" / "sweep"
    small = ["model.backbone.stages=[[8],[16]]", "model.backbone.hidden=32", "trainer.max_epochs=1", "threads=1"]
    result = run_cli("train.py", "-m", *tiny_overrides(tiny_data, root), *small, "seed=0,1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-3000:]
    return [sweep / "0", sweep / "1"]


def distill(tiny_data, root: Path, runs: list[Path], *extra: str):
    runs_arg = "teacher.runs=[" + ",".join(str(r) for r in runs) + "]"
    return run_cli("train.py", "experiment=distill", runs_arg, *tiny_data_overrides(tiny_data, root), *STUDENT, *extra)


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_student_learns_from_two_teachers_records_them_and_evaluates_alone(teachers, tiny_data, tmp_path):
    result = distill(tiny_data, tmp_path, teachers)
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    # the teachers are recorded with their accuracy on the shared validation split: the figure their own runs saw
    recorded = metrics["teachers"]
    assert [t["ckpt_path"] for t in recorded] == [str(r / "checkpoints" / "best.ckpt") for r in teachers]
    for entry, teacher in zip(recorded, teachers, strict=True):
        own = json.loads((teacher / "metrics.json").read_text())["val/acc_best"]
        assert entry["val_acc"] == pytest.approx(own, abs=1e-6)
    assert 0 <= metrics["teachers/val_acc_ensemble"] <= 1
    assert metrics["distill/temperature"] == 2.0 and metrics["distill/alpha"] == 0.5
    assert metrics["choice/experiment"] == "distill" and "test/acc" in metrics

    # the checkpoint is a plain Classifier's: no teacher weights, no distillation hyperparameters to rebuild
    best = run / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    assert "distillation" not in checkpoint["hyper_parameters"]
    assert checkpoint["distillation"]["teachers"] == recorded and checkpoint["distillation"]["alpha"] == 0.5
    student = Classifier.load_from_checkpoint(best, weights_only=True, map_location="cpu")
    assert type(student) is Classifier
    assert set(checkpoint["state_dict"]) == set(student.state_dict())
    assert student.hparams.backbone["widths"] == [8, 16, 32]

    # eval.py scores it alone, to the run's own test figure
    scored = run_cli("eval.py", f"ckpt_path={best}", *tiny_data_overrides(tiny_data, tmp_path / "eval"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    evaluated = json.loads((only_run_dir(tmp_path / "eval", "eval") / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_student_on_another_validation_split_is_refused(teachers, tiny_data, tmp_path):
    """Self-distillation (one teacher) from a run validated on other images than the student's would leak the
    student's validation labels into its training: refused before training, with the fix."""
    result = distill(tiny_data, tmp_path, teachers[:1], "data.split_seed=1")
    assert result.returncode == 2, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "another data split" in output and "data.split_seed=0 vs 1" in output and "data.split_seed=0" in output
    assert "Traceback" not in output


def test_alpha_one_is_the_plain_cross_entropy_and_alpha_zero_only_the_teachers():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 10, generator=generator) * 3
    labels = torch.randint(0, 10, (16,), generator=generator)
    mixed = F.softmax(torch.randn(16, 10, generator=generator), dim=1)  # mixup/cutmix targets
    teacher = F.softmax(torch.randn(16, 10, generator=generator) / 4, dim=1)
    for targets in (labels, mixed):
        plain = F.cross_entropy(logits, targets, label_smoothing=0.1)
        assert torch.equal(distillation_loss(logits, targets, teacher, 4.0, 1.0, 0.1), plain)
    # alpha=0: only the teachers; zero exactly when the student already matches them at the temperature
    assert distillation_loss(logits, labels, F.softmax(logits / 4, dim=1), 4.0, 0.0).abs() < 1e-6
    kl = F.kl_div(F.log_softmax(logits / 4, dim=1), teacher, reduction="batchmean") * 16
    assert distillation_loss(logits, labels, teacher, 4.0, 0.0) == pytest.approx(kl.item()) and kl > 0.1


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_an_exported_model_file_teaches_like_its_checkpoint(teachers, tiny_data, tmp_path):
    """A .safetensors file from export.py (a shipped model) is a teacher too: same weights, so the same validation
    accuracy as its run saw; the split it records is still checked against the student's."""
    exported = tmp_path / "teacher.safetensors"
    ckpt = teachers[0] / "checkpoints" / "best.ckpt"
    out = f"paths.log_dir={tmp_path / 'export'}"
    result = run_cli("export.py", f"ckpt_path={ckpt}", "format=safetensors", f"out={exported}", out)
    assert result.returncode == 0, result.stderr[-3000:]

    result = distill(tiny_data, tmp_path / "ok", [exported])
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((only_run_dir(tmp_path / "ok") / "metrics.json").read_text())["teachers"]
    own = json.loads((teachers[0] / "metrics.json").read_text())["val/acc_best"]
    assert [t["ckpt_path"] for t in recorded] == [str(exported)]
    assert recorded[0]["val_acc"] == pytest.approx(own, abs=1e-6)

    refused = distill(tiny_data, tmp_path / "refused", [exported], "data.split_seed=1")
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2 and "data.split_seed=0 vs 1" in output and "Traceback" not in output


def test_teachers_trained_on_different_data_are_refused(random_ckpt, tmp_path):
    """Every pair of teachers is compared (split and data checksums), before any student trains."""
    checkpoint = torch.load(random_ckpt, weights_only=True)
    data = checkpoint["datamodule_hyper_parameters"]
    for name, change in [("a", {}), ("seed", {"split_seed": 1}), ("data", {"checksums": {"train": "0" * 32}}),
                         ("data2", {"checksums": {"train": "1" * 32}})]:  # fmt: skip
        checkpoint["datamodule_hyper_parameters"] = {**data, **change}
        torch.save(checkpoint, tmp_path / f"{name}.ckpt")
    student = {k: v for k, v in checkpoint["hyper_parameters"].items() if k != "scoring"}
    for other, differ in [("seed", "data.split_seed=1 vs 0"), ("data2", "data.checksums=")]:
        first = "a" if other == "seed" else "data"
        runs = [str(tmp_path / f"{first}.ckpt"), str(tmp_path / f"{other}.ckpt")]
        with pytest.raises(UserError, match="were trained on different splits") as error:
            Distiller(teacher={"runs": runs}, **student)
        assert differ in str(error.value)
    Distiller(teacher={"runs": [str(tmp_path / "a.ckpt"), str(tmp_path / "a.ckpt")]}, **student)  # the control
