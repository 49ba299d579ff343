"""Resuming through the real CLI: SIGTERM leaves an incomplete run and prints the command that resumes it; that command
(ckpt_path alone) continues with the run's own config; changing what the run trains is refused, safe settings apply."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from omegaconf import OmegaConf

from fmnist import PROJECT_ROOT
from fmnist.utils.errors import UserError
from fmnist.utils.resume import resume_config

from conftest import compose_cfg, only_run_dir, run_cli, tiny_overrides

# 250 training images at batch 5: 50 steps per epoch (the full tiny set would give 100), 3 epochs (the default 7)
RUN_OVERRIDES = ["data.batch_size=5", "data.train_fraction=0.5", "trainer.max_epochs=3"]
STEPS_PER_EPOCH = 50


def resume_line(text: str) -> str:
    (command,) = re.findall(r"Resume with: (python train\.py .+)$", text, flags=re.MULTILINE)
    return command


@pytest.fixture(scope="module")
def stopped(tiny_data, tmp_path_factory) -> dict:
    """A run stopped by SIGTERM during its second epoch (with copies of it as stopped), then resumed with the command
    it printed."""
    root = tmp_path_factory.mktemp("resume")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}
    command = [sys.executable, str(PROJECT_ROOT / "train.py"), *tiny_overrides(tiny_data, root), *RUN_OVERRIDES]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not list(root.glob("train/runs/*/checkpoints/last.ckpt")) and first.poll() is None:
        assert time.monotonic() < deadline, "no last.ckpt after the first epoch"
        time.sleep(0.02)
    first.send_signal(signal.SIGTERM)
    output = first.communicate(timeout=120)[0]
    run = only_run_dir(root)
    state = {"returncode": first.returncode, "output": output, "log": (run / "train.log").read_text(),
             "complete": (run / "metrics.json").exists(),
             "step": torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]}  # fmt: skip
    for copy in ("refused", "safe"):
        shutil.copytree(run, root / copy)
    resumed = run_cli("train.py", *shlex.split(resume_line(output))[2:])
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    through = tmp_path_factory.mktemp("ran-through")  # the same command, never stopped
    ran_through = run_cli("train.py", *tiny_overrides(tiny_data, through), *RUN_OVERRIDES)
    assert ran_through.returncode == 0, ran_through.stdout[-3000:] + ran_through.stderr[-3000:]
    return {**state, "run": run, "root": root, "ran_through": only_run_dir(through)}


def test_sigterm_leaves_an_incomplete_run_and_prints_how_to_resume_it(stopped):
    assert stopped["returncode"] == 128 + signal.SIGTERM, stopped["output"][-3000:]
    assert not stopped["complete"], "an interrupted run must not look complete"
    last = stopped["run"] / "checkpoints" / "last.ckpt"
    assert resume_line(stopped["output"]) == f"python train.py ckpt_path={last}", "no other override is needed"
    assert resume_line(stopped["log"]) == resume_line(stopped["output"]), "the run's log file has it too"
    assert "Traceback" not in stopped["output"]


def test_ckpt_path_alone_resumes_with_the_runs_own_config(stopped):
    run = stopped["run"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < stopped["step"] < 3 * STEPS_PER_EPOCH and stopped["step"] % STEPS_PER_EPOCH == 0, "stopped mid-run"
    # its 3 epochs of 50 steps, not today's defaults (7 epochs, 100 steps each on the full training split)
    assert metrics["epochs"] == 3 and metrics["global_step"] == 3 * STEPS_PER_EPOCH
    assert metrics["choice/model"] == "cnn", "the run's own model (today's default is resnet)"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["datamodule_hyper_parameters"]["train_fraction"] == 0.5
    (attempt,) = (run / ".hydra").glob("resumed_*")
    assert OmegaConf.load(attempt / "config.yaml").data.train_fraction == 0.5, "the attempt records what it ran"
    assert OmegaConf.load(run / ".hydra" / "config.yaml").ckpt_path is None, "the run's first config is kept"


def test_a_resumed_run_trains_what_an_uninterrupted_one_does(stopped):
    """The same batches, augmentations and weights after the resume (the generators' states are checkpointed)."""
    runs = (stopped["run"], stopped["ran_through"])
    resumed, through = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in runs)
    assert resumed["global_step"] == through["global_step"] == 3 * STEPS_PER_EPOCH
    for key, weights in through["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], weights), key
    figures = [json.loads((r / "metrics.json").read_text()) for r in runs]
    for key in ("val/acc_best", "test/acc", "test/nll", "temperature"):
        assert figures[0][key] == figures[1][key], key


def test_changing_what_the_run_trains_is_refused(stopped):
    run = stopped["root"] / "refused"
    before = (run / "checkpoints" / "last.ckpt").read_bytes()
    asked = ["trainer.max_epochs=5", "data.train_fraction=1.0", "model=resnet", "threads=1"]
    result = run_cli("train.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", *asked)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output, output[-3000:]
    for line in ("trainer.max_epochs: 3 -> 5", "data.train_fraction: 0.5 -> 1.0", "model: cnn -> resnet (changes"):
        assert line in output
    assert "threads:" not in output, "a safe setting is no difference"
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == before and not (run / "metrics.json").exists()
    assert not list((run / ".hydra").glob("resumed_*")), "a refused attempt leaves no config folder in the run"
    damaged = stopped["root"] / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "checkpoints" / "last.ckpt").write_bytes(before[: len(before) // 2])
    result = run_cli("train.py", f"ckpt_path={damaged / 'checkpoints' / 'last.ckpt'}")
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    assert not list((damaged / ".hydra").glob("resumed_*")), "nor one refused by the task's own checks"


def test_safe_settings_apply_to_the_resumed_attempt(stopped):
    run = stopped["root"] / "safe"
    asked = ["threads=1", "logger=tensorboard", "callbacks.rich_progress_bar=null", "tags=[resumed]"]
    result = run_cli("train.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", *asked)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert any((run / "tensorboard").rglob("events.out.tfevents.*")), "the logger asked for is used"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 3 * STEPS_PER_EPOCH, "still the run's own schedule and data"
    (attempt,) = (run / ".hydra").glob("resumed_*")
    recorded = OmegaConf.load(attempt / "config.yaml")
    assert recorded.threads == 1 and list(recorded.tags) == ["resumed"] and recorded.callbacks.rich_progress_bar is None


def test_a_complete_run_is_not_resumed(stopped):
    run = stopped["run"]  # resumed to the end by the fixture; composed in-process: this refusal needs no subprocess
    cfg = compose_cfg("train", [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], run)
    with pytest.raises(UserError, match=re.escape("is complete (it wrote metrics.json): there is nothing to resume")):
        resume_config(cfg)


def test_a_run_saved_with_the_input_size_in_data_resumes_with_it_in_the_model(tmp_path):
    """Runs started before model.image_size kept the size in `data` and the model interpolated it."""
    from fmnist.utils.resume import saved_config

    old = {"data": {"batch_size": 50, "image_size": 32},
           "model": {"image_size": "${data.image_size}", "backbone": {"image_size": "${..image_size}"}}}  # fmt: skip
    OmegaConf.save(OmegaConf.create(old), tmp_path / "config.yaml")
    cfg = saved_config(tmp_path / "config.yaml")
    assert "image_size" not in cfg.data and cfg.model.image_size == 32 and cfg.model.backbone.image_size == 32
    # a GAN run of that time: the size belonged to its scoring classifier (the GAN itself takes none)
    old_gan = {"data": {"image_size": 28}, "model": {"generator": {"width": 16}},
               "metrics": {"classifier": {"image_size": "${data.image_size}"}}}  # fmt: skip
    OmegaConf.save(OmegaConf.create(old_gan), tmp_path / "gan.yaml")
    cfg = saved_config(tmp_path / "gan.yaml")
    assert "image_size" not in cfg.data and "image_size" not in cfg.model and cfg.metrics.classifier.image_size == 28


def test_an_exported_model_is_no_run_to_resume(tmp_path):
    from fmnist.train import check_config

    shipped = PROJECT_ROOT / "models" / "fmnist_resnet.safetensors"
    with pytest.raises(UserError, match=r"resumes a run from its checkpoints/last.ckpt; a .safetensors file holds no"):
        check_config(compose_cfg("train", [f"ckpt_path={shipped}"], tmp_path))
