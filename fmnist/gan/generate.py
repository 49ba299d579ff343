"""Write a labelled synthetic data set from a GAN checkpoint (or a generator.safetensors), plus a sample grid:

    python scripts/generate.py ckpt_path=outputs/gan/runs/<run>/checkpoints/last.ckpt n_per_class=6000 [seed=0]
        [classes='[0,Trouser]'] [out=path/to/set.safetensors] [grid_per_class=10]      (conf/generate.yaml)

The set is a .safetensors file (uint8 images (N, 28, 28) + int64 labels, sorted by class; format in
fmnist/data/synthetic.py); the grid is the same name with .png. By default both go into this task's run directory
(outputs/generate/runs/<timestamp>/, with its .hydra/) as synthetic_<n>pc_seed<seed>.safetensors. Use the set
with `python train.py aug=gan aug.source=<set>`, or load it with `fmnist.data.synthetic.load_synthetic` /
`SyntheticDataModule`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from fmnist.data.synthetic import class_indices, generate_set, save_synthetic
from fmnist.models.gan import plot_sample_grid
from fmnist.models.generator_file import load_any_generator
from fmnist.task import hydra_task, task_run
from fmnist.utils.containers import as_list
from fmnist.utils.errors import UserError, config_int
from fmnist.utils.io import check_output_path

log = logging.getLogger("fmnist")


def generate(cfg: DictConfig) -> Path:
    n, seed = config_int(cfg, "n_per_class", minimum=1), config_int(cfg, "seed")
    classes = class_indices(as_list(cfg.classes, "classes") if cfg.classes is not None else None)
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.output_dir) / f"synthetic_{n}pc_seed{seed}.safetensors"
    if out.suffix != ".safetensors":
        raise UserError(f"out={out}: the file name must end with .safetensors.")
    check_output_path(out)
    ckpt = Path(cfg.ckpt_path)
    gan = load_any_generator(ckpt)  # a generator file or a GAN checkpoint; CheckpointError otherwise
    k = min(config_int(cfg, "grid_per_class", minimum=1), n)
    with task_run(cfg, csv=False) as run:
        images, labels = generate_set(gan, n, classes=classes, seed=seed)
        save_synthetic(out, images, labels, source=str(ckpt.resolve()), seed=seed, n_per_class=n, classes=classes)
        shown = (labels.view(len(classes), n)[:, :k].reshape(-1), images.view(len(classes), n, 28, 28)[:, :k])
        plot_sample_grid(shown[1].reshape(-1, 1, 28, 28).float() / 255, shown[0], out.with_suffix(".png"), out.stem)
        run.finish({"out": str(out.resolve()), "images": len(labels), "n_per_class": n, "classes": classes,
                    "seed": seed, "source_checkpoint": str(ckpt.resolve())})  # fmt: skip
    log.info(f"{len(labels)} images ({n} per class, classes {classes}, seed {seed}) -> {out} (+ {out.stem}.png)")
    return out


@hydra_task("generate")
def main(cfg: DictConfig) -> None:
    generate(cfg)
