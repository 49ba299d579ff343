"""The installed package, away from the checkout: a wheel carries the configs, the shipped model and the console
scripts, and its predict task classifies an image with nothing but what the wheel installed."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image

from fmnist import PROJECT_ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # from a copy: setuptools keeps a build/ directory in the source tree, whose leftovers would land in the wheel
    top = {
        ".git",
        ".venv",
        "outputs",
        "data",
        "wandb",
        "build",
        "fmnist.egg-info",
        "docs",
    }  # only at the top: conf/data stays

    def skip(directory: str, names: list[str]) -> set[str]:
        return (top if Path(directory) == PROJECT_ROOT else set()) | {"__pycache__"} & set(names)

    source = shutil.copytree(PROJECT_ROOT, out / "source", symlinks=True, ignore=skip)
    cmd = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w"]
    subprocess.run([*cmd, str(out)], check=True, capture_output=True, timeout=300)
    (path,) = out.glob("fmnist-*.whl")
    return path


def test_wheel_carries_configs_model_and_console_scripts(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"fmnist/conf/{p.relative_to(PROJECT_ROOT / 'conf')}" for p in (PROJECT_ROOT / "conf").rglob("*.yaml")}
    assert configs <= names, sorted(configs - names)[:5]
    assert {"fmnist/shipped/fmnist_cnn.safetensors", "fmnist/shipped/fmnist_cnn.json"} <= names
    assert "fmnist/shipped/fmnist_gan.safetensors" in names, "aug=gan samples it"
    scripts = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    listed = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert {"fmnist-train", "fmnist-predict", "fmnist-export"} <= set(scripts)
    assert all(f"{name} = {target}" in listed for name, target in scripts.items())


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_installed_predict_runs_outside_the_checkout(wheel, tmp_path):
    target, work = tmp_path / "site", tmp_path / "elsewhere"
    work.mkdir()
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    image = np.zeros((28, 28), dtype=np.uint8)
    image[4:24, 10:18] = 200  # a light bar on black: some garment; what matters is that a prediction comes out
    Image.fromarray(image).save(work / "bar.png")
    code = "import sys, fmnist; print('from', fmnist.__file__); from fmnist.predict.task import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "images=bar.png", "preprocess=none", "out=preds.csv"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(target), "HYDRA_FULL_ERROR": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"from {target}" in result.stdout, "imported the installed copy, not the checkout"
    rows = (work / "preds.csv").read_text().splitlines()
    assert rows[0].startswith("file,class,index,probability,") and rows[1].startswith("bar.png,")
    assert (work / "outputs" / "predict" / "runs").is_dir(), "outputs land where the command runs"


def loaded_modules(module: str) -> set[str]:
    """The fmnist modules that importing `module` loads, in a fresh interpreter."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('fmnist')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return set(result.stdout.split())


def imported_names(package: str) -> dict[str, set[str]]:
    """Every fmnist module each file of `package` imports, lazy imports inside functions included."""
    found = {}
    for path in (PROJECT_ROOT / package.replace(".", "/")).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(PROJECT_ROOT))] = {n for n in names if n.startswith(("fmnist", "hydra_plugins"))}
    return found


def test_the_layers_import_downwards_only():
    """utils <- data <- models <- tasks: a model knows the data set's facts (fmnist.dataset) but loads none of the data
    pipeline, and no data module imports a model or a task, not even lazily."""
    model_side = loaded_modules("fmnist.models.classifier")
    assert "fmnist.dataset" in model_side
    assert not {m for m in model_side if m.startswith("fmnist.data.") or m == "fmnist.data"}
    upper = ("fmnist.models", "fmnist.gan", "fmnist.predict", "fmnist.ensemble", "fmnist.train", "fmnist.evaluate")
    upward = {f: {n for n in names if n.startswith(upper)} for f, names in imported_names("fmnist.data").items()}
    assert not {f: names for f, names in upward.items() if names}
    tasks = upper[1:]
    upward = {f: {n for n in names if n.startswith(tasks)} for f, names in imported_names("fmnist.models").items()}
    assert not {f: names for f, names in upward.items() if names}
    # utils is the floor: even its config resolvers and the task wrapper live above it (fmnist.resolvers, fmnist.task)
    above_utils = (
        "fmnist.data",
        "fmnist.dataset",
        *upper,
        "fmnist.task",
        "fmnist.resolvers",
        "fmnist.robustness",
        "hydra_plugins",
    )  # the sweeper plugin sits on top of everything
    upward = {f: {n for n in names if n.startswith(above_utils)} for f, names in imported_names("fmnist.utils").items()}
    assert not {f: names for f, names in upward.items() if names}
