"""`python eval.py ckpt_path=<checkpoint> [splits=[val,test]]`: re-score a checkpoint (a Lightning .ckpt, a run
directory's best.ckpt or an exported .safetensors model) in a run directory of its own.

The checkpoint rebuilds its model by itself (loaded with weights_only=True) and brings the split settings it was
trained with, so its validation split is the same one it was selected on. It also brings how its run scored it
(`scoring`: test-time augmentation, temperature fitted on validation, precision), so with no options eval.py gives
the number the run's metrics.json holds; `tta=` scores it otherwise. metrics.json and the log name what was used."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from fmnist.dataset import SPLIT_KEYS
from fmnist.models.files import load_trained
from fmnist.models.tta import check_tta
from fmnist.robustness import check_corruptions, check_settings, evaluate_corruptions
from fmnist.task import hydra_task, task_run
from fmnist.utils.containers import as_list
from fmnist.utils.errors import UserError
from fmnist.utils.io import scalar_metrics
from fmnist.utils.loggers import log_images
from fmnist.utils.plots import plot_confusion_matrix, plot_learning_curves
from fmnist.utils.run_info import run_dir_of, scored_checkpoint
from fmnist.utils.runtime import cpu_has_bf16, resolve_precision

log = logging.getLogger("fmnist")


def scored_precision(scoring: dict, trainer_cfg: DictConfig) -> None:
    """`trainer.precision=auto` -> the precision the model's figures were scored in (bf16 autocast flips a few test
    images), unless that is bf16 on hardware without it (emulated: slow). An explicit precision is kept."""
    recorded = scoring.get("precision")
    if str(trainer_cfg.get("precision")) != "auto" or not recorded:
        return
    on_gpu = torch.cuda.is_available() and str(trainer_cfg.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
    if recorded.startswith("bf16") and not (torch.cuda.is_bf16_supported() if on_gpu else cpu_has_bf16()):
        log.warning(f"the model was scored in {recorded}, which this machine lacks; figures may differ slightly.")
        return
    trainer_cfg.precision = recorded


def evaluate(cfg: DictConfig) -> dict[str, float]:
    cfg.ckpt_path = scored_checkpoint(cfg.ckpt_path)  # a run directory: the checkpoint validation chose
    splits = as_list(cfg.splits, "splits")
    if not splits or set(splits) - {"val", "test"}:
        raise UserError(f"splits={splits}: choose from val and test, e.g. splits=[val,test].")
    if cfg.tta != "auto":
        check_tta(cfg.tta)
    if cfg.get("corruptions") not in (None, False):  # a wrong name (or none: []) fails before anything loads
        check_corruptions(cfg.corruptions)
        check_settings(cfg.robustness)
    model, trained_with = load_trained(cfg.ckpt_path)  # a .ckpt, or an exported .safetensors (the shipped ones)
    if not trained_with and "val" in splits:
        log.warning(f"{cfg.ckpt_path} does not record its training split; val uses the data config's split.")
    model.tta = model.tta if cfg.tta == "auto" else cfg.tta  # auto: the checkpoint's own (none if it records none)
    scored_precision(model.hparams.get("scoring") or {}, cfg.trainer)
    datamodule = instantiate(cfg.data, **{k: trained_with[k] for k in SPLIT_KEYS if k in trained_with})
    with task_run(cfg, csv=False) as run:
        datamodule.setup("test")
        resolve_precision(cfg.trainer)
        trainer = instantiate(cfg.trainer, logger=run.loggers, callbacks=[RichProgressBar()])
        metrics: dict = {"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "run_dir": str(run.dir), "tta": model.tta,
                         "temperature": model.val_temperature, "precision": str(trainer.precision)}  # fmt: skip
        figures = {}
        for split in splits:  # the Classifier's test loop computes every metric; rename them per split
            loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
            (results,) = trainer.test(model, dataloaders=loader, verbose=False)
            metrics.update({f"{split}/" + k.removeprefix("test/"): v for k, v in scalar_metrics(results).items()})
            name = "confusion_matrix.png" if split == "test" else f"confusion_matrix_{split}.png"
            figures[name.removesuffix(".png")] = plot_confusion_matrix(
                model.confusion, model.hparams.class_names, run.dir / name,
                f"{Path(cfg.ckpt_path).name} — {split} accuracy {metrics[f'{split}/acc']:.4f}",
            )  # fmt: skip
        if cfg.get("corruptions") not in (None, False):  # the corruption suite (fmnist.robustness, docs/robustness.md)
            figures |= evaluate_corruptions(cfg, model, datamodule, run.dir, run.loggers, metrics)
        trained_in = run_dir_of(cfg.ckpt_path)
        if trained_in is not None and (trained_in / "metrics.csv").is_file():
            curves = plot_learning_curves(trained_in / "metrics.csv", run.dir / "learning_curves.png")
            if curves:
                figures["learning_curves"] = curves
        log_images(run.loggers, figures)
        run.finish(metrics)
        shown = " · ".join(f"{s}/acc {metrics[f'{s}/acc']:.4f} nll {metrics[f'{s}/nll']:.4f}" for s in splits)
        how = f"tta={model.tta} · temperature {model.val_temperature:.3f} · {trainer.precision}"
        log.info(f"{shown} · {how} · run dir: {run.dir}")
        return metrics


@hydra_task("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
