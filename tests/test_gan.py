"""The GAN on tiny synthetic data: training and its outputs, generate.py, aug=gan, the shipped generator,
metrics."""

from __future__ import annotations

import json
import logging
import shutil
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf
from PIL import Image
from safetensors.torch import save_file

from fmnist import PACKAGE_DIR
from fmnist.data.synthetic import SyntheticDataModule, class_indices, generate_set, load_synthetic, save_synthetic
from fmnist.gan.generate import generate
from fmnist.gan.metrics import classification_accuracy_score, real_data_classifier, sample_quality
from fmnist.gan.train import check_config, train_gan
from fmnist.models.classifier import Classifier
from fmnist.models.files import load_classifier, load_generator
from fmnist.models.generator_file import load_generator_file
from fmnist.train import build
from fmnist.utils.errors import CheckpointError, UserError, find_user_error
from fmnist.utils.io import read_classifier_checkpoint
from fmnist.utils.resume import resume_config

from conftest import compose_cfg, run_cli, tiny_data_overrides

SMALL_GAN = ["model.generator.width=16", "model.generator.latent_dim=16", "model.discriminator.width=8"]
SHIPPED_GAN = PACKAGE_DIR / "shipped" / "fmnist_gan.safetensors"
METRICS = ["metrics.epochs=1", "metrics.batch_size=50", "metrics.n_per_class=20", "metrics.cas_per_class=50"]


def gan_overrides(tiny_data, root: Path) -> list[str]:
    # threads=1: with other processes on the 2 cores, 2 OpenMP threads were measured ~10x slower than 1
    return [*tiny_data_overrides(tiny_data, root), "trainer.max_epochs=2", "data.batch_size=50", "threads=1",
            *SMALL_GAN, *METRICS]  # fmt: skip


@pytest.fixture(scope="module")
def gan_run(tiny_data, tmp_path_factory) -> tuple[Path, dict, Path]:
    """`python gan.py` in process on the tiny data: 2 epochs of 10 steps, then the quality metrics."""
    root = tmp_path_factory.mktemp("gan")
    cfg = compose_cfg("gan", gan_overrides(tiny_data, root), root / "run")
    return root / "run", train_gan(cfg), root


def test_gan_training_writes_finite_losses_grids_checkpoint_and_set(gan_run):
    run, metrics, _ = gan_run
    for key in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    grids = sorted(p.name for p in (run / "samples").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png"]
    with Image.open(run / "samples" / "epoch_001.png") as grid:
        assert grid.size[0] > 300 and grid.size[1] > 300
    assert (run / "samples.png").is_file() and (run / "metrics.csv").is_file()
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["epochs"] == 2 and on_disk["seconds_per_epoch"] > 0
    gan = load_generator(run / "checkpoints" / "last.ckpt")
    assert gan.ema is not None and gan.latent_dim == 16
    images, labels, meta = load_synthetic(run / "synthetic.safetensors")
    assert images.shape == (500, 28, 28) and images.dtype == torch.uint8 and meta["n_per_class"] == "50"
    assert torch.equal(labels, torch.arange(10).repeat_interleave(50))


def test_gan_command_shows_each_epochs_bar_with_its_totals(tiny_data, tmp_path):
    """`python gan.py`: the epoch out of the schedule's epochs, and the batch out of the epoch's batches."""
    result = run_cli("gan.py", *gan_overrides(tiny_data, tmp_path), "metrics.enabled=false", timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Epoch 0/1" in output and "Epoch 1/1" in output and "10/10" in output, output[-3000:]


def test_quality_metrics_are_written(gan_run):
    run, metrics, _ = gan_run
    for key in ("quality/cas", "quality/agreement", "quality/real_test_acc", "quality/agreement_trouser"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["quality/fd"] > 0 and "quality/fd_ankle_boot" in metrics
    assert metrics["quality/real_test_acc"] > 0.5, "the tiny data set is easy for the real-data CNN"
    assert json.loads((run / "metrics.json").read_text())["quality/cas"] == metrics["quality/cas"]


def test_generate_writes_a_set_the_datamodule_loads(gan_run, tiny_data, tmp_path):
    run, _, _ = gan_run
    out = tmp_path / "set.safetensors"
    result = run_cli("scripts/generate.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "n_per_class=7",
                     "classes=[1,Bag]", f"out={out}", "seed=5", f"paths.log_dir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.with_suffix(".png").is_file()
    (run_dir,) = [p.parent.parent for p in tmp_path.glob("generate/runs/*/.hydra/config.yaml")]  # a Hydra task
    metrics = json.loads((run_dir / "metrics.json").read_text())  # written last, like every task's
    assert metrics["images"] == 14 and metrics["classes"] == [1, 8] and metrics["out"] == str(out.resolve())
    directory, checksums = tiny_data
    datamodule = SyntheticDataModule(synthetic=str(out), data_dir=str(directory), system_dir=None, download=False,
                                     checksums=checksums, val_size=100)  # fmt: skip
    datamodule.setup("fit")
    train = datamodule.train_set
    assert train.images.dtype == torch.uint8 and train.images.shape == (14, 28, 28)
    assert train.labels.tolist() == [1] * 7 + [8] * 7
    assert len(datamodule.val_set) == 100 and len(datamodule.test_set) == 200, "validation and test stay real"


def classifier_checkpoint(path: Path) -> Path:
    model = Classifier(
        backbone={"_target_": "fmnist.models.components.cnn.SimpleCNN"}, optimizer={"_target_": "torch.optim.SGD"}
    )
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def test_wrong_checkpoints_are_refused(gan_run, tiny_data, tmp_path):
    ckpt = classifier_checkpoint(tmp_path / "classifier.ckpt")
    with pytest.raises(CheckpointError, match="is a classifier checkpoint"):
        generate(compose_cfg("generate", [f"ckpt_path={ckpt}", "n_per_class=2"], tmp_path / "generate"))
    gan_ckpt = gan_run[0] / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="is a GAN checkpoint"):  # and classifier commands refuse GANs
        read_classifier_checkpoint(gan_ckpt)
    cfg = compose_cfg("train", [*tiny_data_overrides(tiny_data, tmp_path), "aug=gan", f"aug.source={ckpt}"], tmp_path)
    with pytest.raises(Exception) as error:
        instantiate(cfg.aug)
    user_error = find_user_error(error.value)  # Hydra's instantiate wraps it
    assert isinstance(user_error, CheckpointError) and "is a classifier checkpoint" in str(user_error)


def recognisable_set(path: Path, n: int = 40, label: int = 3) -> Path:
    """All-white images of one class: unlike any tiny real image (dark noise plus a bar), so they can be counted."""
    return save_synthetic(path, torch.full((n, 28, 28), 255, dtype=torch.uint8), torch.full((n,), label))


class RecordBatches(pl.Callback):
    def __init__(self) -> None:
        self.seen: dict[str, list] = {"train": [], "val": [], "test": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen["train"].append((batch[0].clone(), batch[1].clone()))

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["val"].append((batch[0].clone(), batch[1].clone()))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.seen["test"].append((batch[0].clone(), batch[1].clone()))


def test_aug_gan_mixes_the_share_into_training_batches_only(tiny_data, tmp_path):
    source = recognisable_set(tmp_path / "white.safetensors")
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), "model=cnn", "aug=gan", f"aug.source={source}",
                 "aug.share=0.4", "trainer.max_epochs=1", "callbacks=none", "logger=csv"]  # fmt: skip
    cfg = compose_cfg("train", overrides, tmp_path / "run")
    datamodule, model, trainer = build(cfg, loggers=[])
    recorder = RecordBatches()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule, verbose=False)
    for images, labels in recorder.seen["train"]:
        synthetic = images.mean((1, 2, 3)) > 0.8  # still > 0.8 after a 2-pixel shift or a flip
        assert synthetic.sum() == 20, "40 % of each batch of 50"
        assert (labels[synthetic] == 3).all()
    for split in ("val", "test"):
        assert recorder.seen[split], split
        assert all((images.mean((1, 2, 3)) < 0.6).all() for images, _ in recorder.seen[split]), split


def test_gan_run_writes_a_generator_file_that_samples_as_its_checkpoint(gan_run, tiny_data, tmp_path, caplog):
    run, metrics, _ = gan_run
    path, ckpt = run / "generator.safetensors", run / "checkpoints" / "last.ckpt"
    assert metrics["generator_file"] == str(path)
    assert path.stat().st_size < ckpt.stat().st_size / 4, "the sampling generator alone, in float16"
    from_file = load_generator_file(path)
    assert from_file.split["val_size"] == 100 and from_file.quality["quality/cas"] == metrics["quality/cas"]
    half, _ = generate_set(from_file, 20, seed=1)
    full, _ = generate_set(load_generator(ckpt), 20, seed=1)
    difference = (half.int() - full.int()).abs()
    assert difference.float().mean() < 0.5 and difference.max() <= 8, "float16 weights draw the same images"
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), "aug=gan", f"aug.source={path}", "aug.n_per_class=5"]
    torch.manual_seed(0)
    with caplog.at_level(logging.INFO, logger="fmnist"):
        augment = instantiate(compose_cfg("train", overrides, tmp_path / "run").aug)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3)), "generating must not change the run's random numbers"
    assert len(augment.synthetic.labels) == 50 and f"generated from {path}" in caplog.text
    out = generate(compose_cfg("generate", [f"ckpt_path={path}", "n_per_class=2"], tmp_path / "generate"))
    assert len(load_synthetic(out)[1]) == 20, "generate.py takes the file too"


def test_generator_file_naming_foreign_code_is_refused(tmp_path):
    path = tmp_path / "evil.safetensors"
    metadata = {"fmnist.format": "fmnist-generator-v1", "fmnist.generator": json.dumps({"_target_": "os.system"})}
    save_file({"x": torch.zeros(1)}, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match="only classes and functions defined in fmnist"):
        load_generator_file(path)


@pytest.mark.skipif(not SHIPPED_GAN.is_file(), reason="models/fmnist_gan.safetensors is not shipped (card: its recipe)")
def test_shipped_generator_draws_images_the_shipped_classifier_recognises(tmp_path):
    """models/fmnist_gan.safetensors (card: models/fmnist_gan.md), aug=gan's default: the default split, and samples
    a classifier trained on real images assigns to their class."""
    assert Path(compose_cfg("train", ["aug=gan"], tmp_path).aug.shipped).resolve() == SHIPPED_GAN.resolve()
    gan = load_generator_file(SHIPPED_GAN)
    assert gan.split == {"val_size": 5000, "split_seed": 0, "train_fraction": 1.0, "checksums": None}
    images, labels = generate_set(gan, 50, seed=0)
    with torch.no_grad():
        predicted = load_classifier(PACKAGE_DIR / "shipped" / "fmnist_resnet.safetensors")(
            images.unsqueeze(1).float() / 255).argmax(1)  # fmt: skip
    assert (predicted == labels).float().mean() > 0.8


def test_aug_gan_without_source_samples_the_shipped_generator_at_once(gan_run, tiny_data, tmp_path, caplog):
    """aug.source=null: the shipped generator draws the set in seconds, nothing is trained or cached; a run on
    another split than the generator's is refused. (A generator trained on the tiny split stands in for it.)"""
    shipped = gan_run[0] / "generator.safetensors"
    overrides = [*tiny_data_overrides(tiny_data, tmp_path / "out"), "aug=gan", f"aug.shipped={shipped}"]
    cfg = compose_cfg("train", [*overrides, "aug.n_per_class=100"], tmp_path / "run")
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="fmnist"):
        augment = instantiate(cfg.aug)
    assert time.monotonic() - start < 20 and len(augment.synthetic.labels) == 1000
    assert f"from the shipped generator {shipped}" in caplog.text and not (tmp_path / "out").exists()
    other_split = compose_cfg("train", [*overrides, "data.val_size=90"], tmp_path / "other")
    with pytest.raises(Exception) as error:  # its validation images were the GAN's training data
        instantiate(other_split.aug)
    message = str(find_user_error(error.value))
    assert "data.val_size=100" in message and "python gan.py data.val_size=90" in message, message


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_agreement_and_cas_on_real_images(gan_run, tiny_data, tmp_path):
    _, _, root = gan_run
    cfg = compose_cfg("gan", gan_overrides(tiny_data, root), tmp_path / "run")
    model_cfg, data = cfg.metrics.classifier, OmegaConf.to_container(cfg.data, resolve=True) | {"batch_size": 50}
    kwargs = {"accelerator": "cpu", "precision": "32-true"}
    classifier, info = real_data_classifier(model_cfg, data, 1, 0, Path(cfg.metrics.cache_dir), kwargs)  # cached
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    test = datamodule.test_set
    quality = sample_quality(classifier, test.images, test.labels, test.images, test.labels)
    assert quality["quality/agreement"] == pytest.approx(info["metrics"]["test/acc"], abs=1e-6)
    assert abs(quality["quality/fd"]) < 1e-3 and abs(quality["quality/fd_trouser"]) < 1e-3
    train = datamodule.train_set
    real = save_synthetic(tmp_path / "real.safetensors", train.images, train.labels)
    shuffled = save_synthetic(tmp_path / "shuffled.safetensors", train.images, train.labels[torch.randperm(500)])
    cas = classification_accuracy_score(model_cfg, data, real, 2, tmp_path / "cas", kwargs, 0)["quality/cas"]
    chance = classification_accuracy_score(model_cfg, data, shuffled, 2, tmp_path / "cas2", kwargs, 0)["quality/cas"]
    assert cas > 0.8 and chance < 0.4, (cas, chance)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("metrics.epochs=abc", r"metrics.epochs=abc: expected a whole number"),
        ("metrics.cas_per_class=0", r"metrics.cas_per_class=0 must be at least 1"),
        ("metrics.seed=1.5", r"metrics.seed=1.5: expected a whole number"),
        ("metrics.classifier.optimizer.lr=-1", r"metrics.classifier.optimizer: Invalid learning rate: -1"),
    ],
)
def test_quality_settings_are_checked_before_the_gan_trains(override, message, tmp_path):
    """They are read only after training: a typo found then would cost the whole GAN."""
    from fmnist.utils.errors import UserError

    with pytest.raises(UserError, match=message):
        check_config(compose_cfg("gan", [override], tmp_path))


def test_gan_files_given_where_they_do_not_fit_say_what_fits(tmp_path):
    from fmnist.utils.errors import UserError

    with pytest.raises(UserError, match=r"last.ckpt; a .safetensors file holds no training state"):
        check_config(compose_cfg("gan", [f"ckpt_path={SHIPPED_GAN}"], tmp_path))
    with pytest.raises(UserError, match=r"classes=\[\]: name at least one class"):
        class_indices([])


def test_a_learning_rate_adam_refuses_names_the_gan_config_key(tmp_path):
    from fmnist.utils.errors import ConfigError

    gan = instantiate(compose_cfg("gan", [*SMALL_GAN, "model.lr_d=-1"], tmp_path).model)
    with pytest.raises(ConfigError, match=r"^model: Invalid learning rate: -1.0 \(given: .*model.lr_d=-1"):
        gan.configure_optimizers()


def test_a_stopped_gan_run_resumes_with_its_own_config(gan_run, tiny_data, tmp_path, monkeypatch, caplog):
    """`python gan.py ckpt_path=<run>/checkpoints/last.ckpt` alone continues the run as it started (not with today's
    defaults: a 40-epoch GAN of width 64, whose weights would not even load); a typed change of what it trains is
    refused; SIGTERM prints that command; a complete run or a classifier's checkpoint is refused."""
    run, _, root = gan_run
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    (stopped / "metrics.json").unlink()  # as a stopped run leaves it
    started = compose_cfg("gan", gan_overrides(tiny_data, root), stopped)
    (stopped / ".hydra").mkdir()  # what Hydra writes when a run starts
    OmegaConf.save({k: v for k, v in started.items() if k != "hydra"}, stopped / ".hydra" / "config.yaml")
    OmegaConf.save({"hydra": started.hydra}, stopped / ".hydra" / "hydra.yaml")
    last = stopped / "checkpoints" / "last.ckpt"
    for typed, refused in (("trainer.max_epochs=5", "trainer.max_epochs: 2 -> 5"),
                           ("model@metrics.classifier=resnet", "model@metrics.classifier: cnn -> resnet")):  # fmt: skip
        with pytest.raises(UserError, match=refused + r"(.|\n)*Resume it with ckpt_path alone: python gan.py ckpt_pa"):
            resume_config(compose_cfg("gan", [f"ckpt_path={last}", typed], stopped))
    with pytest.raises(UserError, match=r"checkpoint of a GAN run .*; resume it with `python gan.py ckpt_path="):
        resume_config(compose_cfg("train", [f"ckpt_path={last}"], stopped))

    def stopped_by_sigterm(*args, **kwargs):
        raise SIGTERMException()

    with monkeypatch.context() as patch, caplog.at_level(logging.ERROR, logger="fmnist"):
        patch.setattr(pl.Trainer, "fit", stopped_by_sigterm)
        with pytest.raises(SystemExit) as stop:
            train_gan(compose_cfg("gan", [f"ckpt_path={last}"], stopped))
    assert stop.value.code == 128 + signal.SIGTERM and not (stopped / "metrics.json").exists()
    assert f"Resume with: python gan.py ckpt_path={last}" in caplog.text
    assert "checkpoints/last.ckpt holds the end of epoch 2; the next one restarts" in caplog.text

    metrics = train_gan(compose_cfg("gan", [f"ckpt_path={last}", "threads=1"], stopped))
    assert metrics["epochs"] == 2 and metrics["train_images"] == 500 and metrics["run_dir"] == str(stopped)
    assert json.loads((stopped / "metrics.json").read_text())["epochs"] == 2
    with pytest.raises(UserError, match=r"is complete .* sample it with `python scripts/generate.py ckpt_path="):
        resume_config(compose_cfg("gan", [f"ckpt_path={last}"], stopped))
