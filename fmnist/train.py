"""`python train.py ...`: fit on the training split, pick the best epoch on validation, test once, write the run's
metrics and figures. Returns the optimised (validation) metric for sweeps."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning.pytorch as pl
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from fmnist.models.calibration import calibrate_checkpoint
from fmnist.models.classifier import Classifier
from fmnist.models.rng_state import RestoreRNG
from fmnist.models.tta import check_tta
from fmnist.task import TaskRun, hydra_task, instantiate_group, task_run
from fmnist.utils.errors import ConfigError, UserError
from fmnist.utils.interrupt import resume_hint_on_interrupt
from fmnist.utils.io import read_classifier_checkpoint, scalar_metrics
from fmnist.utils.loggers import log_images
from fmnist.utils.plots import plot_confusion_matrix, plot_learning_curves
from fmnist.utils.resume import discarded_if_refused, resume_config, resumed_choices
from fmnist.utils.runtime import resolve_precision

log = logging.getLogger("fmnist")


def resolve_tta(cfg: DictConfig) -> str:
    """The final test's TTA mode. `auto` mirrors test images only for a model that trained on mirrored images: one
    trained without flips lost 8 points with tta=flip (docs/augmentation.md): Fashion-MNIST's shoes all point one
    way."""
    mode = cfg.get("tta") or "none"
    flips = float((cfg.get("aug") or {}).get("flip") or 0) > 0
    if mode == "auto":
        return "flip" if flips else "none"
    if "flip" in check_tta(mode) and not flips:
        log.warning(f"tta={mode} on a model trained without flips (aug.flip=0): mirrored images are unseen by it "
                    "and cost accuracy; tta=auto or tta=none avoids it.")  # fmt: skip
    return mode


def check_config(cfg: DictConfig) -> int:
    """Config mistakes that would otherwise surface late or obscurely. Returns the global step resumed from."""
    if (cfg.get("tta") or "none") != "auto":
        check_tta(cfg.get("tta") or "none")
    metric = cfg.get("optimized_metric")
    if metric and not str(metric).startswith(("val/", "train/")):
        raise UserError(
            f"optimized_metric={metric}: the optimised metric must be a validation metric (e.g. val/acc_best); "
            "the test split is only scored once, at the end."
        )
    monitored = {"optimized_metric": metric} | {
        f"callbacks.{name}.monitor": node.get("monitor")
        for name, node in (cfg.get("callbacks") or {}).items()
        if isinstance(node, DictConfig)
    }
    logged = (*Classifier.EPOCH_METRICS, "epoch", "step")  # and Lightning's counters
    for key, value in monitored.items():  # else Lightning stops after the first epoch, with a traceback
        if value and value not in logged:
            raise ConfigError(f"{key}={value}: training logs no such metric; choose {', '.join(logged)}.")
    if cfg.get("ckpt_path"):
        if Path(cfg.ckpt_path).suffix == ".safetensors":  # exported weights: no optimizer, schedule or epoch
            raise UserError(
                f"ckpt_path={cfg.ckpt_path}: train.py resumes a run from its checkpoints/last.ckpt; a .safetensors "
                "file holds no training state (score it with eval.py, predict with it with predict.py, or give "
                "it as a teacher: experiment=distill 'teacher.runs=[<file>]')."
            )
        checkpoint = read_classifier_checkpoint(cfg.ckpt_path)
        if "loops" not in checkpoint or "optimizer_states" not in checkpoint:
            raise UserError(f"{cfg.ckpt_path} holds weights only, no training state; it cannot resume a run.")
        saved = checkpoint["hyper_parameters"]["backbone"]
        asked = OmegaConf.to_container(cfg.model.backbone, resolve=True)
        if saved != asked:  # its weights would not load (Lightning fails late, inside fit, with a raw traceback)
            differ = sorted(k for k in saved.keys() | asked.keys() if saved.get(k) != asked.get(k))
            raise UserError(
                f"{cfg.ckpt_path} was trained with another network ({', '.join(f'model.backbone.{k}' for k in differ)}"
                f" differ: {[saved.get(k) for k in differ]} in the checkpoint, {[asked.get(k) for k in differ]} "
                "asked). Pass the model settings it was trained with, or resume from its run directory "
                "(ckpt_path=<run>/checkpoints/last.ckpt uses the run's own config)."
            )
        return int(checkpoint.get("global_step", 0))
    return 0


def group_choices() -> dict[str, str]:
    """Which option of each config group this run uses (model=cnn, aug=basic, ...), when Hydra runs it."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    choices = resumed_choices() or HydraConfig.get().runtime.choices  # a resumed run's are its own
    return {k: str(v) for k, v in choices.items() if not k.startswith("hydra")}


def build(cfg: DictConfig, loggers: list[Logger]) -> tuple[pl.LightningDataModule, pl.LightningModule, pl.Trainer]:
    """Cheap checks first, expensive steps last: the model (its config values and pretrained weights: a missing
    download fails here within seconds), the data files (read and verified) and the trainer are built before the
    augmentation, whose synthetic source (aug=gan) may generate thousands of images."""
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, augment=None)
    datamodule.setup("fit")  # locate and verify the data files now, not after the augmentation; fit reuses them
    callbacks = [*instantiate_group(cfg.get("callbacks")), RestoreRNG()]  # not optional: resume = uninterrupted
    resolve_precision(cfg.trainer)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    datamodule.augment = instantiate(cfg.aug) if cfg.get("aug") and "_target_" in cfg.aug else None
    return datamodule, model, trainer


def write_figures(run: TaskRun, model: pl.LightningModule, metrics: dict, title: str) -> dict[str, Path]:
    """confusion_matrix.png and learning_curves.png in the run directory; they also go to W&B."""
    figures = {}
    if getattr(model, "confusion", None) is not None:
        figures["confusion_matrix"] = plot_confusion_matrix(
            model.confusion, model.hparams.class_names, run.dir / "confusion_matrix.png",
            f"{title} — test accuracy {metrics.get('test/acc', float('nan')):.4f}",
        )  # fmt: skip
    if (run.dir / "metrics.csv").is_file():
        curves = plot_learning_curves(run.dir / "metrics.csv", run.dir / "learning_curves.png", title)
        if curves:
            figures["learning_curves"] = curves
    log_images(run.loggers, figures)
    return figures


def train(cfg: DictConfig) -> float | None:
    cfg = resume_config(cfg)  # a run resumed in place trains with its own saved config
    with discarded_if_refused():  # a refused resume attempt leaves no config folder in the run
        resumed_step = check_config(cfg)
    with task_run(cfg) as run, resume_hint_on_interrupt(run.dir):  # Ctrl-C/SIGTERM: print the resume command
        datamodule, model, trainer = build(cfg, run.loggers)
        model.tta = resolve_tta(cfg)  # the final test only; validation never uses it
        start = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        fit_seconds = time.perf_counter() - start
        metrics = scalar_metrics(trainer.callback_metrics)
        optimized = metrics.get(cfg.get("optimized_metric") or "", None)

        # the checkpoint validation chose (callbacks.model_checkpoint; last_checkpoint monitors nothing)
        monitored = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.monitor]
        best = monitored[0].best_model_path if monitored else ""
        if best:  # temperature and uncertainty threshold of the best weights, fitted on validation (never test)
            model.hparams.scoring = calibrate_checkpoint(best, model.tta, datamodule.val_set, trainer)
        if cfg.get("test"):
            # the test split, once, with the weights validation chose
            trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
            metrics.update(scalar_metrics(trainer.callback_metrics))
        choices = group_choices()
        steps = trainer.global_step - resumed_step
        metrics.update(
            {
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "fit_seconds": fit_seconds,
                # includes the validation passes: the throughput a user sees
                "fit_images_per_second": steps * datamodule.hparams.batch_size * trainer.world_size / fit_seconds,
                "best_checkpoint": best,
                "run_dir": str(run.dir),
                "seed": cfg.get("seed"),
                "precision": str(trainer.precision),  # what precision=auto resolved to on this machine
                "tta": model.tta,
                **getattr(model, "extra_metrics", {}),  # what a model records of its run (a Distiller: its teachers)
                "temperature": model.val_temperature,  # test/nll and test/ece are after it, test/*_raw before
                **{f"choice/{k}": v for k, v in choices.items() if k in ("model", "aug", "experiment") and v != "None"},
            }
        )
        if not trainer.is_global_zero:  # under DDP, one process writes the run's files
            return optimized
        title = " · ".join(f"{k}={choices[k]}" for k in ("model", "aug") if k in choices)
        write_figures(run, model, metrics, title)
        run.finish(metrics)
        summary = f"val/acc_best {metrics.get('val/acc_best', float('nan')):.4f}"
        if "test/acc" in metrics:  # scored with the run's TTA and validation temperature, as eval.py scores it
            scoring = f"tta={model.tta}, temperature {model.val_temperature:.3f}"
            summary += f" · test/acc {metrics['test/acc']:.4f} ({scoring})"
        log.info(f"{summary} · {fit_seconds:.0f} s · run dir: {run.dir}")
        return optimized


@hydra_task("train")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)
