"""A trained generator as a compact, pickle-free `.safetensors` file, and loading any generator source.

`python gan.py` writes <run>/generator.safetensors next to its checkpoint; the shipped generator of `aug=gan`
(models/fmnist_gan.safetensors, card models/fmnist_gan.md) is one such file. It holds the sampling generator's
weights only (the EMA generator when there is one; no discriminator, no optimiser state), as float16 by default
(half the size; the images are rounded to uint8 anyway), and JSON metadata:
  fmnist.format     "fmnist-generator-v1"
  fmnist.generator  the generator's config (`_target_` and arguments), checked like a checkpoint's before it is built
  fmnist.split      the data settings of the training split it learnt from (fmnist.gan.metrics.split_settings)
  fmnist.quality    the quality figures of its run (CAS, Fréchet distance, agreement), when they were measured
Loading runs no pickle; the weights are cast back to float32 for sampling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from fmnist.models.files import load_generator
from fmnist.utils.errors import CheckpointError
from fmnist.utils.io import atomic_path, check_targets, read_safetensors

if TYPE_CHECKING:
    from fmnist.models.gan import GAN

FORMAT_KEY, FORMAT = "fmnist.format", "fmnist-generator-v1"
GENERATOR_KEY, SPLIT_KEY, QUALITY_KEY = "fmnist.generator", "fmnist.split", "fmnist.quality"


class GeneratorSampler(nn.Module):
    """A generator alone, sampling like fmnist.models.gan.GAN.sample (what generate_set calls)."""

    def __init__(self, generator: nn.Module, split: dict[str, Any], quality: dict[str, float]) -> None:
        super().__init__()
        self.generator = generator.eval()
        self.latent_dim, self.num_classes = generator.latent_dim, generator.num_classes
        self.split, self.quality = split, quality

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, noise: torch.Tensor | None = None, seed: int | None = None) -> torch.Tensor:
        """Images (B, 1, 28, 28) in [0, 1] of the given classes."""
        if noise is None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            noise = torch.randn(len(labels), self.latent_dim, generator=generator)
        return self.generator(noise, labels).add(1).div(2).clamp(0, 1)


def save_generator_file(
    gan: GAN, path: str | Path, split: dict[str, Any], quality: dict[str, float] | None = None,
    dtype: torch.dtype = torch.float16,
) -> Path:  # fmt: skip
    """Write the GAN's sampling generator (EMA when it has one) to `path` atomically; returns the path."""
    path = Path(path)
    floats = (torch.float32, torch.float16, torch.bfloat16)
    state = {k: (v.to(dtype) if v.dtype in floats else v).detach().cpu().contiguous()
             for k, v in gan.sampler.state_dict().items()}  # fmt: skip
    metadata = {
        FORMAT_KEY: FORMAT,
        GENERATOR_KEY: json.dumps(dict(gan.hparams["generator"]), sort_keys=True),
        SPLIT_KEY: json.dumps(split, sort_keys=True),
        QUALITY_KEY: json.dumps(quality or {}, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def load_generator_file(path: str | Path) -> GeneratorSampler:
    """The generator of a file written by `save_generator_file`, in eval mode on the CPU, in float32."""
    state, metadata = read_safetensors(path, "Generator file")
    if metadata.get(FORMAT_KEY) != FORMAT or GENERATOR_KEY not in metadata:
        raise CheckpointError(f"{path} is not a generator file of this project (no {FORMAT_KEY}={FORMAT} metadata).")
    try:
        config = json.loads(metadata[GENERATOR_KEY])
        check_targets({"generator": config}, path)
        generator = instantiate(config)
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        split, quality = json.loads(metadata.get(SPLIT_KEY, "{}")), json.loads(metadata.get(QUALITY_KEY, "{}"))
    except (json.JSONDecodeError, TypeError, ValueError, RuntimeError, KeyError, InstantiationException) as e:
        raise CheckpointError(f"{path} does not rebuild a generator ({str(e).splitlines()[0]}).") from e
    return GeneratorSampler(generator, split, quality)


def is_generator_file(path: str | Path) -> bool:
    """Whether a .safetensors file is a generator file (else: a synthetic set, or something else)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get(FORMAT_KEY) == FORMAT
    except (SafetensorError, OSError, ValueError):
        return False


def load_any_generator(path: str | Path) -> GAN | GeneratorSampler:
    """A generator file (.safetensors) or a `python gan.py` checkpoint (.ckpt); CheckpointError for anything else."""
    return load_generator_file(path) if str(path).endswith(".safetensors") else load_generator(path)
