"""`python eval.py ckpt_path=<checkpoint> [splits=[val,test]]`: re-score a checkpoint (a Lightning .ckpt or an
exported .safetensors model) in a run directory of its own.

The checkpoint rebuilds its model by itself (loaded with weights_only=True) and brings the split settings it was
trained with, so its validation split is the same one it was selected on."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from omegaconf import DictConfig

from fmnist.data.datamodule import SPLIT_KEYS
from fmnist.data.tta import check_tta
from fmnist.predict.model import build, load_safetensors
from fmnist.robustness import check_corruptions, evaluate_corruptions
from fmnist.utils.errors import UserError
from fmnist.utils.io import read_classifier_checkpoint, run_dir_of
from fmnist.utils.loggers import log_images
from fmnist.utils.plots import plot_confusion_matrix, plot_learning_curves
from fmnist.utils.runtime import resolve_precision, scalar_metrics
from fmnist.utils.task import hydra_task, task_run

log = logging.getLogger("fmnist")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    splits = list(cfg.splits)
    if not splits or set(splits) - {"val", "test"}:
        raise UserError(f"splits={splits}: choose from val and test, e.g. splits=[val,test].")
    check_tta(cfg.tta)
    if cfg.get("corruptions"):  # a wrong name fails before anything loads
        check_corruptions(cfg.corruptions)
    if Path(cfg.ckpt_path).suffix == ".safetensors":  # an exported model (python export.py, the shipped one)
        model = load_safetensors(cfg.ckpt_path)
        trained_with = model.trained_split
        if not trained_with and "val" in splits:
            log.warning(f"{cfg.ckpt_path} does not record its training split; val uses the data config's split.")
    else:
        checkpoint = read_classifier_checkpoint(cfg.ckpt_path)
        model = build(dict(checkpoint["hyper_parameters"]), checkpoint["state_dict"], Path(cfg.ckpt_path))
        trained_with = checkpoint.get("datamodule_hyper_parameters") or {}
    model.tta = cfg.tta
    datamodule = instantiate(cfg.data, **{k: trained_with[k] for k in SPLIT_KEYS if k in trained_with})
    with task_run(cfg, csv=False) as run:
        datamodule.setup("test")
        resolve_precision(cfg.trainer)
        trainer = instantiate(cfg.trainer, logger=run.loggers, callbacks=[RichProgressBar()])
        metrics: dict = {"ckpt_path": str(Path(cfg.ckpt_path).resolve()), "run_dir": str(run.dir), "tta": cfg.tta}
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
        if cfg.get("corruptions"):  # the corruption suite (fmnist.robustness, docs/robustness.md)
            figures |= evaluate_corruptions(cfg, model, datamodule, run.dir, run.loggers, metrics)
        trained_in = run_dir_of(cfg.ckpt_path)
        if trained_in is not None and (trained_in / "metrics.csv").is_file():
            curves = plot_learning_curves(trained_in / "metrics.csv", run.dir / "learning_curves.png")
            if curves:
                figures["learning_curves"] = curves
        log_images(run.loggers, figures)
        run.finish(metrics)
        shown = " · ".join(f"{s}/acc {metrics[f'{s}/acc']:.4f}" for s in splits)
        log.info(f"{shown} · run dir: {run.dir}")
        return metrics


@hydra_task("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)
