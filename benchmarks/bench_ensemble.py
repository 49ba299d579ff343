"""The ensemble experiment: N runs of one recipe with different seeds, then their ensemble with and without
test-time augmentation, each with and without temperature scaling; one table of accuracy, NLL and ECE.

    python benchmarks/bench_ensemble.py                       # 5 seeds (0-4), real data, the default (fast) recipe
    python benchmarks/bench_ensemble.py model=cnn             # the simple CNN (docs/ensembles.md)
    python benchmarks/bench_ensemble.py --seeds 0 1 2 trainer.max_epochs=10      # Hydra overrides go to train.py
    python benchmarks/bench_ensemble.py --extra outputs/train/runs/<convnext run>  # also a mixed ensemble

Steps (each is a plain project command, printed before it runs, so the experiment can be repeated by hand):
  1. python train.py -m seed=0,1,2,3,4 task_name=bench hydra.sweep.dir=outputs/bench/ensemble/members
     'hydra.sweep.subdir=seed${seed}'     (seeds whose run already has a metrics.json are skipped)
  2. python scripts/ensemble.py 'runs=outputs/bench/ensemble/members/*' tta=none        -> <out>/tta-none
     python scripts/ensemble.py 'runs=outputs/bench/ensemble/members/*' tta=flip        -> <out>/tta-flip
     python scripts/ensemble.py 'runs=outputs/bench/ensemble/members/*' tta=flip+shift  -> <out>/tta-flip+shift
     (and with --extra: the same over the members plus the extra runs -> .../mixed-tta-*)
  3. summary.md / summary.json in outputs/bench/ensemble/: every member and method, both TTA settings, raw and
     temperature-scaled NLL/ECE, and the ensemble's gain over its best member.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

from _common import run_timed

from fmnist import PROJECT_ROOT

TTAS = ("none", "flip", "flip+shift")


def train_members(members: Path, seeds: list[int], overrides: list[str]) -> None:
    missing = [s for s in seeds if not (members / f"seed{s}" / "metrics.json").is_file()]
    if not missing:
        return
    # not run_entry: one multirun (-m) of the missing seeds, with no single run directory or metrics.json to read
    run_timed(
        "train.py",
        [
            "-m",
            f"seed={','.join(map(str, missing))}",
            "task_name=bench",
            f"hydra.sweep.dir={members}",
            "hydra.sweep.subdir=seed${seed}",
            *overrides,
        ],
        cwd=PROJECT_ROOT,
        echo=True,
    )


def ensemble(runs: list[str], out: Path, tta: str, data_overrides: list[str]) -> dict:
    # not run_entry: a finished ensemble (metrics.json) is not run again, and its table is results.json
    if not (out / "metrics.json").is_file():
        seconds = run_timed(
            "scripts/ensemble.py",
            [
                f"runs=[{','.join(runs)}]",
                f"tta={tta}",
                "methods=[soft,greedy,val_acc,hard]",
                "temperature_scaling=true",
                f"hydra.run.dir={out}",
                *data_overrides,
            ],
            cwd=PROJECT_ROOT,
            echo=True,
        )
        (out / "wall_seconds.txt").write_text(f"{seconds:.1f}\n")
    return json.loads((out / "results.json").read_text())


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def summary_table(reports: dict[str, dict]) -> list[str]:
    """One row per member/method; for each TTA setting: accuracy, NLL, ECE, and NLL/ECE after temperature scaling."""
    head = ["member / method"]
    for tta in reports:
        head += [f"acc ({tta})", f"NLL ({tta})", f"ECE ({tta})", f"NLL+TS ({tta})", f"ECE+TS ({tta})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = next(iter(reports.values()))
    for i, row in enumerate(first["rows"]):
        cells = [row["name"]]
        for report in reports.values():
            r = report["rows"][i]
            ts = r.get("test_ts", {})
            cells += [
                fmt(r["test"]["acc"]),
                fmt(r["test"]["nll"]),
                fmt(r["test"]["ece"]),
                fmt(ts.get("nll")),
                fmt(ts.get("ece")),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def gains(report: dict) -> dict[str, dict]:
    """Each method against the best member (by test accuracy; NLL/ECE against that member's own)."""
    members = [r for r in report["rows"] if r["kind"] == "member"]
    best = max(members, key=lambda r: r["test"]["acc"])
    out = {}
    for r in (r for r in report["rows"] if r["kind"] == "ensemble"):
        out[r["key"]] = {
            "acc_gain_points": 100 * (r["test"]["acc"] - best["test"]["acc"]),
            "nll_lower": r["test"]["nll"] is not None and r["test"]["nll"] < best["test"]["nll"],
            "ece_lower": r["test"]["ece"] < best["test"]["ece"],
        }
    return {"best_member": best["name"], "best_member_acc": best["test"]["acc"], "methods": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "bench" / "ensemble")
    parser.add_argument("--extra", nargs="*", default=[], help="run directories added for a mixed ensemble")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for train.py (e.g. trainer.max_epochs=10); data.* ones also go to the ensemble",
    )
    args = parser.parse_args()
    members = args.out / "members"
    data_overrides = [o for o in args.overrides if o.startswith("data.")]  # where the data is: the ensemble too
    train_members(members, args.seeds, args.overrides)
    runs = [str(members / f"seed{s}") for s in args.seeds]
    groups = {"": runs} | ({"mixed-": runs + [str(Path(e).resolve()) for e in args.extra]} if args.extra else {})
    lines = [f"# Ensemble of {len(runs)} runs (seeds {args.seeds}) — {date.today().isoformat()}", ""]
    summary = {"seeds": args.seeds, "train_overrides": args.overrides, "groups": {}}
    for prefix, group in groups.items():
        out = args.out
        reports = {tta: ensemble(group, out / f"{prefix}tta-{tta}", tta, data_overrides) for tta in TTAS}
        lines += [f"## {prefix.rstrip('-') or 'same recipe'}: {len(group)} members", "", *summary_table(reports), ""]
        for tta, report in reports.items():
            g = gains(report)
            shown = ", ".join(
                f"{k} {v['acc_gain_points']:+.2f} pts (NLL lower: {v['nll_lower']}, ECE lower: {v['ece_lower']})"
                for k, v in g["methods"].items()
            )
            lines.append(f"- TTA {tta}: best member {g['best_member']} {g['best_member_acc']:.4f}; {shown}")
            summary["groups"][f"{prefix}tta-{tta}"] = {"gains": g, "results": str(args.out / f"{prefix}tta-{tta}")}
        lines.append("")
    (args.out / "summary.md").write_text("\n".join(lines))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print("\n".join(lines))
    print(f"Written: {args.out / 'summary.md'}")


if __name__ == "__main__":
    main()
