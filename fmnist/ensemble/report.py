"""What an ensemble run writes: the table of members and methods (results.md, results.json), metrics.json (flat,
for the leaderboard and the loggers), confusion matrices, the accuracy bar chart and the disagreement matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from fmnist.ensemble.combine import METHODS, Combination, apply_temperature, confusion, disagreement, scores
from fmnist.models.classifier import metric_suffix
from fmnist.utils.io import write_json
from fmnist.utils.loggers import log_images
from fmnist.utils.plots import plot_confusion_matrix

Split = tuple[torch.Tensor, torch.Tensor]  # (M, N, C) member log-probabilities, (N,) labels


def score_row(combination: Combination, val: Split, test: Split) -> dict[str, Any]:
    """Scores of a fitted combination on both splits, before and (if fitted) after temperature scaling."""
    member_temperatures = combination.member_temperatures
    row: dict[str, Any] = {
        "weights": combination.weights.tolist(),
        "temperature": combination.temperature,
        "member_temperatures": None if member_temperatures is None else member_temperatures.tolist(),
    }
    for split, (member_log_probs, labels) in (("val", val), ("test", test)):
        combined = combination.combine(member_log_probs)
        row[split] = scores(combined, labels, combination.probabilistic)
        if combination.temperature is not None:
            scaled = scores(apply_temperature(combined, combination.temperature), labels)
            row[f"{split}_ts"] = {"nll": scaled["nll"], "ece": scaled["ece"]}  # accuracy cannot change
    return row


def build_report(
    members: list, methods: dict[str, Combination], singles: list[Combination], val: Split, test: Split, cfg: DictConfig
) -> dict[str, Any]:
    """Every member and every method scored; confusion matrices and the members' disagreement on the test split."""
    rows, confusions = [], {}
    for i, (member, single) in enumerate(zip(members, singles, strict=True)):
        row = {"key": f"member{i}", "name": member.name, "kind": "member", "ckpt_path": str(member.ckpt_path)}
        rows.append({**row, **score_row(single, val, test)})
    for method, combination in methods.items():
        rows.append({"key": method, "name": METHODS[method], "kind": "ensemble", **score_row(combination, val, test)})
        confusions[method] = confusion(combination(test[0]), test[1])
    return {
        "rows": rows,
        "class_names": list(members[0].model.hparams.class_names),
        "disagreement": disagreement(test[0]).tolist(),
        "settings": {
            "tta": cfg.tta,
            "methods": list(methods),  # the checked names (methods=soft: ["soft"])
            "temperature_scaling": bool(cfg.temperature_scaling),
            "calibrate_members": bool(cfg.calibrate_members),
            "greedy": OmegaConf.to_container(cfg.greedy),
            "checkpoint": cfg.checkpoint,
            "split": dict(members[0].split),
            "n_val": len(val[1]),
            "n_test": len(test[1]),
        },
        "confusions": confusions,  # tensors, drawn and then dropped from results.json
    }


def _fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(report: dict[str, Any]) -> str:
    ts = report["settings"]["temperature_scaling"]
    head = ["", "val acc", "test acc", "test NLL", "test ECE"] + (["NLL (TS)", "ECE (TS)", "T"] if ts else [])
    lines = ["| " + " | ".join([*head, "weights"]) + " |", "|" + "---|" * (len(head) + 1)]
    for r in report["rows"]:
        cells = [
            r["name"],
            _fmt(r["val"]["acc"]),
            _fmt(r["test"]["acc"]),
            _fmt(r["test"]["nll"]),
            _fmt(r["test"]["ece"]),
        ]
        if ts:
            after = r.get("test_ts", {})
            cells += [_fmt(after.get("nll")), _fmt(after.get("ece")), _fmt(r["temperature"], 3)]
        weights = "" if r["kind"] == "member" else " ".join(f"{w:.2f}" for w in r["weights"])
        lines.append("| " + " | ".join([*cells, weights]) + " |")
    names = report["class_names"]
    lines += ["", "Per-class test accuracy:", "", "| | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    lines += [
        "| " + " | ".join([r["name"], *(_fmt(a, 3) for a in r["test"]["class_acc"])]) + " |" for r in report["rows"]
    ]
    s = report["settings"]
    note = (
        f"{s['n_val']} validation images (val_size={s['split']['val_size']}, split_seed={s['split']['split_seed']}) "
        f"fit weights, selection and temperatures; {s['n_test']} test images scored once. TTA: {s['tta']}. "
        + ("Members are combined after their own temperature (calibrate_members). " if s["calibrate_members"] else "")
        + (
            "Member temperatures: the ones their runs fitted on this validation split (recorded in the checkpoints). "
            if s.get("member_temperatures_recorded")
            else ""
        )
        + "Hard voting gives vote shares, not probabilities: no NLL."
    )
    return "\n".join(["# Ensemble", "", *lines, "", note, ""])


def flat_metrics(report: dict[str, Any]) -> dict[str, Any]:
    """`<row>/<split>/<metric>` for every row, and the first method's figures as the run's own test/acc etc."""
    metrics: dict[str, Any] = {}
    for r in report["rows"]:
        for split in ("val", "test", "val_ts", "test_ts"):
            for name, value in r.get(split, {}).items():
                if name == "class_acc" and split == "test":
                    metrics.update(
                        {
                            f"{r['key']}/{split}/acc_{metric_suffix(c)}": a
                            for c, a in zip(report["class_names"], value, strict=True)
                        }
                    )
                elif name != "class_acc" and value is not None:
                    metrics[f"{r['key']}/{split}/{name}"] = value
        if r["temperature"] is not None:
            metrics[f"{r['key']}/temperature"] = r["temperature"]
    headline = next(r for r in report["rows"] if r["kind"] == "ensemble")
    for split in ("val", "test"):
        metrics.update({f"{split}/{k}": v for k, v in headline[split].items() if k != "class_acc" and v is not None})
    metrics["best_member/test/acc"] = max(r["test"]["acc"] for r in report["rows"] if r["kind"] == "member")
    return metrics


def plot_accuracy_bars(report: dict[str, Any], path: Path) -> Path:
    """Test accuracy of each member and each method; the dashed line is the best member."""
    rows = report["rows"]
    accs = [r["test"]["acc"] for r in rows]
    best = max(a for a, r in zip(accs, rows, strict=True) if r["kind"] == "member")
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.5), layout="constrained")
    colors = ["tab:gray" if r["kind"] == "member" else "tab:blue" for r in rows]
    ax.barh(range(len(rows)), accs, color=colors)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows])
    ax.invert_yaxis()
    for i, acc in enumerate(accs):
        ax.text(acc, i, f" {acc:.4f}", va="center", fontsize=8)
    ax.axvline(best, color="black", linestyle="--", linewidth=1, label=f"best member {best:.4f}")
    ax.set_xlim(max(0.0, min(accs) - 0.05), min(1.0, max(accs) + 0.03))  # zoom: the differences are small
    ax.set(xlabel="test accuracy", title=f"Members vs ensembles (TTA: {report['settings']['tta']})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars fill the axes
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_disagreement(matrix: list[list[float]], names: list[str], path: Path) -> Path:
    """Share of test images on which two members predict different classes (diversity of the ensemble)."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(0.9 * n + 4.5, 0.8 * n + 3), layout="constrained")
    top = max(max(row) for row in matrix) or 1.0
    im = ax.imshow(matrix, cmap="Oranges", vmin=0, vmax=top)
    ax.set(xticks=range(n), yticks=range(n), title="Pairwise disagreement (test)")
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    for i in range(n):
        for j in range(n):
            color = "white" if matrix[i][j] > 0.6 * top else "black"
            ax.text(j, i, f"{matrix[i][j]:.3f}", ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of images")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(run_dir: Path, report: dict[str, Any], loggers: list[Logger]) -> dict[str, Any]:
    """results.md/.json, the figures, the loggers' copies; returns the flat metrics for metrics.json."""
    confusions = report.pop("confusions")
    figures = {}
    for key, counts in confusions.items():
        acc = next(r["test"]["acc"] for r in report["rows"] if r["key"] == key)
        figures[f"confusion_matrix_{key}"] = plot_confusion_matrix(
            counts,
            report["class_names"],
            run_dir / f"confusion_matrix_{key}.png",
            f"{METHODS[key]} — test accuracy {acc:.4f}",
        )
    figures["accuracy"] = plot_accuracy_bars(report, run_dir / "accuracy.png")
    members = [r["name"] for r in report["rows"] if r["kind"] == "member"]
    figures["disagreement"] = plot_disagreement(report["disagreement"], members, run_dir / "disagreement.png")
    (run_dir / "results.md").write_text(markdown_table(report))
    write_json(run_dir / "results.json", report)
    metrics = flat_metrics(report)
    for logger in loggers:
        logger.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
        if isinstance(logger, WandbLogger):
            columns = ["name", "val acc", "test acc", "test NLL", "test ECE"]
            data = [
                [r["name"], r["val"]["acc"], r["test"]["acc"], r["test"]["nll"], r["test"]["ece"]]
                for r in report["rows"]
            ]
            logger.log_table(key="ensemble/table", columns=columns, data=data)
        logger.save()
    log_images(loggers, figures)
    metrics.update(
        {
            "ensemble_method": next(r["key"] for r in report["rows"] if r["kind"] == "ensemble"),
            "members": members,
            "member_ckpts": [r["ckpt_path"] for r in report["rows"] if r["kind"] == "member"],
            "tta": report["settings"]["tta"],
            "run_dir": str(run_dir),
        }
    )
    return metrics
