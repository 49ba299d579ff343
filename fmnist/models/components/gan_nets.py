"""A class-conditional DCGAN for 28x28 grayscale images: plain nn.Modules, trained by fmnist.models.gan.GAN.

The generator maps (noise, class) to images in [-1, 1] (tanh): noise and a class embedding go through a linear layer
to 7x7 feature maps, then two stride-2 transposed convolutions upsample 7 -> 14 -> 28 (the classic MNIST DCGAN shape;
the convolutions are the cost on a CPU, so they stay narrow). The discriminator is a projection discriminator (Miyato
& Koyama 2018): a convolutional feature vector h scores an image as `linear(h) + <embed(class), h>`, which conditions
it on the class more reliably than concatenating a label map.
Spectral normalisation of its layers (a config value) bounds its Lipschitz constant and keeps GAN training stable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as sn


def dcgan_init(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation: weights N(0, 0.02), BatchNorm scales N(1, 0.02), biases 0. With PyTorch's default
    (Kaiming) initialisation the generator starts with saturated tanh noise and was measured not to recover."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):  # embeddings keep N(0, 1): the class signal
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if isinstance(getattr(m, "bias", None), torch.Tensor):
            nn.init.zeros_(m.bias)
    return module


class Generator(nn.Module):
    def __init__(self, latent_dim: int = 64, num_classes: int = 10, width: int = 64, embed_dim: int = 32) -> None:
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.project = nn.Sequential(
            nn.Linear(latent_dim + embed_dim, 2 * width * 7 * 7, bias=False),
            nn.Unflatten(1, (2 * width, 7, 7)),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1, bias=False),  # 7 -> 14
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1),  # 14 -> 28
            nn.Tanh(),
        )
        dcgan_init(self)

    def forward(self, noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) noise and (B,) class indices -> (B, 1, 28, 28) images in [-1, 1]."""
        return self.upsample(self.project(torch.cat([noise, self.embed(labels)], dim=1)))


def class_spread(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, 1, H, W) maps holding, for each sample, how much the samples of its class in the batch differ (the mean
    per-feature standard deviation within the class). A minibatch-std over the whole batch would be dominated by the
    differences between classes and miss a generator whose samples of one class are all alike."""
    flat = features.flatten(1)
    onehot = nn.functional.one_hot(labels, num_classes).to(flat.dtype)  # (B, K)
    counts = onehot.sum(0).clamp_min(1)[:, None]
    mean = onehot.T @ flat / counts  # (K, F) class means
    var = onehot.T @ (flat - mean[labels]).square() / counts
    spread = var.add(1e-8).sqrt().mean(1)  # (K,)
    return spread[labels].view(-1, 1, 1, 1).expand(-1, 1, *features.shape[2:])


class Discriminator(nn.Module):
    def __init__(
        self, num_classes: int = 10, width: int = 32, spectral_norm: bool = True, minibatch_std: bool = True
    ) -> None:
        super().__init__()
        self.minibatch_std, self.num_classes = minibatch_std, num_classes
        self.down = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1),  # 28 -> 14
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),  # 14 -> 7
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.head = nn.Sequential(
            nn.Conv2d(2 * width + int(minibatch_std), 4 * width, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.score = nn.Linear(4 * width, 1)
        self.embed = nn.Embedding(num_classes, 4 * width)
        dcgan_init(self)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)  # like the linear score (spectral norm rescales both anyway)
        if spectral_norm:
            for layer in [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding)]:
                sn(layer)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B, 1, 28, 28) images in [-1, 1] and (B,) classes -> (B,) real/fake scores (logits)."""
        x = self.down(images)
        if self.minibatch_std:
            # how much each class varies in the batch, as an extra feature map (ProGAN's minibatch std, per class):
            # a generator that ignores its noise becomes easy to spot, which pushes it towards diverse samples
            x = torch.cat([x, class_spread(x, labels, self.num_classes)], dim=1)
        h = self.head(x).sum(dim=(2, 3))  # sum pooling, as in the projection-discriminator papers
        return self.score(h).squeeze(1) + (self.embed(labels) * h).sum(1)
