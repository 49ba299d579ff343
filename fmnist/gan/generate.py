"""Write a labelled synthetic data set from a GAN checkpoint, plus a sample grid:

    python scripts/generate.py outputs/gan/runs/<run>/checkpoints/last.ckpt n_per_class=6000 [seed=0]
        [classes='[0,Trouser]'] [out=path/to/set.safetensors] [grid_per_class=10]

The set is a .safetensors file (uint8 images (N, 28, 28) + int64 labels, sorted by class; format in
fmnist/data/synthetic.py); the grid is the same name with .png. By default both go into the checkpoint's run directory
as synthetic_<n>pc_seed<seed>.safetensors. Use the set with `python train.py aug=gan aug.source=<set>`, or load it
with `fmnist.data.synthetic.load_synthetic` / `SyntheticDataModule`.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fmnist.data.synthetic import class_indices, generate_set, load_generator, save_synthetic
from fmnist.models.gan import plot_sample_grid
from fmnist.utils.errors import UserError

log = logging.getLogger("fmnist")
DEFAULTS = {"n_per_class": 6000, "seed": 0, "classes": None, "out": None, "grid_per_class": 10}


def default_out(ckpt: Path, n: int, seed: int) -> Path:
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / f"synthetic_{n}pc_seed{seed}.safetensors"


def generate(argv: list[str]) -> Path:
    if not argv or "=" in argv[0]:
        raise UserError("Usage: python scripts/generate.py <generator checkpoint> n_per_class=6000 [seed=0] ...")
    ckpt, overrides = Path(argv[0]), OmegaConf.from_dotlist(argv[1:])
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise UserError(f"Unknown setting(s) {sorted(unknown)}; known: {', '.join(DEFAULTS)}.")
    cfg = OmegaConf.merge(DEFAULTS, overrides)
    n, seed = int(cfg.n_per_class), int(cfg.seed)
    classes = class_indices(list(cfg.classes) if cfg.classes is not None else None)
    out = Path(cfg.out) if cfg.out else default_out(ckpt, n, seed)
    if out.suffix != ".safetensors":
        raise UserError(f"out={out}: the file name must end with .safetensors.")
    gan = load_generator(ckpt)  # CheckpointError unless it is a GAN checkpoint
    images, labels = generate_set(gan, n, classes=classes, seed=seed)
    save_synthetic(out, images, labels, source=str(ckpt.resolve()), seed=seed, n_per_class=n, classes=classes)
    k = min(int(cfg.grid_per_class), n)
    shown = (labels.view(len(classes), n)[:, :k].reshape(-1), images.view(len(classes), n, 28, 28)[:, :k])
    plot_sample_grid(shown[1].reshape(-1, 1, 28, 28).float() / 255, shown[0], out.with_suffix(".png"), out.stem)
    log.info(f"{len(labels)} images ({n} per class, classes {classes}, seed {seed}) -> {out} (+ {out.stem}.png)")
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        generate(sys.argv[1:])
    except UserError as e:
        log.error(f"{type(e).__name__}: {e}")
        sys.exit(2)


if __name__ == "__main__":
    main()
