"""Wrong config values and misspelled keys end in one message naming the key, the value given and what is expected,
with exit code 2 and no traceback (fmnist/utils/config_check.py) — through the real commands — while every shipped
config (each option of each group, each experiment preset, each entry config) passes the same check."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, InstantiationException, OverrideParseException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist.utils.config_check import (
    ConfigError,
    check_config_values,
    checked,
    composition_error,
    instantiation_error,
    report_composition_errors,
)

from conftest import CONF_DIR, compose_cfg, run_cli, tiny_data_overrides

# (command, overrides, what the one message must say): the key with the value given, and what is expected
CLI_CASES = {
    "seed": ("train.py", ["seed=foo"], ["seed=foo", "expected a whole number or null"]),
    "batch_size text": ("train.py", ["data.batch_size=abc"], ["data.batch_size=abc", "expected a whole number"]),
    "batch_size float": ("train.py", ["data.batch_size=1.5"], ["data.batch_size=1.5", "expected a whole number"]),
    "lr": ("train.py", ["model.optimizer.lr=abc"], ["model.optimizer.lr=abc", "expected a number"]),
    "max_epochs": ("train.py", ["trainer.max_epochs=-3"], ["trainer.max_epochs=-3", "non-negative integer or -1"]),
    "optimizer value": ("train.py", ["model.optimizer.lr=-1"], ["model.optimizer", "Invalid learning rate: -1"]),
    "monitor": ("train.py", ["callbacks.model_checkpoint.monitor=val/foo"], ["monitor=val/foo", "logs no such metric"]),
    "label smoothing": ("train.py", ["model.label_smoothing=1.5"], ["model.label_smoothing=1.5", "in [0, 1)"]),
    "endless schedule": ("train.py", ["trainer.max_epochs=-1"], ["model.scheduler", "give it a trainer.max_time"]),
    "misspelled key": ("train.py", ["trainer.max_epoch=3"], ["trainer.max_epoch=3", "you mean trainer.max_epochs=3?"]),
    "eval threads": ("eval.py", ["ckpt_path=none.ckpt", "threads=abc"], ["threads=abc", "expected a whole number"]),
    "export calibrate": ("export.py", ["ckpt_path=none.ckpt", "calibrate=maybe"], ["calibrate=maybe", "true or false"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def cli_results(tiny_data, tmp_path_factory) -> dict:
    """Every command of the table, run at once (each is a fresh Python process that stops before any data is read)."""
    root = tmp_path_factory.mktemp("config-errors")

    def run(case: str):
        script, overrides, _ = CLI_CASES[case]
        common = tiny_data_overrides(tiny_data, root / case.replace(" ", "_"))
        common = [o for o in common if script != "export.py" or not o.startswith("trainer.")]  # export has no trainer
        return run_cli(script, *common, *overrides)

    with ThreadPoolExecutor(len(CLI_CASES)) as pool:
        return dict(zip(CLI_CASES, pool.map(run, CLI_CASES), strict=True))


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_a_wrong_value_ends_in_one_message_and_exit_code_2(cli_results, case):
    result = cli_results[case]
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "HYDRA_FULL_ERROR=1 for a complete" not in output, output[-3000:]
    errors = [line for line in output.splitlines() if "ConfigError" in line]
    assert len(errors) == 1, output[-3000:]
    for expected in CLI_CASES[case][2]:
        assert expected in errors[0], errors[0]
    assert "Epoch" not in output  # refused before training


# --- the checker over every shipped config: no false alarms ----------------------------------------------------
GROUPS = ("aug", "callbacks", "debug", "hparams_search", "logger", "model", "trainer")
OPTIONS = {group: sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")) for group in GROUPS}
# every option of every group at least once: the i-th option of each group together (the last where it has fewer)
COMBINATIONS = [
    [f"{g}={o[min(i, len(o) - 1)]}" for g, o in OPTIONS.items()] for i in range(max(map(len, OPTIONS.values())))
]
ENTRY_CONFIGS = sorted(p.stem for p in Path(CONF_DIR).glob("*.yaml"))


@pytest.mark.parametrize(
    "config_name, overrides",
    [("train", [])]
    + [("train", c) for c in COMBINATIONS]
    + [("train", [f"experiment={e}"]) for e in sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))]
    + [(name, []) for name in ENTRY_CONFIGS],
)
def test_every_shipped_config_passes_the_check(tmp_path, config_name, overrides):
    cfg = compose_cfg(config_name, overrides, tmp_path)
    for key in OmegaConf.missing_keys(cfg) - OmegaConf.missing_keys(cfg.hydra):  # the required inputs filled in
        OmegaConf.update(cfg, key, "x")
    check_config_values(cfg)


def test_every_group_option_is_covered():
    for group, options in OPTIONS.items():
        assert {c for combination in COMBINATIONS for c in combination} >= {f"{group}={o}" for o in options}


# --- the checker over nested nodes, in-process ------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=cnn", "model.backbone.stages=abc"], "model.backbone.stages=abc: expected a list"),
        (["model=cnn", "model.backbone.dropout=x"], "model.backbone.dropout=x: expected a number"),
        (["callbacks.model_checkpoint.save_top_k=abc"], "callbacks.model_checkpoint.save_top_k=abc"),
        (["+callbacks.lr_monitor.logging_interva=step"], "did you mean callbacks.lr_monitor.logging_interval?"),
        (["logger=tensorboard", "logger.tensorboard.default_hp_metric=maybe"], "hp_metric=maybe: expected true or fa"),
        (["aug=gan", "aug.n_per_class=1.5"], "aug.n_per_class=1.5"),
        (["trainer.devices=1.5"], "trainer.devices=1.5"),
        (["experiment=distill", "teacher.runs=[a]", "model.label_smoothing=x"], "label_smoothing=x: expected a number"),
        (["data.mirrors=http://x"], "data.mirrors=http://x: expected a list"),
        (["threads=0"], "threads=0: expected at least 1"),
        (["model.backbone.widths=[a,b]"], r"model.backbone.widths=\['a', 'b'\]: expected a list of whole numbers"),
        (["test=maybe"], "test=maybe: expected true or false"),
    ],
)
def test_nested_and_top_level_values_are_checked(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        check_config_values(compose_cfg("train", overrides, tmp_path))


def test_values_a_target_accepts_pass(tmp_path):
    """An int where a float is expected, null for an optional value, a time string, a path: all fine."""
    overrides = ["seed=null", "data.train_fraction=1", "model.optimizer.lr=1", "trainer.max_time=00:00:05:00",
                 "trainer.devices=[0]", "data.data_dir=/tmp/x", "threads=2"]  # fmt: skip
    check_config_values(compose_cfg("train", overrides, tmp_path))


def test_a_required_value_left_out_is_named(tmp_path):
    with pytest.raises(
        ConfigError, match=r"ckpt_path is required: add ckpt_path=<a run directory, a run's checkpoints/\*.ckpt or"
    ):
        check_config_values(compose_cfg("eval", [], tmp_path))
    with pytest.raises(ConfigError, match=r"images is required: add images=<file, folder or glob>, e.g."):
        check_config_values(compose_cfg("predict", [], tmp_path))


# --- what only instantiating reveals, and what Hydra refuses while composing -------------------------------------
def test_an_error_raised_while_instantiating_names_the_key(tmp_path):
    cfg = compose_cfg("train", ["model=cnn", "model.backbone.dropout=1.5"], tmp_path)
    check_config_values(cfg)  # a float: only torch knows it must be a probability
    with pytest.raises(InstantiationException) as raised:
        instantiate(cfg.model)
    error = instantiation_error(raised.value, cfg)
    assert str(error).startswith("model.backbone.dropout=1.5: dropout probability has to be between 0 and 1")


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainr.max_epochs=3", "trainr.max_epochs=3: no such key; did you mean trainer.max_epochs=3?"),
        (
            "trainer.gradient_clip_vall=1",
            "trainer.gradient_clip_vall=1: no such key; did you mean +trainer.gradient_clip_val=1?",
        ),
        ("modle=cnn", "modle=cnn: no such key; did you mean model=cnn?"),
        ("trainer.zzz=1", "trainer.zzz=1: no such key; `python "),  # ... --cfg job` lists the keys
        ("lr=0.1", "lr=0.1: no such key; did you mean model.optimizer.lr=0.1?"),  # not +lr, which nothing reads
        ("optimizer.lr=3", "optimizer.lr=3: no such key; did you mean model.optimizer.lr=3?"),
        ("max_epochs=3", "max_epochs=3: no such key; did you mean trainer.max_epochs=3?"),
        (
            "model=resnt",
            "model=resnt: Could not find 'model/resnt'; did you mean model=resnet? (options: cnn, convnext, resnet, ",
        ),
    ],
)
def test_an_unknown_key_names_the_closest_valid_one(tmp_path, override, message):
    with pytest.raises(ConfigCompositionException) as raised:
        compose_cfg("train", [override], tmp_path)
    assert str(composition_error(raised.value, [override])).startswith(message)


@pytest.mark.parametrize(
    "argument, message",
    [
        ("shots/shirt.png", "shots/shirt.png: arguments are key=value; give it as images=shots/shirt.png"),
        ("runs/x/best.ckpt", "runs/x/best.ckpt: arguments are key=value; give it as ckpt_path=runs/x/best.ckpt"),
    ],
)
def test_a_bare_argument_says_which_key_takes_it(tmp_path, argument, message):
    with pytest.raises(OverrideParseException) as raised:
        compose_cfg("predict", [argument], tmp_path)
    assert str(composition_error(raised.value, [argument])).startswith(message)


def test_the_task_runs_with_the_users_hydra_full_error(tmp_path, monkeypatch):
    """Hydra's full errors are switched on only while it composes the config; the task sees the user's setting."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    cfg = compose_cfg("train", [], tmp_path)
    seen = []
    entry = report_composition_errors(lambda: checked(lambda c: seen.append(os.environ.get("HYDRA_FULL_ERROR")))(cfg))
    entry()
    assert seen == ["0"] and os.environ["HYDRA_FULL_ERROR"] == "0"


def test_one_name_where_a_list_is_taken_is_a_list_of_one():
    """`splits=test`, `methods=soft`, `classes=3`: not the string's characters."""
    from omegaconf import ListConfig

    from fmnist.robustness import check_corruptions
    from fmnist.utils.containers import as_list
    from fmnist.utils.errors import UserError

    assert as_list("test", "splits") == ["test"] and as_list(3, "classes") == [3]
    assert as_list(ListConfig(["val", "test"]), "splits") == ["val", "test"]
    with pytest.raises(UserError, match=r"splits=\{'a': 1\}: expected a name or a list"):
        as_list({"a": 1}, "splits")
    with pytest.raises(UserError, match=r"splits=\[\['val'\]\]: expected a name or a list"):  # not a TypeError later
        as_list(ListConfig([["val"]]), "splits")
    with pytest.raises(UserError, match=r"Unknown corruption\(s\) \[.True.\]: choose .all."):  # corruptions=true
        check_corruptions(True)
    with pytest.raises(UserError, match=r"No corruption named: choose .all."):  # corruptions=[] is not a clean eval
        check_corruptions(ListConfig([]))
