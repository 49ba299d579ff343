"""Batched augmentation: shapes, ranges, labels, per-sample randomness, seeding, train-only; TTA views."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fmnist.data import FashionMNISTDataModule
from fmnist.data.augment import BatchAugment, random_affine, random_erasing, random_flip, random_translate
from fmnist.models.tta import shift, tta_logits, tta_views
from fmnist.train import resolve_tta, train
from fmnist.utils.errors import UserError

from conftest import CONF_DIR, compose_cfg, tiny_overrides

# aug=gan: the shipped generator is refused on the tiny split (it learnt from the real one); tests/test_gan.py
AUG_OPTIONS = sorted(p.stem for p in (Path(CONF_DIR) / "aug").glob("*.yaml") if p.stem != "gan")
MIXING = {"mixup", "cutmix"}


def batch(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=generator) * (torch.rand(n, 1, 1, 1, generator=generator) > 0.1)
    return images, torch.arange(n) % 10


def build(option: str, tiny_data, tmp_path, *extra: str) -> BatchAugment | None:
    cfg = compose_cfg("train", [*tiny_overrides(tiny_data, tmp_path), f"aug={option}", *extra], tmp_path / "run")
    return instantiate(cfg.aug) if "_target_" in cfg.aug else None


@pytest.mark.parametrize("option", sorted(set(AUG_OPTIONS) - {"none"}))
def test_aug_options_keep_shape_range_and_labels(option, tiny_data, tmp_path):
    augment = build(option, tiny_data, tmp_path)
    images, labels = batch()
    torch.manual_seed(1)
    out, targets = augment(images.clone(), labels)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, images)
    if option in MIXING:
        # mixing yields soft targets that sum to one; the batches it skips keep hard labels
        if targets.ndim == 2:
            assert targets.shape == (64, 10) and torch.allclose(targets.sum(1), torch.ones(64))
    else:
        assert torch.equal(targets, labels)
    torch.manual_seed(1)
    again, again_targets = augment(images.clone(), labels)
    assert torch.equal(out, again) and torch.equal(targets, again_targets), "seeded runs are reproducible"


def test_mixing_produces_soft_targets(tiny_data, tmp_path):
    for option in MIXING:
        augment = build(option, tiny_data, tmp_path, "aug.mix.p=1.0")
        images, labels = batch()
        torch.manual_seed(0)
        mixed = 0
        for _ in range(5):  # one mixing weight per batch; a draw may give an empty cutmix box
            _, targets = augment(images, labels)
            assert targets.shape == (64, 10) and torch.allclose(targets.sum(1), torch.ones(64))
            mixed += int((targets.max(1).values < 0.99).all())
        assert mixed >= 3, f"{option} mixed too few batches"


def test_translate_draws_a_shift_per_sample():
    images = torch.zeros(200, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1  # a centred square: its position reveals the shift
    torch.manual_seed(0)
    out = random_translate(images, 2)
    first_row = torch.stack([o[0].sum(1).nonzero()[0, 0] for o in out])
    first_col = torch.stack([o[0].sum(0).nonzero()[0, 0] for o in out])
    assert set(first_row.tolist()) == set(range(8, 13)) and set(first_col.tolist()) == set(range(8, 13))
    assert torch.equal(out.sum((1, 2, 3)), images.sum((1, 2, 3))), "a 2-px shift keeps the whole square"


def test_flip_mirrors_some_samples_not_all():
    images, _ = batch(256)
    torch.manual_seed(0)
    out = random_flip(images, 0.5)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images, strict=True)])
    assert (flipped | kept).all() and 80 < flipped.sum() < 176


def test_affine_matches_kornia_on_a_fixed_zoom_and_varies_per_sample():
    import kornia.augmentation as kornia_augmentation  # the reference implementation

    images, _ = batch(32)
    reference = kornia_augmentation.RandomAffine(degrees=0, scale=(1.5, 1.5), p=1.0)(images)
    ours = random_affine(images, degrees=0, scale=(1.5, 1.5), p=1.0)
    assert torch.allclose(ours, reference, atol=1e-5), "same zoom about the centre, bilinear, zero fill"
    square = torch.zeros(100, 1, 28, 28)
    square[:, :, 6:22, 12:16] = 1  # an upright bar: rotation and shear tilt it
    torch.manual_seed(0)
    out = random_affine(square, degrees=30, shear=10, p=0.5)
    changed = (out - square).abs().amax((1, 2, 3)) > 1e-3
    assert 25 < changed.sum() < 75, "p=0.5: about half the images transformed"
    assert len({round(float(o.sum()), 2) for o in out[changed]}) > 10, "each image draws its own parameters"


def test_erasing_fills_one_box_per_chosen_image():
    images = torch.ones(400, 1, 28, 28)
    torch.manual_seed(0)
    out = random_erasing(images, scale=(0.02, 0.2), ratio=(0.3, 3.3), value=0.0, p=0.5)
    erased = (out == 0).squeeze(1)  # (B, H, W)
    areas = erased.sum((1, 2))
    chosen = areas > 0
    assert 150 < chosen.sum() < 250
    for mask in erased[chosen]:
        rows, cols = mask.any(1).nonzero().squeeze(1), mask.any(0).nonzero().squeeze(1)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert mask.sum() == box, "one filled rectangle"
    share = areas[chosen].float() / (28 * 28)
    assert share.min() >= 0.01 and share.max() <= 0.25, "area within the scale range (up to rounding)"


def test_augmentation_runs_only_in_training(tiny_data):
    directory, checksums = tiny_data
    augment = BatchAugment(translate=2, flip=1.0)
    dm = FashionMNISTDataModule(str(directory), None, False, checksums=checksums, val_size=100, augment=augment)
    dm.setup("fit")
    raw = next(iter(dm.val_dataloader()))
    images, labels = dm.on_after_batch_transfer(raw)  # no trainer: not training
    assert torch.equal(images, raw[0].unsqueeze(1).float() / 255) and torch.equal(labels, raw[1])

    class Training:
        training = True

    dm.trainer = Training()
    images, _ = dm.on_after_batch_transfer(raw)
    assert not torch.equal(images, raw[0].unsqueeze(1).float() / 255)


def test_bad_aug_values_are_refused():
    with pytest.raises(Exception, match=r"aug\.flip"):
        BatchAugment(flip=2.0)
    with pytest.raises(Exception, match="mixup or cutmix"):
        BatchAugment(mix={"kind": "blend"})
    for name in ("affine", "erasing", "mix"):  # a share of images or batches
        with pytest.raises(UserError, match=rf"aug\.{name}\.p=5: a probability must be in \[0, 1\]"):
            BatchAugment(**{name: {"p": 5}})
    with pytest.raises(Exception, match=r"aug\.affine\.rotate=10: .* has no parameter 'rotate'"):
        BatchAugment(affine={"rotate": 10})
    with pytest.raises(Exception, match=r"aug\.corrupt\.p=abc: expected a number"):
        BatchAugment(corrupt={"p": "abc"})
    with pytest.raises(Exception, match=r"aug\.erasing\.scale=.*: expected a list"):
        BatchAugment(erasing={"scale": 0.3})


@pytest.mark.parametrize("option", AUG_OPTIONS)
def test_every_aug_option_trains_end_to_end(option, tiny_data, tmp_path):
    cfg = compose_cfg(
        "train", [*tiny_overrides(tiny_data, tmp_path), f"aug={option}", "trainer.max_epochs=1"], tmp_path
    )
    value = train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= value <= 1 and 0 <= metrics["test/acc"] <= 1


def test_tta_auto_mirrors_only_models_trained_on_mirrors(caplog):
    def cfg(tta: str, aug: dict) -> OmegaConf:
        return OmegaConf.create({"tta": tta, "aug": aug})

    assert resolve_tta(cfg("auto", {"flip": 0.5, "translate": 2})) == "flip"
    assert resolve_tta(cfg("auto", {})) == "none"  # aug=none
    assert resolve_tta(cfg("auto", {"flip": 0.0})) == "none"
    assert resolve_tta(cfg("flip+shift", {"flip": 0.5})) == "flip+shift" and not caplog.records
    assert resolve_tta(cfg("flip", {})) == "flip", "an explicit choice is kept ..."
    assert "trained without flips" in caplog.text, "... with a warning"
    with pytest.raises(Exception, match="tta='mirror'"):
        resolve_tta(cfg("mirror", {}))


def test_tta_views_and_mean_logits():
    images, _ = batch(8)
    assert len(tta_views(images, "none")) == 1 and len(tta_views(images, "flip+shift")) == 6
    moved = shift(images, 1, 0)
    assert torch.equal(moved[..., 1:], images[..., :-1]) and (moved[..., 0] == 0).all()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    expected = (model(images) + model(images.flip(-1))) / 2
    assert torch.allclose(tta_logits(model, images, "flip"), expected, atol=1e-6)
    with pytest.raises(Exception, match="choose one of"):
        tta_views(images, "rotate")


@pytest.mark.parametrize(
    "kwargs, message",
    [({"translate": -1}, "aug.translate=-1: a shift in pixels must be >= 0"),
     ({"flip": 2.0}, "aug.flip=2.0: a probability must be in [0, 1]")],
)  # fmt: skip
def test_a_wrong_strength_names_only_its_own_key(kwargs, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as error:
        BatchAugment(**kwargs)
    other = "aug.flip" if "translate" in kwargs else "aug.translate"
    assert other not in str(error.value)
