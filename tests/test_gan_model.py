"""The GAN's parts without a run: the generator, DiffAugment, divergence detection, the Frechet distance."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from fmnist.gan.metrics import frechet_distance
from fmnist.models.components.gan_nets import Generator
from fmnist.models.gan import GAN, GANDivergedError, diff_augment
from fmnist.utils.errors import UserError


def small_gan(**kwargs) -> GAN:
    return GAN(
        generator={"_target_": "fmnist.models.components.gan_nets.Generator", "latent_dim": 16, "width": 16},
        discriminator={"_target_": "fmnist.models.components.gan_nets.Discriminator", "width": 8},
        **kwargs,
    )


def test_generator_output_shape_and_range():
    generator = Generator(latent_dim=16, width=16)
    out = generator(torch.randn(12, 16), torch.arange(12) % 10)
    assert out.shape == (12, 1, 28, 28) and out.min() >= -1 and out.max() <= 1
    samples = small_gan().sample(torch.arange(10), seed=0)
    assert samples.shape == (10, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    gan = small_gan()
    assert torch.equal(gan.sample(torch.arange(10), seed=3), gan.sample(torch.arange(10), seed=3))
    with pytest.raises(UserError, match="hinge, nonsaturating"):
        GAN(generator={"_target_": "fmnist.models.components.gan_nets.Generator"}, discriminator={}, loss="wasserstein")


def test_diffaugment_policies_differ_per_image_and_pass_gradients():
    torch.manual_seed(0)
    bright = torch.zeros(64, 1, 28, 28)
    bright[:, :, 10:18, 10:18] = 1.0  # a white square on black
    translated = diff_augment(bright, ("translation",))
    assert translated.shape == bright.shape and torch.equal(translated.sum((1, 2, 3)), bright.sum((1, 2, 3)))
    centres = {tuple(img[0].nonzero().float().mean(0).tolist()) for img in translated}
    assert len(centres) > 10, "each image gets its own shift"
    assert translated[:, 0, 10:18, 10:18].sum((1, 2)).lt(64).any(), "the squares moved"
    cut = diff_augment(torch.ones(64, 1, 28, 28), ("cutout",))
    assert torch.equal((cut == 0).sum((1, 2, 3)), torch.full((64,), 14 * 14)), "a half-side square per image"
    colored = diff_augment(bright, ("color",))
    assert colored.amax((1, 2, 3)).unique().numel() > 10, "brightness and contrast per image"
    # differentiable: the generator learns through the augmentation
    x = bright.clone().requires_grad_(True)
    diff_augment(x, ("color", "translation", "cutout")).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_diffaugment_gan_trains_and_bad_policy_is_refused(tmp_path):
    loader = DataLoader([(torch.rand(1, 28, 28), i % 10) for i in range(40)], batch_size=10)
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    gan = small_gan(diffaugment=["translation", "cutout", "color"])
    before = [p.detach().clone() for p in gan.generator.parameters()]
    trainer.fit(gan, train_dataloaders=loader)
    assert all(torch.isfinite(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/"))
    assert any(not torch.equal(a, b) for a, b in zip(before, gan.generator.parameters(), strict=True))
    assert gan.hparams.diffaugment == ["translation", "cutout", "color"]  # a plain list: checkpoints load safely
    with pytest.raises(UserError, match="unknown \\['flip'\\]; a list of some of color, translation, cutout"):
        small_gan(diffaugment="translation,flip")


class NaNInSecondEpoch(Dataset):
    """100 random images; from the second pass on, images 60..69 (batch 7 at batch size 10) are NaN."""

    def __init__(self) -> None:
        self.images, self.labels, self.served = torch.rand(100, 1, 28, 28), torch.arange(100) % 10, 0

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.served += 1
        broken = self.served > 100 and 60 <= i < 70
        return (torch.full_like(self.images[i], float("nan")) if broken else self.images[i]), self.labels[i]


def test_diverging_gan_stops_with_the_step_and_writes_no_more_samples(tmp_path):
    loader = DataLoader(NaNInSecondEpoch(), batch_size=10)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(GANDivergedError, match=r"in epoch 2, batch 7: the discriminator loss is nan"):
        trainer.fit(small_gan(), train_dataloaders=loader)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["epoch_001.png"], "no grid after it"


def test_frechet_distance_known_cases():
    features = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)).double()
    assert abs(frechet_distance(features, features)) < 1e-6
    # equal covariances: the distance is the squared distance of the means
    assert frechet_distance(features, features + 0.5) == pytest.approx(8 * 0.25, rel=1e-4)
