"""`python gan.py ...`: train the class-conditional GAN on the training split (conf/gan.yaml), then write its synthetic
set and score it (fmnist.gan.metrics) into the run's metrics.json.

A run directory holds checkpoints/last.ckpt (the generator checkpoint: generate.py, aug.source and resuming take
it), generator.safetensors (the sampling generator alone, float16, pickle-free: aug.source and generate.py take it;
the shipped models/fmnist_gan.safetensors is one), samples/epoch_NNN.png (one 10x10 grid per epoch), samples.png
(the final grid), synthetic.safetensors (the set CAS is trained on; usable as aug.source), metrics.csv and
metrics.json (written last).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fmnist.data.datamodule import FashionMNISTDataModule
from fmnist.data.synthetic import generate_set, save_synthetic
from fmnist.gan.metrics import classification_accuracy_score, real_data_classifier, sample_quality, split_settings
from fmnist.models.gan import GAN, plot_sample_grid
from fmnist.models.generator_file import save_generator_file
from fmnist.models.rng_state import RestoreRNG
from fmnist.task import hydra_task, instantiate_group, task_run
from fmnist.utils.errors import UserError, config_int
from fmnist.utils.interrupt import resume_hint_on_interrupt
from fmnist.utils.io import read_gan_checkpoint, scalar_metrics
from fmnist.utils.loggers import log_images
from fmnist.utils.resume import discarded_if_refused, resume_config
from fmnist.utils.runtime import resolve_precision

log = logging.getLogger("fmnist")


def check_config(cfg: DictConfig) -> int:
    """Config mistakes that would surface late. Returns the epoch training starts at (a resumed run: later)."""
    if "generator" not in cfg.model:
        raise UserError("gan.py trains a GAN: `model` must be a GAN config (conf/gan_model/, gan_model@model=dcgan).")
    if cfg.get("metrics"):  # read after training: a typo must not cost the GAN's hours
        config_int(cfg.metrics, "cas_per_class", minimum=1, where="metrics.")
        for key in ("n_per_class", "epochs", "batch_size") if cfg.metrics.get("enabled") else ():
            config_int(cfg.metrics, key, minimum=1, where="metrics.")
        config_int(cfg.metrics, "seed", where="metrics.")
        if cfg.metrics.get("enabled"):  # its optimizer and schedule values, which torch checks only when fit starts
            instantiate(cfg.metrics.classifier).build_optimizer(steps=100, where="metrics.classifier")
    if not cfg.get("ckpt_path"):
        return 0
    if Path(cfg.ckpt_path).suffix == ".safetensors":  # a generator file holds no optimizer state to resume
        raise UserError(
            f"ckpt_path={cfg.ckpt_path}: gan.py resumes a GAN run from its checkpoints/last.ckpt; a .safetensors "
            "file holds no training state (a generator file samples with scripts/generate.py or trains classifiers "
            "with aug=gan aug.source=<file>)."
        )
    checkpoint = read_gan_checkpoint(cfg.ckpt_path)  # resume with <gan run>/checkpoints/last.ckpt
    return int(checkpoint.get("epoch", -1)) + 1


def write_samples(gan: GAN, run_dir: Path, metrics_cfg: DictConfig | None, seed: int) -> tuple[Path, Path]:
    """The final 10x10 grid and the synthetic set (metrics.cas_per_class images per class)."""
    grid = plot_sample_grid(gan.sample(gan.grid_labels, noise=gan.grid_noise), gan.grid_labels,
                            run_dir / "samples.png", f"{run_dir.name} (final)")  # fmt: skip
    n = int(metrics_cfg.cas_per_class) if metrics_cfg else 6000
    images, labels = generate_set(gan, n, seed=seed)
    path = save_synthetic(run_dir / "synthetic.safetensors", images, labels, source=str(run_dir), seed=seed,
                          n_per_class=n)  # fmt: skip
    return grid, path


def quality(
    gan: GAN, cfg: DictConfig, datamodule: FashionMNISTDataModule, synthetic: Path, run_dir: Path
) -> dict[str, float]:
    """CAS, Fréchet distance and agreement (fmnist.gan.metrics), on the real test split."""
    m = cfg.metrics
    trainer_kwargs = {"accelerator": cfg.trainer.accelerator, "precision": cfg.trainer.precision}
    data = OmegaConf.to_container(cfg.data, resolve=True) | {"batch_size": int(m.batch_size)}
    classifier, info = real_data_classifier(m.classifier, data, int(m.epochs), int(m.seed), Path(m.cache_dir),
                                            trainer_kwargs)  # fmt: skip
    test = datamodule.test_set
    fake_images, fake_labels = generate_set(gan, int(m.n_per_class), seed=int(m.seed) + 1)
    metrics = sample_quality(classifier, test.images, test.labels, fake_images, fake_labels)
    metrics["quality/real_test_acc"] = info["metrics"]["test/acc"]  # the same CNN recipe trained on real images
    metrics |= classification_accuracy_score(m.classifier, data, synthetic, int(m.epochs), run_dir / "cas",
                                             trainer_kwargs, int(m.seed))  # fmt: skip
    return metrics


def train_gan(cfg: DictConfig) -> dict[str, float]:
    cfg = resume_config(cfg)  # a run resumed in place trains with its own saved config
    with discarded_if_refused():  # a refused resume attempt leaves no config folder in the run
        start_epoch = check_config(cfg)
    with task_run(cfg) as run, resume_hint_on_interrupt(run.dir):  # Ctrl-C/SIGTERM: print the resume command
        datamodule = instantiate(cfg.data, augment=None)
        gan: GAN = instantiate(cfg.model)
        # RestoreRNG: a resumed run samples as one that ran through
        callbacks = [*instantiate_group(cfg.get("callbacks")), RestoreRNG()]
        resolve_precision(cfg.trainer)
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=run.loggers)
        start = time.perf_counter()
        trainer.fit(gan, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        fit_seconds = time.perf_counter() - start
        metrics = scalar_metrics(trainer.callback_metrics)
        epochs_run = max(1, trainer.current_epoch - start_epoch)
        seed = cfg.seed if cfg.get("seed") is not None else 0
        grid, synthetic = write_samples(gan, run.dir, cfg.get("metrics"), seed)
        log_images(run.loggers, {"samples_final": grid})
        if cfg.get("metrics") and cfg.metrics.enabled:
            metrics |= quality(gan, cfg, datamodule, synthetic, run.dir)
        scores = {k: v for k, v in metrics.items() if k.startswith("quality/")}
        generator_file = save_generator_file(gan, run.dir / "generator.safetensors", split_settings(cfg.data), scores)
        metrics |= {
            "epochs": trainer.current_epoch,
            "fit_seconds": fit_seconds,
            "seconds_per_epoch": fit_seconds / epochs_run,
            "images_per_second": len(datamodule.train_set) * epochs_run / fit_seconds,
            "train_images": len(datamodule.train_set),
            "generator_checkpoint": str(run.dir / "checkpoints" / "last.ckpt"),
            "generator_file": str(generator_file),
            "synthetic_set": str(synthetic),
            "run_dir": str(run.dir),
            "seed": cfg.get("seed"),
        }
        for logger in run.loggers:  # the figures also go to W&B / TensorBoard
            logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("quality/")})
            logger.save()
        run.finish(metrics)
        summary = ", ".join(f"{k.split('/')[1]} {metrics[k]:.3f}" for k in ("quality/cas", "quality/fd",
                            "quality/agreement") if k in metrics)  # fmt: skip
        log.info(f"GAN: {summary or 'no metrics'} · {fit_seconds:.0f} s · run dir: {run.dir}")
        return metrics


@hydra_task("gan")
def main(cfg: DictConfig) -> None:
    train_gan(cfg)
