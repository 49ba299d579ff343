"""`python scripts/ensemble.py runs=[<run>,<run>,...]`: combine finished runs' checkpoints.

The order of work makes the split discipline visible: every member predicts the validation split, every rule
(weights, greedy selection, temperatures) is fitted on those predictions, and only then do the members predict the
test split, which is scored once. Members may differ in architecture and input size: each checkpoint's Classifier
adapts the same [0, 1] batches to its own input (`prepare_input`).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from fmnist.dataset import VAL_SPLIT_KEYS
from fmnist.ensemble.combine import Combination, check_methods, fit_combination, fit_temperature
from fmnist.ensemble.members import describe_tta, load_members, predict, recorded_temperatures
from fmnist.ensemble.report import build_report, write_outputs
from fmnist.models.tta import check_tta
from fmnist.task import hydra_task, task_run
from fmnist.utils.containers import as_list
from fmnist.utils.errors import UserError, config_int
from fmnist.utils.run_info import expand_runs

log = logging.getLogger("fmnist")


def fit_on_validation(
    val_log_probs: torch.Tensor, val_labels: torch.Tensor, cfg: DictConfig, recorded: torch.Tensor | None = None
) -> tuple[dict[str, Combination], list[Combination]]:
    """Every fitted choice of the ensemble, from validation predictions (M, N, C) and labels alone: one combination
    per method, and each member as a one-member combination with its own temperature (`recorded`: the ones the
    members' runs fitted on the same validation split, used as they are)."""
    member_temperatures = recorded
    if member_temperatures is None and (cfg.temperature_scaling or cfg.calibrate_members):
        member_temperatures = torch.tensor([fit_temperature(lp, val_labels) for lp in val_log_probs])
    methods = {
        method: fit_combination(
            method,
            val_log_probs,
            val_labels,
            cfg.temperature_scaling,
            cfg.greedy.rounds,
            cfg.greedy.metric,
            member_temperatures if cfg.calibrate_members else None,
        )
        for method in check_methods(as_list(cfg.methods, "methods"))
    }
    singles = []
    for i in range(len(val_log_probs)):
        weights = F.one_hot(torch.tensor(i), len(val_log_probs)).double()
        temperature = float(member_temperatures[i]) if cfg.temperature_scaling else None
        singles.append(Combination("soft", weights, temperature))
    return methods, singles


def resolve_device(name: str) -> torch.device:
    """`device`: auto (a GPU when there is one), cpu, cuda or cuda:<n>; UserError for another name or a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = str(name).partition(":")
    if kind not in ("cpu", "cuda") or (index and not (kind == "cuda" and index.isdigit())):
        raise UserError(f"device={name}: choose auto, cpu, cuda or cuda:<n>.")
    if kind == "cuda" and int(index or 0) >= torch.cuda.device_count():
        raise UserError(f"device={name}: this machine has {torch.cuda.device_count()} CUDA GPU(s); use device=auto.")
    return torch.device(name)


def ensemble(cfg: DictConfig) -> dict:
    if cfg.tta != "auto":
        check_tta(cfg.tta)
    check_methods(as_list(cfg.methods, "methods"))
    if cfg.greedy.metric not in ("nll", "acc"):  # before any member is scored
        raise UserError(f"greedy.metric={cfg.greedy.metric!r}: choose nll or acc.")
    config_int(cfg.greedy, "rounds", minimum=1, where="greedy.")
    device = resolve_device(cfg.device)
    paths = expand_runs(OmegaConf.to_object(cfg.runs) if OmegaConf.is_list(cfg.runs) else cfg.runs, cfg.checkpoint)
    checksums = OmegaConf.to_object(cfg.data.checksums) if cfg.data.get("checksums") is not None else None
    members = load_members(paths, checksums)
    with task_run(cfg, csv=False) as run:
        datamodule = instantiate(cfg.data, **{k: members[0].split[k] for k in VAL_SPLIT_KEYS})
        datamodule.setup("test")
        batch_size = config_int(cfg, "batch_size", minimum=1)
        log.info(f"{len(members)} members: " + ", ".join(f"{m.name} ({m.ckpt_path})" for m in members))

        # 1. validation: predict, then fit everything there is to fit
        val_labels = datamodule.val_set.labels
        val_logits = predict(members, datamodule.val_set.images, "val", cfg.tta, batch_size, device)
        recorded = recorded_temperatures(members, cfg.tta)
        methods, singles = fit_on_validation(val_logits.log_softmax(-1), val_labels, cfg, recorded)

        # 2. test: predicted once the fits are fixed, scored once
        test_labels = datamodule.test_set.labels
        test_logits = predict(members, datamodule.test_set.images, "test", cfg.tta, batch_size, device)
        val, test = (val_logits.log_softmax(-1), val_labels), (test_logits.log_softmax(-1), test_labels)
        report = build_report(members, methods, singles, val, test, cfg)
        report["settings"]["tta"] = describe_tta(members, cfg.tta)
        report["settings"]["member_temperatures_recorded"] = recorded is not None
        metrics = write_outputs(run.dir, report, run.loggers)
        run.finish(metrics)
    best = max(r["test"]["acc"] for r in report["rows"] if r["kind"] == "member")
    log.info(
        f"{report['rows'][len(members)]['name']}: test/acc {metrics['test/acc']:.4f} (best member {best:.4f}) · "
        f"table: {run.dir / 'results.md'}"
    )
    return metrics


@hydra_task("ensemble")
def main(cfg: DictConfig) -> None:
    ensemble(cfg)
