"""Training throughput of timm backbones on this machine: images per second and seconds per epoch.

Each model is built from the project's own config (`model=timm model.backbone.name=<name>`, random weights) and
trained for a few steps the way a run trains it: uint8 batches resized and normalised by the Classifier, forward,
cross-entropy, backward, AdamW step over the Classifier's parameter groups (the Lightning loop around it was
measured within noise of a plain loop, docs/RESULTS.md). Seconds per epoch are for the 55,000 training images of
the default split. The large size (224 px) gets a single timed step, to state what a CPU can and cannot do.

    python benchmarks/bench_timm.py [--models convnext_atto resnet18] [--sizes 32 64] [--steps 5] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import fmnist.resolvers  # noqa: F401  (registers the config resolvers)
from fmnist import PROJECT_ROOT

TRAIN_IMAGES = 55_000  # 60,000 minus the default 5,000 validation images


def build(name: str, size: int, in_chans: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    overrides = ["model=timm", f"model.backbone.name={name}", "model.pretrained=false", f"model.in_chans={in_chans}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose("train", overrides=[*overrides, f"model.image_size={size}"])
    model = instantiate(cfg.model).train()
    optimizer = instantiate(cfg.model.optimizer)(model.parameter_groups())
    return model, optimizer


def time_steps(model, optimizer, batch_size: int, steps: int, warmup: int, bf16: bool) -> float:
    """Seconds per training step, averaged over `steps` after `warmup` untimed ones."""
    images = torch.randint(0, 256, (batch_size, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch_size,))
    elapsed = 0.0
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            elapsed += time.perf_counter() - start
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["convnext_atto", "convnext_tiny", "resnet18", "resnet50"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model and size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--big-size", type=int, default=224, help="one timed step at this size (0: skip)")
    parser.add_argument("--big-batch-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (emulated, slow, on CPUs without bf16)")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "outputs" / "bench" / "timm_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)

    plan = [(m, s, args.batch_size, args.steps) for m in args.models for s in args.sizes]
    if args.big_size:
        plan += [(m, args.big_size, args.big_batch_size, 1) for m in args.models]
    load_before = os.getloadavg()
    rows = []
    print("| model | px | batch | params (M) | img/s | s/epoch (55k) | min/epoch |\n|---|---|---|---|---|---|---|")
    for name, size, batch, steps in plan:
        model, optimizer = build(name, size, args.in_chans)
        seconds = time_steps(model, optimizer, batch, steps, args.warmup, args.bf16)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = {"model": name, "image_size": size, "batch_size": batch, "timed_steps": steps, "params_m": params,
               "images_per_second": batch / seconds, "seconds_per_epoch": TRAIN_IMAGES * seconds / batch}  # fmt: skip
        rows.append(row)
        print(f"| {name} | {size} | {batch} | {params:.1f} | {row['images_per_second']:.0f} | "
              f"{row['seconds_per_epoch']:.0f} | {row['seconds_per_epoch'] / 60:.1f} |", flush=True)  # fmt: skip
        del model, optimizer
    summary = {
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "precision": "bf16-mixed" if args.bf16 else "32-true",
        "in_chans": args.in_chans,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),  # other work on a shared machine lowers the figures
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(f"load average before/after: {load_before[0]:.1f} / {summary['load_average_after'][0]:.1f}; saved {args.out}")


if __name__ == "__main__":
    main()
