"""End to end on tiny synthetic idx files: train, outputs, resume, eval, W&B offline, bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fmnist import PROJECT_ROOT
from fmnist.models.classifier import Classifier
from fmnist.train import train

from conftest import compose_cfg, only_run_dir, run_cli, tiny_data_overrides, tiny_overrides

RUN_FILES = ["metrics.json", "metrics.csv", "confusion_matrix.png", "learning_curves.png"]


def epoch_rows(metrics_csv: Path, key: str) -> dict[int, float]:
    with open(metrics_csv) as f:
        return {int(r["epoch"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


@pytest.fixture(scope="module")
def cli_run(tiny_data, tmp_path_factory) -> Path:
    """A two-epoch run through the real CLI, interrupted (Ctrl-C) during epoch 2, then resumed from last.ckpt."""
    root = tmp_path_factory.mktemp("cli")
    overrides = [
        *tiny_overrides(tiny_data, root),
        "data.batch_size=5",
    ]  # 100 steps per epoch: time to interrupt
    env = {**os.environ, "WANDB_MODE": "offline"}
    # Ctrl-C must reach the run: background jobs of a shell without job control (nohup, some CI runners) start
    # with SIGINT ignored, which the child would inherit, so restore the default before exec.
    first = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "train.py"), *overrides], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 240
    while not list(root.glob("train/runs/*/checkpoints/last.ckpt")) and first.poll() is None:
        assert time.monotonic() < deadline, "no last.ckpt after the first epoch"
        time.sleep(0.02)
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0]
    assert first.returncode == 128 + signal.SIGINT, "interrupted during epoch 2, exit 130: " + output[-2000:]
    assert f"Resume with: python train.py ckpt_path={root / 'train' / 'runs'}" in output, output[-2000:]
    run = only_run_dir(root)
    assert not (run / "metrics.json").exists(), "an interrupted run must not look complete"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    (run / "interrupted_at_step.txt").write_text(str(last["global_step"]))
    resumed = run_cli("train.py", *overrides, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run / "resumed_output.txt").write_text(resumed.stdout + resumed.stderr)
    return run


def test_cli_run_writes_every_output(cli_run):
    for name in RUN_FILES:
        assert (cli_run / name).is_file(), name
    assert (cli_run / ".hydra" / "config.yaml").is_file()
    output = (cli_run / "resumed_output.txt").read_text()
    assert "val/acc_best" in output, output[-3000:]
    for noise in ("litlogger", "litmodels", "LeafSpec"):  # Lightning's adverts and its use of a deprecated class
        assert noise not in output, output[-3000:]
    assert {p.name for p in (cli_run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    metrics = json.loads((cli_run / "metrics.json").read_text())
    for key in (
        "val/acc_best",
        "test/acc",
        "test/nll",
        "test/ece",
        "test/acc_t_shirt_top",
        "test/acc_ankle_boot",
    ):
        assert 0 <= metrics[key] <= (1 if key != "test/nll" else 10), key
    assert metrics["test/acc"] > 0.5, "the tiny data set is easy: a working pipeline learns it"
    assert metrics["precision"] == "32-true", "the run records the precision it trained with"
    for png in ("confusion_matrix.png", "learning_curves.png"):
        with Image.open(cli_run / png) as image:
            assert image.size[0] > 500 and image.size[1] > 300


def test_resume_continues_epochs_optimizer_and_best_tracking(cli_run):
    final = json.loads((cli_run / "metrics.json").read_text())
    assert int((cli_run / "interrupted_at_step.txt").read_text()) == 100  # last.ckpt: the end of epoch 1
    assert final["epochs"] == 2 and final["global_step"] == 200  # continued, not restarted
    val_acc = epoch_rows(cli_run / "metrics.csv", "val/acc")
    assert sorted(val_acc) == [0, 1], "metrics.csv keeps epoch 0 of the first run and adds epoch 1"
    assert final["val/acc_best"] == pytest.approx(max(val_acc.values()))
    last = torch.load(cli_run / "checkpoints" / "last.ckpt", weights_only=True)
    adam_steps = {int(s["step"]) for s in last["optimizer_states"][0]["state"].values()}
    assert adam_steps == {final["global_step"]}, "optimizer state continued from the first run"
    assert last["lr_schedulers"][0]["last_epoch"] == final["global_step"]
    (ckpt_state,) = [v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val/acc'")]
    assert ckpt_state["dirpath"] == str(cli_run / "checkpoints")
    assert float(ckpt_state["best_model_score"]) == pytest.approx(max(val_acc.values()))
    assert len(list((cli_run.parent).iterdir())) == 1, "the resumed run continued in its own directory"
    (attempt,) = (cli_run / ".hydra").glob("resumed_*")  # the resume's own record, beside the first one
    assert "ckpt_path=" in (attempt / "overrides.yaml").read_text()
    assert "ckpt_path=" not in (cli_run / ".hydra" / "overrides.yaml").read_text(), "the first config is kept"


def test_eval_reproduces_test_accuracy(cli_run, tiny_data, tmp_path):
    trained = json.loads((cli_run / "metrics.json").read_text())
    assert trained["tta"] == "flip", "the default (aug=flip, tta=auto) tests with mirrored views"
    result = run_cli(
        "eval.py", *tiny_data_overrides(tiny_data, tmp_path), f"ckpt_path={cli_run / 'checkpoints' / 'best.ckpt'}",
        "splits=[val,test]", f"tta={trained['tta']}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    eval_dir = only_run_dir(tmp_path, "eval")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert evaluated["val/acc"] == pytest.approx(trained["val/acc_best"], abs=1e-6)
    assert (eval_dir / "confusion_matrix.png").is_file() and (eval_dir / "confusion_matrix_val.png").is_file()
    assert (eval_dir / "eval.log").is_file(), "each command's log is named after it"


def test_checkpoint_rebuilds_its_model_without_pickled_code(cli_run):
    path = cli_run / "checkpoints" / "best.ckpt"
    model = Classifier.load_from_checkpoint(path, weights_only=True).eval()
    state = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert model.val_acc_best.compute() > 0, "the best validation accuracy is part of the checkpoint"
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    assert model(images).shape == (4, 10)


def test_train_function_returns_the_validation_metric(cfg_train):
    value = train(cfg_train)
    metrics = json.loads((Path(cfg_train.paths.output_dir) / "metrics.json").read_text())
    assert value == pytest.approx(metrics["val/acc_best"])


def test_last_checkpoint_is_the_last_epoch_whatever_validation_chose(tiny_data, tmp_path):
    # Monitoring the epoch number with mode=min makes epoch 0 the best one for sure, so the two files must differ:
    # Lightning's save_last alone would write last.ckpt only when best.ckpt improves (epoch 0 here).
    overrides = ["trainer.max_epochs=3", "callbacks.model_checkpoint.monitor=epoch"]
    overrides.append("callbacks.model_checkpoint.mode=min")
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), *overrides], tmp_path / "run")
    train(cfg)
    checkpoints = tmp_path / "run" / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"best.ckpt", "last.ckpt"}
    assert torch.load(checkpoints / "best.ckpt", weights_only=True)["epoch"] == 0
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert Path(metrics["best_checkpoint"]).name == "best.ckpt", "the test split is scored with the chosen weights"


def test_wandb_offline_one_run_per_job(tiny_data, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_ids = []
    for job in range(2):  # two jobs in one process, as in a multirun
        out = tmp_path / f"job{job}"
        cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), "logger=wandb", "trainer.max_epochs=1"], out)
        train(cfg)
        (offline_run,) = (out / "wandb").glob("offline-run-*")
        run_ids.append(offline_run.name.rsplit("-", 1)[-1])
        assert any(offline_run.glob("*.wandb"))
    assert run_ids[0] != run_ids[1]
    assert "WANDB_MODE" not in os.environ, "offline mode must not leak into the process environment"


def test_resuming_with_another_network_is_refused_before_training(cli_run, tiny_data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)  # the resumed run writes into its own directory: keep the fixture's intact
    overrides = [*tiny_overrides(tiny_data, tmp_path), "data.batch_size=5", "model.backbone.hidden=16"]
    result = run_cli("train.py", *overrides, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert re.search(r"model\.backbone\.hidden: \d+ -> 16\n", result.stderr + result.stdout), result.stdout[-2000:]
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2  # the finished run's figures stand
    config = (run / ".hydra" / "config.yaml").read_text()
    assert config == (cli_run / ".hydra" / "config.yaml").read_text(), "the run's first config is not overwritten"


def test_a_task_that_fails_in_a_used_run_directory_does_not_look_complete(cfg_train, tmp_path):
    """A resumed run reuses its directory: the earlier metrics.json goes when the task starts, not when it ends."""
    from fmnist.task import task_run

    run = Path(cfg_train.paths.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics.json").write_text('{"test/acc": 0.9}')
    with pytest.raises(RuntimeError, match="fails mid-run"), task_run(cfg_train, csv=False):
        raise RuntimeError("fails mid-run")
    assert not (run / "metrics.json").exists()


def test_missing_checkpoint_fails_before_training(tiny_data, tmp_path):
    result = run_cli("train.py", *tiny_overrides(tiny_data, tmp_path), f"ckpt_path={tmp_path / 'nope.ckpt'}")
    assert result.returncode == 2
    assert "nope.ckpt does not exist" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.ckpt"))


def test_not_a_checkpoint_is_refused(tiny_data, tmp_path):
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"not a checkpoint at all")
    result = run_cli("eval.py", *tiny_data_overrides(tiny_data, tmp_path), f"ckpt_path={bogus}")
    assert result.returncode == 2
    assert "is unreadable" in result.stderr + result.stdout


def test_corrupt_data_file_names_the_file(tiny_data, tmp_path):
    directory, checksums = tiny_data
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in checksums:
        data = (directory / name).read_bytes()
        (broken / name).write_bytes(data[: len(data) // 2] if name.startswith("t10k-images") else data)
    overrides = [*tiny_overrides(tiny_data, tmp_path), f"data.data_dir={broken}"]
    result = run_cli("train.py", *overrides)
    output = result.stderr + result.stdout
    assert result.returncode == 2
    assert "t10k-images-idx3-ubyte.gz is not a readable gzip file" in output and "Fix: delete" in output
    assert "Traceback" not in output
    assert not list(tmp_path.rglob("metrics.json"))
