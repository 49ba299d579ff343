"""`python eval.py ckpt_path=<checkpoint> [splits=[val,test]]`: re-score a checkpoint (a Lightning .ckpt or an
exported .safetensors model) in a run directory of its own.

The checkpoint rebuilds its model by itself (loaded with weights_only=True) and brings the split settings it was
trained with, so its validation split is the same one it was selected on."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig, OmegaConf

from fmnist import PROJECT_ROOT
from fmnist.data.datamodule import SPLIT_KEYS
from fmnist.data.tta import check_tta
from fmnist.models.classifier import Classifier
from fmnist.predict.model import load_safetensors
from fmnist.utils.errors import UserError
from fmnist.utils.io import read_classifier_checkpoint, run_dir_of
from fmnist.utils.loggers import finish_wandb, log_images
from fmnist.utils.plots import plot_confusion_matrix, plot_learning_curves
from fmnist.utils.runtime import (
    instantiate_group,
    report_user_errors,
    resolve_precision,
    scalar_metrics,
    setup_runtime,
    write_json,
)

log = logging.getLogger("fmnist")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    splits = list(cfg.splits)
    if not splits or set(splits) - {"val", "test"}:
        raise UserError(f"splits={splits}: choose from val and test, e.g. splits=[val,test].")
    check_tta(cfg.tta)
    if Path(cfg.ckpt_path).suffix == ".safetensors":  # an exported model (python export.py, the shipped one)
        model = load_safetensors(cfg.ckpt_path)
        trained_with = model.trained_split
        if not trained_with and "val" in splits:
            log.warning(f"{cfg.ckpt_path} does not record its training split; val uses the data config's split.")
    else:
        checkpoint = read_classifier_checkpoint(cfg.ckpt_path)
        model = Classifier.load_from_checkpoint(cfg.ckpt_path, map_location="cpu", weights_only=True)
        trained_with = checkpoint.get("datamodule_hyper_parameters") or {}
    setup_runtime(cfg)
    run_dir = Path(cfg.paths.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model.tta = cfg.tta
    datamodule = instantiate(cfg.data, **{k: trained_with[k] for k in SPLIT_KEYS if k in trained_with})
    datamodule.setup("test")
    loggers = instantiate_group(cfg.get("logger"))
    resolve_precision(cfg.trainer)
    trainer = instantiate(cfg.trainer, logger=loggers, callbacks=[RichProgressBar()])
    try:
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        metrics: dict = {"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "run_dir": str(run_dir), "tta": cfg.tta}
        figures = {}
        for split in splits:  # the Classifier's test loop computes every metric; rename them per split
            loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
            (results,) = trainer.test(model, dataloaders=loader, verbose=False)
            metrics.update({f"{split}/" + k.removeprefix("test/"): v for k, v in scalar_metrics(results).items()})
            name = "confusion_matrix.png" if split == "test" else f"confusion_matrix_{split}.png"
            figures[name.removesuffix(".png")] = plot_confusion_matrix(
                model.confusion, model.hparams.class_names, run_dir / name,
                f"{Path(cfg.ckpt_path).name} — {split} accuracy {metrics[f'{split}/acc']:.4f}",
            )  # fmt: skip
        trained_in = run_dir_of(cfg.ckpt_path)
        if trained_in is not None and (trained_in / "metrics.csv").is_file():
            curves = plot_learning_curves(trained_in / "metrics.csv", run_dir / "learning_curves.png")
            if curves:
                figures["learning_curves"] = curves
        log_images(loggers, figures)
        write_json(run_dir / "metrics.json", metrics)
        shown = " · ".join(f"{s}/acc {metrics[f'{s}/acc']:.4f}" for s in splits)
        log.info(f"{shown} · run dir: {run_dir}")
        return metrics
    finally:
        finish_wandb(loggers)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="eval")
def main(cfg: DictConfig) -> None:
    report_user_errors(evaluate, cfg)
