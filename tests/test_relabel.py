"""Teacher-labelled synthetic sets (scripts/relabel.py): the soft-label format, soft targets in training batches,
and relabelling with a tiny trained run (soft, filter, the real-image control, refused input)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_gan import RecordBatches

from fmnist.data.datamodule import FashionMNISTDataModule
from fmnist.data.synthetic import SyntheticMix, load_synthetic, save_synthetic
from fmnist.dataset import to_unit_float
from fmnist.gan.relabel import relabel, teacher_images
from fmnist.models.classifier import Classifier
from fmnist.models.files import SPLIT_KEY, load_classifier, save_safetensors
from fmnist.train import build
from fmnist.utils.errors import DataError, UserError

from conftest import compose_cfg, run_cli, tiny_data_overrides, tiny_overrides


def soft_rows(n: int) -> torch.Tensor:
    rows = torch.zeros(n, 10)
    rows[:, 3], rows[:, 6] = 0.7, 0.3  # a T-shirt-or-shirt label
    return rows


def test_soft_labels_round_trip_and_bad_ones_are_refused(tmp_path):
    images = torch.randint(0, 256, (4, 28, 28), dtype=torch.uint8)
    path = save_synthetic(tmp_path / "soft.safetensors", images, soft_rows(4))
    loaded_images, labels, _ = load_synthetic(path)
    assert labels.dtype == torch.float32 and torch.equal(labels, soft_rows(4)) and torch.equal(loaded_images, images)
    save_synthetic(tmp_path / "bad.safetensors", images, soft_rows(4) * 2)
    with pytest.raises(DataError, match="sum to one"):
        load_synthetic(tmp_path / "bad.safetensors")


def test_soft_synthetic_labels_make_soft_targets_for_the_whole_batch():
    mix = SyntheticMix(torch.full((10, 28, 28), 255, dtype=torch.uint8), soft_rows(10), share=0.5)
    torch.manual_seed(0)
    images, targets = mix(torch.zeros(8, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]))
    assert targets.shape == (8, 10) and torch.allclose(targets.sum(1), torch.ones(8))
    assert torch.equal(targets[:4], soft_rows(4)) and (images[:4] == 1).all()
    assert torch.equal(targets[4:], torch.eye(10)[4:8]) and (images[4:] == 0).all()


def test_training_with_a_soft_labelled_set(tiny_data, tmp_path):
    source = save_synthetic(tmp_path / "white.safetensors", torch.full((40, 28, 28), 255, dtype=torch.uint8),
                            soft_rows(40))  # fmt: skip
    overrides = [*tiny_data_overrides(tiny_data, tmp_path), "model=cnn", "aug=gan", f"aug.source={source}",
                 "aug.share=0.4", "trainer.max_epochs=1", "callbacks=none", "logger=csv"]  # fmt: skip
    datamodule, model, trainer = build(compose_cfg("train", overrides, tmp_path / "run"), loggers=[])
    recorder = RecordBatches()
    trainer.callbacks.append(recorder)
    trainer.fit(model, datamodule=datamodule)
    for images, targets in recorder.seen["train"]:
        synthetic = images.mean((1, 2, 3)) > 0.8
        assert synthetic.sum() == 20 and targets.shape == (50, 10)
        assert torch.equal(targets[synthetic], soft_rows(20))
        assert (targets[~synthetic].max(1).values == 1).all()  # the real images keep one-hot targets
    assert torch.isfinite(trainer.callback_metrics["train/loss"]).all()


@pytest.fixture(scope="module")
def teacher(tiny_data, tmp_path_factory) -> Path:
    """One tiny one-epoch run on half of the training split (data.train_fraction=0.5)."""
    root = tmp_path_factory.mktemp("teacher")
    small = ["model.backbone.stages=[[8],[16]]", "model.backbone.hidden=32", "trainer.max_epochs=1"]
    result = run_cli("train.py", *tiny_overrides(tiny_data, root), *small, "data.train_fraction=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (root / "train" / "runs").iterdir()
    return run


def teacher_probs(run: Path, images: torch.Tensor) -> torch.Tensor:
    """The teacher's flip-TTA probabilities, computed here without the script's code."""
    model = Classifier.load_from_checkpoint(run / "checkpoints" / "best.ckpt", weights_only=True).eval()
    with torch.no_grad():
        x = to_unit_float(images)
        return ((model(x) + model(x.flip(-1))) / 2).softmax(-1)


def relabel_with(tmp_path: Path, *overrides: str) -> Path:
    """`python scripts/relabel.py <overrides>` in-process, its run directory under tmp_path."""
    return relabel(compose_cfg("relabel", [f"paths.log_dir={tmp_path}", *overrides], tmp_path / "relabel"))


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_relabel_soft_and_filter(teacher, tmp_path):
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (30, 28, 28), dtype=torch.uint8, generator=generator)
    labels = torch.arange(30) % 10
    source = save_synthetic(tmp_path / "set.safetensors", images, labels)
    expected = teacher_probs(teacher, images)

    soft = relabel_with(tmp_path, f"source={source}", f"runs={teacher}")  # out: the run directory
    assert soft == tmp_path / "relabel" / "set_soft.safetensors"
    soft_images, soft_labels, meta = load_synthetic(soft)
    assert torch.equal(soft_images, images) and torch.allclose(soft_labels, expected, atol=1e-5)
    assert meta["mode"] == "soft" and str(teacher) in meta["teachers"]
    metrics = json.loads((tmp_path / "relabel" / "metrics.json").read_text())  # the task's record, written last
    assert metrics["out"] == str(soft) and metrics["mode"] == "soft"
    assert metrics["teacher_agreement"] == pytest.approx(float((expected.argmax(1) == labels).float().mean()))

    kept = expected.argmax(1) == labels
    assert 0 < kept.sum() < 30, "a constructed case where the teacher agrees on some images only"
    filtered = relabel_with(
        tmp_path, f"source={source}", f"runs={teacher}", "mode=filter", f"out={tmp_path / 'filter.safetensors'}"
    )
    f_images, f_labels, _ = load_synthetic(filtered)
    assert torch.equal(f_images, images[kept]) and torch.equal(f_labels, labels[kept])

    # labels the teacher disagrees with everywhere: filtering would keep nothing, which is refused, not written
    disagreeing = save_synthetic(tmp_path / "wrong.safetensors", images, (expected.argmax(1) + 1) % 10)
    empty = tmp_path / "empty.safetensors"
    with pytest.raises(UserError, match="kept none of 30 images"):
        relabel_with(tmp_path, f"source={disagreeing}", f"runs={teacher}", "mode=filter", f"out={empty}")
    assert not empty.exists()
    assert not (tmp_path / "relabel" / "metrics.json").exists(), "the refused run's directory must not look complete"


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_relabel_real_writes_the_teachers_training_split(teacher, tiny_data, tmp_path):
    out = relabel_with(tmp_path, "source=real", f"runs={teacher}", "tta=none", f"out={tmp_path / 'real.safetensors'}")
    images, labels, _ = load_synthetic(out)
    hparams = torch.load(teacher / "checkpoints" / "best.ckpt", weights_only=True)["datamodule_hyper_parameters"]
    datamodule = FashionMNISTDataModule(**hparams)
    datamodule.setup("fit")
    assert hparams["train_fraction"] == 0.5 and torch.equal(images, datamodule.train_set.images)
    assert not set(datamodule.val_idx.tolist()) & set(datamodule.train_idx.tolist())
    assert labels.shape == (len(images), 10) and torch.allclose(labels.sum(1), torch.ones(len(images)))
    older = {**hparams, "image_size": 28}  # teachers of earlier versions also recorded the input size with the data
    assert torch.equal(teacher_images("real", older)[0], images)


@pytest.mark.slow  # long: runs in the slow set (`pytest -m slow`, the second step of .ci/run)
def test_relabel_refuses_bad_input(teacher, tmp_path):
    soft = save_synthetic(tmp_path / "soft.safetensors", torch.zeros(2, 28, 28, dtype=torch.uint8), soft_rows(2))
    with pytest.raises(UserError, match="mode=filter needs hard labels"):
        relabel_with(tmp_path, f"source={soft}", f"runs={teacher}", "mode=filter")
    with pytest.raises(UserError, match="mode='vote'"):
        relabel_with(tmp_path, f"source={soft}", f"runs={teacher}", "mode=vote")
    with pytest.raises(UserError, match=r"must end with \.safetensors"):
        relabel_with(tmp_path, f"source={soft}", f"runs={teacher}", f"out={tmp_path / 'labels.txt'}")
    checkpoint = torch.load(teacher / "checkpoints" / "best.ckpt", weights_only=True)
    checkpoint["datamodule_hyper_parameters"]["train_fraction"] = 1.0  # same validation split, other training split
    torch.save(checkpoint, tmp_path / "full.ckpt")
    with pytest.raises(UserError, match=r"different data\.train_fraction"):
        relabel_with(tmp_path, f"source={soft}", f"runs=[{teacher},{tmp_path / 'full.ckpt'}]")
    exported = tmp_path / "exported.safetensors"  # records the split (as export.py does), not where the data lives
    split = {k: checkpoint["datamodule_hyper_parameters"][k] for k in ("val_size", "split_seed")}
    model = load_classifier(teacher / "checkpoints" / "best.ckpt")
    save_safetensors(model, exported, {SPLIT_KEY: json.dumps({**split, "train_fraction": 0.5})})
    with pytest.raises(UserError, match="source=real rebuilds the teachers' training split"):
        relabel_with(tmp_path / "real", "source=real", f"runs={exported}")
    assert not (tmp_path / "real").exists()  # refused before its run directory is made
    result = run_cli("scripts/relabel.py", f"source={tmp_path / 'missing.safetensors'}", f"runs={teacher}",
                     f"paths.log_dir={tmp_path / 'out'}")  # fmt: skip
    assert result.returncode == 2 and "does not exist" in result.stdout + result.stderr
    assert not list(tmp_path.rglob("missing*")) and not list((tmp_path / "out").rglob("*.safetensors"))
