"""The class-conditional GAN LightningModule: manual optimisation of a generator and a discriminator.

Each training batch (real images in [0, 1] and their classes) makes one discriminator step and one generator step;
the fakes are conditioned on the batch's own classes, so both see the class balance of the data. The loss (`hinge`
or `nonsaturating`), the learning rates and an exponential moving average (EMA) of the generator's weights are
hyperparameters; spectral normalisation is a setting of the discriminator. Samples come from the EMA generator when
there is one (smoother, usually better samples).

`diffaugment` (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training") augments every image
the discriminator sees, real and generated alike and in both steps, with differentiable transforms, so the generator
still learns through them: with few training images the discriminator otherwise memorises them and the generator's
samples collapse onto its errors. A list of policies: `translation` (±1/8 of the side, zero fill), `cutout` (a random
half-side square), `color` (brightness and contrast; grayscale has no saturation).

After every epoch a 10x10 grid (one row per class, fixed noise) is written to <run>/samples/epoch_NNN.png and sent to
W&B. A NaN or infinite loss stops training with GANDivergedError naming the step, before any optimiser step or
sample grid uses the broken values.

Hyperparameters are plain containers, and contain the key "generator" (fmnist.utils.io tells GAN checkpoints from
classifier checkpoints by it), so `GAN.load_from_checkpoint(path, weights_only=True)` rebuilds the model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torch.optim.swa_utils import AveragedModel

from fmnist.data.augment import random_erasing, random_translate
from fmnist.dataset import CLASSES, to_unit_float
from fmnist.utils.containers import plain
from fmnist.utils.errors import UserError, values_of
from fmnist.utils.loggers import log_images

LOSSES = ("hinge", "nonsaturating")
DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


def check_diffaugment(policy: Sequence[str] | str | None) -> tuple[str, ...]:
    """[translation, cutout] (or 'translation,cutout') -> ('translation', 'cutout'); a clear error for unknown names."""
    if isinstance(policy, str):
        policy = policy.split(",")
    names = tuple(str(n).strip() for n in (policy or ()) if str(n).strip())
    unknown = [n for n in names if n not in DIFFAUGMENT_POLICIES]
    if unknown:
        raise UserError(
            f"model.diffaugment={list(names)}: unknown {unknown}; a list of some of "
            f"{', '.join(DIFFAUGMENT_POLICIES)} (e.g. model.diffaugment=[translation,cutout]), or null for none."
        )
    return names


def diff_augment(images: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """DiffAugment on (B, 1, H, W) images in [0, 1], independent parameters per image, differentiable in the images
    (the generator's gradient passes through). Zero fill is the black background of Fashion-MNIST."""
    b, dev = images.shape[0], images.device
    if "color" in policy:
        brightness = torch.rand(b, 1, 1, 1, device=dev) - 0.5  # DiffAugment's ±0.5 in [-1, 1] is ±0.25 here
        images = images + brightness / 2
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        images = (images - mean) * (torch.rand(b, 1, 1, 1, device=dev) + 0.5) + mean  # contrast x U(0.5, 1.5)
    if "translation" in policy:
        images = random_translate(images, max(1, images.shape[-1] // 8))  # 28 px: ±3 px
    if "cutout" in policy:
        images = random_erasing(images, scale=(0.25, 0.25), ratio=(1.0, 1.0), p=1.0)  # a half-side square
    return images


class GANDivergedError(UserError):
    """A GAN loss became NaN or infinite."""


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()  # -log sigmoid(real) - log(1 - sigmoid(fake))


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()  # non-saturating: -log sigmoid(fake)


def ema_with_warmup(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """An AveragedModel `multi_avg_fn`: EMA whose decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates,
    so early samples are not dominated by the random initial weights (torch's get_ema_multi_avg_fn has no warm-up)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        for average, weight in zip(averaged, current, strict=True):
            average.lerp_(weight, 1 - d)

    return update


def plot_sample_grid(images: torch.Tensor, labels: torch.Tensor, path: Path, title: str = "") -> Path:
    """Images (N, 1, 28, 28) in [0, 1], sorted by class with the same count per class -> one row per class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    classes = labels.unique(sorted=True).tolist()
    per_row = len(labels) // len(classes)
    grid = make_grid(images.float().cpu(), nrow=per_row, padding=2, pad_value=1.0)[0]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * per_row, 0.4 + 0.55 * len(classes)))
    ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([2 + 30 * i + 14 for i in range(len(classes))], [CLASSES[c] for c in classes])
    ax.set_xticks([])
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class GAN(pl.LightningModule):
    def __init__(
        self,
        generator: dict,
        discriminator: dict,
        loss: str = "hinge",
        lr_g: float = 2e-4,
        lr_d: float = 2e-4,
        betas: Sequence[float] = (0.5, 0.999),
        ema_decay: float | None = 0.999,
        grid_per_class: int = 10,
        grid_seed: int = 0,
        diffaugment: Sequence[str] | str | None = None,
    ) -> None:
        super().__init__()
        self.diffaugment = check_diffaugment(diffaugment)
        if loss not in LOSSES:
            raise UserError(f"model.loss={loss!r}: choose one of {', '.join(LOSSES)}.")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise UserError(f"model.ema_decay={ema_decay} must be in (0, 1), or null for no EMA.")
        self.save_hyperparameters(
            {
                "generator": plain(generator),
                "discriminator": plain(discriminator),
                "loss": loss,
                "lr_g": float(lr_g),
                "lr_d": float(lr_d),
                "betas": list(plain(betas)),
                "ema_decay": ema_decay,
                "grid_per_class": int(grid_per_class),
                "grid_seed": int(grid_seed),
                "diffaugment": list(self.diffaugment) or None,
            }
        )
        self.automatic_optimization = False
        self.generator: nn.Module = instantiate(self.hparams.generator)
        self.discriminator: nn.Module = instantiate(self.hparams.discriminator)
        self.ema = None
        if ema_decay is not None:
            # running stats of BatchNorm stay those of the live generator (use_buffers=False copies them)
            self.ema = AveragedModel(self.generator, multi_avg_fn=ema_with_warmup(ema_decay))
            self.ema.requires_grad_(False)
        self.num_classes, self.latent_dim = self.generator.num_classes, self.generator.latent_dim
        # fixed noise for the per-epoch grid: the rows stay comparable from epoch to epoch (kept in checkpoints)
        grid_labels = torch.arange(self.num_classes).repeat_interleave(grid_per_class)
        noise = torch.randn(len(grid_labels), self.latent_dim, generator=torch.Generator().manual_seed(grid_seed))
        self.register_buffer("grid_noise", noise)
        self.register_buffer("grid_labels", grid_labels)

    # --- sampling ------------------------------------------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples: the EMA one when there is one."""
        return self.ema.module if self.ema is not None else self.generator

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, noise: torch.Tensor | None = None, seed: int | None = None) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [0, 1] of the given classes, in eval mode (BatchNorm running statistics)."""
        if noise is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            noise = torch.randn(len(labels), self.latent_dim, generator=generator)
        sampler, was_training = self.sampler, self.sampler.training
        sampler.eval()
        images = sampler(noise.to(self.device), labels.to(self.device))
        sampler.train(was_training)
        return images.add(1).div(2).clamp(0, 1)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.sample(labels)

    # --- training ------------------------------------------------------------------------------------------------
    def _check_finite(self, name: str, value: torch.Tensor, batch_idx: int) -> None:
        if not torch.isfinite(value):
            raise GANDivergedError(
                f"GAN training diverged in epoch {self.current_epoch + 1}, batch {batch_idx + 1}: "
                f"the {name} loss is {value.item()}. Training stopped before any step used it: no later sample grid "
                "or checkpoint was written (a `python gan.py` run keeps the last complete epoch in "
                "checkpoints/last.ckpt). Lower the learning rates (lr_d, lr_g), or keep loss=hinge with "
                "discriminator.spectral_norm=true."
            )

    def discriminate(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Discriminator scores of images in [-1, 1], through DiffAugment when it is on."""
        if self.diffaugment:
            images = diff_augment(images.add(1).div(2), self.diffaugment).mul(2).sub(1)
        return self.discriminator(images, labels)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        real = to_unit_float(images) * 2 - 1  # the generator's tanh range
        opt_g, opt_d = self.optimizers()
        noise = torch.randn(len(labels), self.latent_dim, device=self.device)
        fake = self.generator(noise, labels)

        d_real, d_fake = self.discriminate(real, labels), self.discriminate(fake.detach(), labels)
        d_loss = discriminator_loss(self.hparams.loss, d_real, d_fake)
        self._check_finite("discriminator", d_loss, batch_idx)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()

        g_loss = generator_loss(self.hparams.loss, self.discriminate(fake, labels))
        self._check_finite("generator", g_loss, batch_idx)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        opt_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.generator)

        self.log_dict(
            {
                "train/d_loss": d_loss.detach(),
                "train/g_loss": g_loss.detach(),
                "train/d_real": d_real.detach().mean(),  # mean discriminator score of real images
                "train/d_fake": d_fake.detach().mean(),  # ... and of generated ones
            },
            on_step=False, on_epoch=True, prog_bar=True,
        )  # fmt: skip

    def on_train_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        epoch = self.current_epoch + 1
        images = self.sample(self.grid_labels, noise=self.grid_noise)
        run_dir = Path(self.trainer.default_root_dir)
        path = plot_sample_grid(images, self.grid_labels, run_dir / "samples" / f"epoch_{epoch:03d}.png",
                                f"epoch {epoch}")  # fmt: skip
        log_images(self.loggers, {"samples": path})

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = tuple(self.hparams.betas)
        values = {k: self.hparams[k] for k in ("lr_g", "lr_d", "betas")}
        with values_of("model", values, accepts="torch.optim.Adam"):  # lr_d=-1: one message, not a traceback
            return [
                torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas),
                torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas),
            ]
