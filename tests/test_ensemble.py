"""Ensembles end to end: three tiny trained runs combined through the CLI, fitting on validation only, the
leaderboard, and refused inputs (including a booby-trapped checkpoint)."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch

import fmnist.ensemble.run as ensemble_run
from fmnist.ensemble.members import load_members
from fmnist.models.classifier import Classifier
from fmnist.predict.export import export
from fmnist.runs import collect_runs
from fmnist.utils.errors import UserError

from conftest import compose_cfg, run_cli, tiny_data_overrides, tiny_overrides

METHODS = ("soft", "hard", "val_acc", "greedy")


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory) -> Path:
    """Three one-epoch runs with seeds 0-2 (one multirun, as a user would), and a 32-px member of another
    architecture (untrained: a checkpoint whose model adapts its own input)."""
    root = tmp_path_factory.mktemp("ensemble")
    sweep = root / "train" / "multiruns" / "sweep"
    small = ["model.backbone.stages=[[8],[16]]", "model.backbone.hidden=32", "data.batch_size=100"]  # fast
    args = [*tiny_overrides(tiny_data, root), *small, "trainer.max_epochs=1", "seed=0,1,2", f"hydra.sweep.dir={sweep}"]
    result = run_cli("train.py", "-m", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(sweep / "0" / "checkpoints" / "best.ckpt", weights_only=True)
    hparams = copy.deepcopy(checkpoint["hyper_parameters"])
    hparams["image_size"] = hparams["backbone"]["image_size"] = 32
    hparams["backbone"]["stages"] = [[8, 8], [16]]
    hparams["scoring"] = None  # untrained: no TTA, temperature or threshold of its own
    checkpoint["hyper_parameters"], checkpoint["state_dict"] = hparams, Classifier(**hparams).state_dict()
    (root / "other").mkdir()
    torch.save(checkpoint, root / "other" / "cnn32.ckpt")
    return root


def ensemble_overrides(tiny_data, root: Path) -> list[str]:
    return [o for o in tiny_data_overrides(tiny_data, root) if not o.startswith("trainer.")]


def test_ensemble_cli_writes_every_output(runs, tiny_data):
    sweep = runs / "train" / "multiruns" / "sweep"
    result = run_cli(
        "scripts/ensemble.py", *ensemble_overrides(tiny_data, runs), f"runs=[{sweep}/*,{runs}/other/cnn32.ckpt]"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (runs / "ensemble" / "runs").iterdir()
    pngs = ["accuracy.png", "disagreement.png", *(f"confusion_matrix_{m}.png" for m in METHODS)]
    for name in ["results.md", "results.json", "metrics.json", *pngs]:
        assert (run_dir / name).stat().st_size > 1000, name
    report = json.loads((run_dir / "results.json").read_text())
    rows = {r["key"]: r for r in report["rows"]}
    assert list(rows) == ["member0", "member1", "member2", "member3", *METHODS]
    for i in range(3):  # the members score exactly what their own runs measured: same model, TTA and test split
        trained = json.loads((sweep / str(i) / "metrics.json").read_text())
        assert trained["tta"] == "flip", "tta=auto: each member is scored with its own run's TTA"
        assert rows[f"member{i}"]["test"]["acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
        assert rows[f"member{i}"]["test"]["nll"] == pytest.approx(trained["test/nll_raw"], abs=1e-4)
        # the fourth member records no temperature, so the ensemble fits all four: the same fit on the same logits
        assert rows[f"member{i}"]["temperature"] == pytest.approx(trained["temperature"], rel=1e-3)
    for row in report["rows"]:
        assert len(row["test"]["class_acc"]) == 10 and 0 <= row["test"]["ece"] <= 1
        assert sum(row["weights"]) == pytest.approx(1)
    assert rows["hard"]["test"]["nll"] is None and rows["soft"]["test_ts"]["nll"] is not None
    assert len(report["disagreement"]) == 4 and report["disagreement"][0][0] == 0
    table = (run_dir / "results.md").read_text()
    assert "greedy selection" in table and "Per-class test accuracy" in table and "m3 cnn32" in table
    assert "m0 cnn s0: flip" in table and "m3 cnn32: none" in table, "the report names each member's TTA"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ensemble_method"] == "soft" and metrics["test/acc"] == rows["soft"]["test"]["acc"]

    # the leaderboard lists the three training runs and the ensemble, by validation accuracy
    listing = run_cli("scripts/runs.py", "--root", str(runs), "--csv", str(runs / "runs.csv"))
    assert listing.returncode == 0, listing.stderr
    with open(runs / "runs.csv") as f:
        board = list(csv.DictReader(f))
    assert sorted(r["task"] for r in board) == ["ensemble", "train", "train", "train"]
    assert {r["seed"] for r in board if r["task"] == "train"} == {"0", "1", "2"}
    val = [float(r["val_acc"]) for r in board]
    assert val == sorted(val, reverse=True)
    assert [r["model"] for r in board if r["task"] == "ensemble"] == ["ensemble[soft] ×4"]
    assert collect_runs(runs, task="train", sort="test")[0]["test_acc"] == max(
        float(r["test_acc"]) for r in board if r["task"] == "train"
    )


def test_members_bring_their_own_tta_and_temperature(runs, tiny_data):
    """tta=auto (the default): each member is scored as its run scored it, with the temperature its run fitted on
    the same validation split, so the member rows repeat the runs' own calibrated test figures."""
    sweep = runs / "train" / "multiruns" / "sweep"
    overrides = [*ensemble_overrides(tiny_data, runs), f"runs={sweep}/*", "methods=soft"]  # one name: a list of one
    ensemble_run.ensemble(compose_cfg("ensemble", overrides, runs / "recorded"))
    report = json.loads((runs / "recorded" / "results.json").read_text())
    assert report["settings"]["tta"] == "flip" and report["settings"]["member_temperatures_recorded"]
    assert report["settings"]["methods"] == ["soft"]
    for i, row in enumerate(report["rows"][:3]):
        trained = json.loads((sweep / str(i) / "metrics.json").read_text())
        assert row["temperature"] == trained["temperature"]
        assert row["test"]["acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
        assert row["test_ts"]["nll"] == pytest.approx(trained["test/nll"], abs=1e-4)
        assert row["test_ts"]["ece"] == pytest.approx(trained["test/ece"], abs=1e-4)
    assert "recorded in the checkpoints" in (runs / "recorded" / "results.md").read_text()


def test_fits_do_not_depend_on_the_test_split(runs, tiny_data, monkeypatch):
    """Weights, greedy selection and temperatures come from validation alone: scrambling the test split (labels
    shuffled, images mirrored) changes test scores but none of the fitted values nor any validation figure."""
    from fmnist.data.datamodule import FashionMNISTDataModule, TensorBatches

    overrides = [
        *ensemble_overrides(tiny_data, runs),
        f"runs={runs}/train/multiruns/sweep/*",
        "tta=flip",
        "methods=[soft,greedy,val_acc]",
    ]
    ensemble_run.ensemble(compose_cfg("ensemble", overrides, runs / "clean"))
    setup = FashionMNISTDataModule.setup

    def scrambled_setup(self, stage=None):
        setup(self, stage)
        images, labels = self.test_set.images, self.test_set.labels
        shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]
        self.test_set = TensorBatches(images.flip(-1).roll(3, dims=-2), shuffled)

    monkeypatch.setattr(FashionMNISTDataModule, "setup", scrambled_setup)
    ensemble_run.ensemble(compose_cfg("ensemble", overrides, runs / "scrambled"))
    clean, scrambled = (json.loads((runs / d / "results.json").read_text())["rows"] for d in ("clean", "scrambled"))
    for a, b in zip(clean, scrambled, strict=True):
        assert a["key"] == b["key"]
        assert a["weights"] == b["weights"] and a["temperature"] == b["temperature"], a["key"]
        assert a["val"] == b["val"], a["key"]
    assert any(a["test"]["acc"] != b["test"]["acc"] for a, b in zip(clean, scrambled, strict=True))


# --- refused input ------------------------------------------------------------------------------------------------
class CreatesAFile:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this opens (creates) the file


def bad_member(kind: str, runs: Path, tmp_path: Path) -> tuple[Path, str]:
    """A run directory or checkpoint that must be refused, and (part of) the message expected."""
    run = tmp_path / f"bad-{kind}"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "best.ckpt"
    if kind == "no-checkpoint":
        return run, f"Run {run} has no checkpoints/best.ckpt"
    if kind == "gan":
        generator = {"_target_": "fmnist.models.components.gan_nets.Generator"}
        torch.save({"state_dict": {}, "hyper_parameters": {"generator": generator}}, ckpt)
        return run, "is a GAN checkpoint"
    if kind == "corrupt":
        ckpt.write_bytes(b"PK\x03\x04 truncated")
        return run, "unreadable"
    if kind == "other-split":
        checkpoint = torch.load(runs / "train/multiruns/sweep/2/checkpoints/best.ckpt", weights_only=True)
        checkpoint["datamodule_hyper_parameters"]["val_size"] = 150
        torch.save(checkpoint, ckpt)
        return run, "was trained with a different validation split than"
    if kind == "shell-target":  # no pickle: the hyperparameters name os.system, reached through an fmnist module
        checkpoint = torch.load(runs / "train/multiruns/sweep/2/checkpoints/best.ckpt", weights_only=True)
        marker = tmp_path / "pwned.txt"
        checkpoint["hyper_parameters"]["backbone"] = {
            "_target_": "fmnist.utils.io.os.system",
            "_args_": [f"touch {marker}"],
        }
        torch.save(checkpoint, ckpt)
        return run, "names fmnist.utils.io.os.system to instantiate"
    if kind == "mismatched":  # a valid checkpoint whose weights do not fit the network its hyperparameters describe
        checkpoint = torch.load(runs / "train/multiruns/sweep/2/checkpoints/best.ckpt", weights_only=True)
        checkpoint["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in checkpoint["state_dict"].items()}
        torch.save(checkpoint, ckpt)
        return run, "does not rebuild a Classifier"
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["no-checkpoint", "gan", "corrupt", "other-split", "shell-target", "mismatched"])
def test_bad_members_are_refused_naming_the_run(kind, runs, tiny_data, tmp_path):
    bad, message = bad_member(kind, runs, tmp_path)
    good = runs / "train" / "multiruns" / "sweep" / "0"
    cfg = compose_cfg("ensemble", [*ensemble_overrides(tiny_data, tmp_path), f"runs=[{good},{bad}]"], tmp_path / "e")
    with pytest.raises(UserError) as error:
        ensemble_run.ensemble(cfg)
    assert message in str(error.value) and str(bad) in str(error.value)
    if kind == "other-split":
        assert "(data.val_size=150 vs 100)" in str(error.value) and str(good) in str(error.value)
    assert not (tmp_path / "e" / "metrics.json").exists() and not (tmp_path / "pwned.txt").exists()


def test_booby_trapped_checkpoint_is_refused_without_running_its_code(runs, tiny_data, tmp_path):
    marker = tmp_path / "pwned.txt"
    trap = tmp_path / "trap.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"backbone": CreatesAFile(marker)}}, trap)
    torch.load(trap, weights_only=False)["hyper_parameters"]["backbone"].close()  # control: full unpickling runs it
    assert marker.exists()
    marker.unlink()
    good = runs / "train" / "multiruns" / "sweep" / "0"
    result = run_cli("scripts/ensemble.py", *ensemble_overrides(tiny_data, tmp_path), f"runs=[{good},{trap}]")
    assert result.returncode == 2
    assert f"Checkpoint {trap} was refused" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert not marker.exists(), "the checkpoint's pickled code ran"
    assert not list(tmp_path.rglob("metrics.json"))


def test_an_exported_model_file_is_a_member_like_its_checkpoint(runs, tiny_data, tmp_path):
    """A .safetensors file from export.py (a shipped model) joins an ensemble without pickle, scored with the TTA
    and temperature its run recorded: the same test figures as its run."""
    sweep = runs / "train" / "multiruns" / "sweep"
    exported = tmp_path / "m0.safetensors"
    ckpt = f"ckpt_path={sweep}/0/checkpoints/best.ckpt"
    result = run_cli("export.py", ckpt, "format=safetensors", f"out={exported}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    overrides = [*ensemble_overrides(tiny_data, tmp_path), f"runs=[{sweep}/1,{exported}]", "methods=[soft]"]
    ensemble_run.ensemble(compose_cfg("ensemble", overrides, tmp_path / "ensemble"))
    row = json.loads((tmp_path / "ensemble" / "results.json").read_text())["rows"][1]
    trained = json.loads((sweep / "0" / "metrics.json").read_text())
    assert row["temperature"] == trained["temperature"]
    assert row["test"]["acc"] == pytest.approx(trained["test/acc"], abs=1e-6)
    assert row["test_ts"]["nll"] == pytest.approx(trained["test/nll"], abs=1e-4)


def test_a_member_trained_on_other_images_is_refused_through_an_exported_file(runs, tiny_data, tmp_path):
    """An exported file keeps its data checksums: a member trained on other images with the same val_size and
    split_seed is refused whichever side the exported file is on, and so is a data config that differs."""
    sweep = runs / "train" / "multiruns" / "sweep"
    exported = tmp_path / "m0.safetensors"
    overrides = [f"ckpt_path={sweep}/0/checkpoints/best.ckpt", "format=safetensors", f"out={exported}"]
    export(compose_cfg("export", [*overrides, f"paths.log_dir={tmp_path}"], tmp_path / "export"))
    checkpoint = torch.load(sweep / "1" / "checkpoints" / "best.ckpt", weights_only=True)
    recorded = checkpoint["datamodule_hyper_parameters"]["checksums"]
    checkpoint["datamodule_hyper_parameters"]["checksums"] = {name: "0" * 32 for name in recorded}
    other = tmp_path / "other.ckpt"
    torch.save(checkpoint, other)
    for paths in ([exported, other], [other, exported]):
        with pytest.raises(UserError, match="different validation split") as error:
            load_members(paths, None)
        assert "data.checksums=" in str(error.value)
    with pytest.raises(UserError, match=r"data\.checksums differs"):
        load_members([exported], {name: "0" * 32 for name in recorded})
    assert load_members([exported], dict(recorded))[0].split["checksums"] == recorded


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:0", "cpu:1"])
def test_a_device_this_machine_lacks_is_refused_before_loading(device, tiny_data, tmp_path):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    overrides = [*ensemble_overrides(tiny_data, tmp_path), "runs=[/nonexistent/run]", f"device={device}"]
    with pytest.raises(UserError, match=f"device={device}: "):  # not the missing run: the device is checked first
        ensemble_run.ensemble(compose_cfg("ensemble", overrides, tmp_path / "e"))


@pytest.mark.parametrize(
    ("override", "message"),
    [("greedy.metric=foo", "greedy.metric='foo': choose nll or acc"), ("greedy.rounds=0", "greedy.rounds=0 must be")],
)
def test_greedy_settings_are_checked_before_loading(override, message, tiny_data, tmp_path):
    overrides = [*ensemble_overrides(tiny_data, tmp_path), "runs=[/nonexistent/run]", override]
    with pytest.raises(UserError, match=message):  # not the missing run: checked before any member is read
        ensemble_run.ensemble(compose_cfg("ensemble", overrides, tmp_path / "e"))
