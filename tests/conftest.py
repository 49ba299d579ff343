"""Shared fixtures: tiny synthetic Fashion-MNIST idx files (so the real loader runs), composed configs, CLI runs."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

import fmnist.resolvers  # noqa: F401  (registers the config resolvers)
from fmnist import PROJECT_ROOT
from fmnist.data.idx import IMAGE_MAGIC, load_idx_gz
from fmnist.data.sources import FILES, SYSTEM_DIR

CONF_DIR = str(PROJECT_ROOT / "conf")
# under pytest-xdist (the default: one worker per core) every worker and the commands it starts use one CPU thread:
# with all cores each, the workers' threads contend for the same cores and tiny epochs ran several times slower
ONE_THREAD = ["threads=1"] if os.environ.get("PYTEST_XDIST_WORKER") else []
if ONE_THREAD:
    torch.set_num_threads(1)
REAL_DATA = Path(SYSTEM_DIR)
HAVE_REAL_DATA = all((REAL_DATA / name).is_file() for name, _ in FILES.values())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under FMNIST_CI=1 (.ci/run, which installs the data, PostgreSQL and chromium) a skipped test fails: a broken
    install or a regression in a server's start-up must not pass as a skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("FMNIST_CI") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under FMNIST_CI=1, where every test must run: {report.longrepr}"


def idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding of a uint8 array (magic 0x0000_08_<ndim>, big-endian sizes, raw bytes)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Learnable 28x28 images: class c is a bright horizontal bar at rows 2c..2c+3, on noise."""
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.int64)
    for i, c in enumerate(labels):
        images[i, 2 * c + 2 : 2 * c + 6, 4:24] += rng.integers(120, 190)
    return np.clip(images, 0, 255).astype(np.uint8)


def write_tiny_fmnist(directory: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> dict[str, str]:
    """Write the four `.gz` files of a tiny balanced data set; returns the MD5s of their decompressed bytes."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = make_images(labels, rng), labels
    checksums = {}
    for key, (name, _) in FILES.items():
        raw = idx_bytes(arrays[key])
        (directory / name).write_bytes(gzip.compress(raw, mtime=0))
        checksums[name] = hashlib.md5(raw).hexdigest()
    return checksums


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    directory = tmp_path_factory.mktemp("tiny-fmnist")
    return directory, write_tiny_fmnist(directory)


def checksum_override(checksums: dict[str, str]) -> str:
    return "data.checksums={" + ",".join(f"{k}:{v}" for k, v in checksums.items()) + "}"


def tiny_data_overrides(tiny_data, output_root: Path) -> list[str]:
    """Overrides that point any command at the tiny data set and write under output_root."""
    directory, checksums = tiny_data
    return [
        f"data.data_dir={directory}",
        "data.system_dir=null",
        "data.download=false",
        checksum_override(checksums),
        "data.val_size=100",
        "data.batch_size=50",
        "data.eval_batch_size=100",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
        f"paths.log_dir={output_root}",
        *ONE_THREAD,
    ]


def tiny_overrides(tiny_data, output_root: Path) -> list[str]:
    """`tiny_data_overrides` plus the small CNN on a short, fast training schedule (a later `model=` replaces it)."""
    schedule = ["trainer.max_epochs=2", "model.optimizer.lr=0.01"]
    return [*tiny_data_overrides(tiny_data, output_root), "model=cnn", *schedule]


def compose_cfg(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose an entry config like Hydra would, with the run directory set to output_dir."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg


@pytest.fixture
def cfg_train(tiny_data, tmp_path) -> DictConfig:
    return compose_cfg("train", tiny_overrides(tiny_data, tmp_path), tmp_path / "run")


def run_cli(script: str, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run one of the project's commands (`train.py`, `eval.py`, ...) the way a user does."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / script), *args],
        capture_output=True, text=True, env=full_env, cwd=PROJECT_ROOT, timeout=timeout,
    )  # fmt: skip


def only_run_dir(root: Path, task: str = "train") -> Path:
    runs = sorted((root / task / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


# --- a classifier checkpoint and test images for predict/export ------------------------------------------------
@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory) -> Path:
    """A Classifier with the CNN config and untrained weights, as a Lightning-style .ckpt."""
    root = tmp_path_factory.mktemp("model")
    cfg = compose_cfg("train", ["data.system_dir=null", "model=cnn"], root / "run")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    path = root / "random.ckpt"
    split = {"val_size": 5000, "split_seed": 0, "train_fraction": 1.0, "batch_size": 128}  # as a datamodule saves it
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                "datamodule_hyper_parameters": split}, path)  # fmt: skip
    return path


@pytest.fixture(scope="module")
def test_images() -> tuple[np.ndarray, np.ndarray]:
    """The first 40 real test images and labels if the data set is installed, else structured random ones."""
    if HAVE_REAL_DATA:
        images = load_idx_gz(REAL_DATA / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, None)[:40].numpy()
        labels = load_idx_gz(REAL_DATA / "t10k-labels-idx1-ubyte.gz", 2049, None)[:40].numpy()
        return images, labels
    rng = np.random.default_rng(0)
    images = np.zeros((40, 28, 28), np.uint8)
    for i in range(40):
        top, left = rng.integers(0, 10, 2)
        images[i, top : top + 18, left : left + 18] = rng.integers(40, 255, (18, 18))
    return images, np.zeros(40, np.int64)
