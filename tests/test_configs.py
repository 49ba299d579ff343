"""Every option of every config group composes, and its parts instantiate."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist.task import instantiate_group

from conftest import CONF_DIR, compose_cfg, run_cli, tiny_data_overrides, tiny_overrides

GROUPS = ["data", "model", "aug", "trainer", "logger", "callbacks", "debug", "hparams_search"]  # experiment: below
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes_and_instantiates(group, option, tiny_data, tmp_path):
    # debug presets are used on the default model (the ResNet); the other groups are tried on the small CNN
    base = tiny_data_overrides(tiny_data, tmp_path) if group == "debug" else tiny_overrides(tiny_data, tmp_path)
    overrides = [*base, f"{group}={option}"]
    if group == "model":  # timm models would fetch pretrained weights; there is no network here (tests/test_timm.py)
        overrides.append("++model.pretrained=false")
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    assert cfg.get(group) is not None or group in ("debug", "hparams_search")
    if group in ("data", "trainer"):
        obj = instantiate(cfg[group])
        assert isinstance(obj, pl.LightningDataModule | pl.Trainer)
    # every option leaves a model that builds (a debug preset that sets a key the default model lacks would not)
    assert isinstance(instantiate(cfg.model), pl.LightningModule)
    if group in ("callbacks", "logger"):
        objects = instantiate_group(cfg[group])
        assert objects or option == "none"


# experiment=distill needs trained teacher runs: tests/test_distill.py runs it end to end
EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml") if p.stem != "distill")
# what a CPU test must change in a preset: no GPU, no network for pretrained weights, no 224 px or GPU-sized widths
ON_CPU = {
    "convnext_gpu": ["trainer=cpu", "model.pretrained=false", "model.image_size=32"],
    "resnet50_gpu": ["trainer=cpu", "model.pretrained=false", "model.image_size=32"],
    "finetune_gpu": ["trainer=cpu", "model.pretrained=false", "model.image_size=32"],
    "best_gpu": ["trainer=cpu", "model.backbone.widths=[16,32,64]", "model.backbone.stem=16"],
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_preset_runs_a_fast_dev_run(name, tiny_data, tmp_path):
    """Each preset trains, validates and tests one batch end to end, with all its options (EMA, TTA, ...)."""
    from fmnist.train import train

    overrides = [*tiny_data_overrides(tiny_data, tmp_path), f"experiment={name}", "debug=fdr", *ON_CPU.get(name, [])]
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    train(cfg)
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert f'"choice/experiment": "{name}"' in metrics and '"test/acc"' in metrics


def test_the_default_is_the_fast_recipe_on_a_fixed_schedule_and_runs(tiny_data, tmp_path):
    """`python train.py` trains the measured recipe of `experiment=fast`, but for a fixed number of epochs (no
    wall-clock budget: the same seed gives the same run on any machine); the preset keeps the budget."""
    from fmnist.train import train

    def flat(overrides: list[str]) -> dict:
        cfg = compose_cfg("train", [f"paths.log_dir={tmp_path}", *overrides], tmp_path / "run")
        return {k: v for k, v in flatten(OmegaConf.to_container(cfg)).items() if not k.startswith("hydra.")}

    default, fast = flat([]), flat(["experiment=fast"])
    differing = {k for k in default.keys() | fast.keys() if default.get(k) != fast.get(k)}
    schedule = {"trainer.max_time", "trainer.max_epochs"}  # model.scheduler.budget reads trainer.max_time
    assert differing == {"trainer.accelerator", "tags", *schedule}, differing
    assert default["model.backbone._target_"].endswith("ResNet")
    assert default["trainer.max_time"] is None and default["trainer.max_epochs"] == 11
    assert fast["trainer.max_time"] == "00:00:04:40"
    train(compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), "debug=fdr"], tmp_path / "run"))
    assert '"test/acc"' in (tmp_path / "run" / "metrics.json").read_text()


def test_the_input_size_is_a_model_setting_with_one_home(tmp_path):
    """The model resizes its batches, so its config holds the size (28 px for the CNNs, 64 px for timm models); the
    data group has none, and an override reaches the backbone's check."""
    sizes = {m: compose_cfg("train", [f"model={m}"], tmp_path).model for m in ("resnet", "cnn", "convnext", "timm")}
    assert {m: (c.image_size, c.backbone.image_size) for m, c in sizes.items()} == {
        "resnet": (28, 28), "cnn": (28, 28), "convnext": (64, 64), "timm": (64, 64)}  # fmt: skip
    assert "image_size" not in compose_cfg("train", [], tmp_path).data
    assert compose_cfg("train", ["experiment=convnext_cpu"], tmp_path).model.backbone.image_size == 32
    assert compose_cfg("train", ["model.image_size=32"], tmp_path).model.backbone.image_size == 32


def test_the_default_recipe_is_bit_reproducible_from_its_seed(tiny_data, tmp_path):
    """The default recipe (ResNet, bf16 where the CPU has it) trained twice with one seed on a tiny config: the same
    metrics.json (but for timings and paths) and the same weights, bit for bit."""
    import json

    import torch

    from fmnist.train import train

    results = []
    for name in ("a", "b"):
        overrides = [*tiny_data_overrides(tiny_data, tmp_path / name), "trainer.max_epochs=2", "seed=3",
                     "trainer.precision=auto", "model.backbone.widths=[8,16,16]", "model.backbone.stem=8"]  # fmt: skip
        train(compose_cfg("train", overrides, tmp_path / name / "run"))
        metrics = json.loads((tmp_path / name / "run" / "metrics.json").read_text())
        varying = ("fit_seconds", "fit_images_per_second", "best_checkpoint", "run_dir")
        weights = torch.load(tmp_path / name / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        results.append(({k: v for k, v in metrics.items() if k not in varying}, weights))
    (metrics_a, weights_a), (metrics_b, weights_b) = results
    assert metrics_a == metrics_b and metrics_a["epochs"] == 2
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


ENTRY_CONFIGS = sorted(p.stem for p in Path(CONF_DIR).glob("*.yaml"))


@pytest.mark.parametrize("name", ENTRY_CONFIGS)
def test_every_entry_config_resolves_once_its_required_keys_are_given(name, tmp_path):
    """Every interpolation of every task's config resolves (a renamed key or group would break one), and the
    required keys (`???`) are exactly the inputs the task documents."""
    cfg = compose_cfg(name, [f"paths.log_dir={tmp_path}"], tmp_path / "run")
    required = sorted(k for k in cfg if k != "hydra" and OmegaConf.is_missing(cfg, k))
    for key in required:
        cfg[key] = "x"
    OmegaConf.to_container(cfg, resolve=True)  # raises on a broken interpolation
    assert cfg.task_name == name  # the run directory is outputs/<task_name>/...
    expected = {"eval": ["ckpt_path"], "export": ["ckpt_path"], "generate": ["ckpt_path"], "ensemble": ["runs"],
                "predict": ["images"], "relabel": ["runs", "source"]}  # fmt: skip
    assert required == expected.get(name, [])


def test_unknown_option_lists_the_choices():
    result = run_cli("train.py", "model=nope")
    assert result.returncode != 0
    assert "Could not find 'model/nope'" in result.stderr
    assert "cnn" in result.stderr  # Hydra lists the available options


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_help_and_cfg_job_work():
    result = run_cli("train.py", "--help")
    assert result.returncode == 0 and "model: cnn" in result.stdout
    result = run_cli("train.py", "--cfg", "job", "trainer.max_epochs=3", "seed=1")
    assert result.returncode == 0 and "max_epochs: 3" in result.stdout and "seed: 1" in result.stdout


def test_the_data_set_facts_have_one_home_that_the_python_side_agrees_with(tmp_path):
    """conf/dataset/ is where the configs read the class count and pixel statistics; the Python defaults
    (Classifier, timm's 1-channel statistics) keep the same values, and a change of the facts reaches the CNN/ResNet,
    augmentation and GAN configs (timm models take the statistics of their weights, or these Python ones)."""
    from fmnist.dataset import CLASSES, FMNIST_STATS

    cfg = compose_cfg("train", ["model=cnn", "aug=mixup"], tmp_path / "run")
    facts = OmegaConf.to_container(cfg.dataset)
    assert facts == {"num_classes": len(CLASSES), **FMNIST_STATS}
    changed = compose_cfg("train", ["model=cnn", "aug=mixup", "dataset.num_classes=7", "dataset.std=[0.5]"], tmp_path)
    readers = (changed.model.backbone.num_classes, changed.aug.num_classes, list(changed.model.std))
    assert readers == (7, 7, [0.5])
    gan = compose_cfg("gan", ["dataset.num_classes=7"], tmp_path / "gan")
    assert gan.model.generator.num_classes == gan.model.discriminator.num_classes == 7


def test_help_says_what_the_command_does():
    result = run_cli("train.py", "--help")  # every entry config shares the header (conf/hydra/default.yaml)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("fmnist train: compose a run"), result.stdout[:500]
    assert "--cfg job" in result.stdout and "== Configuration groups ==" in result.stdout
