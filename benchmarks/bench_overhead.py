"""Framework overhead: training throughput of the Lightning path against a plain PyTorch loop, in one run.

Both train the simple CNN (conf/model/cnn.yaml; model=resnet to time the ResNet) on the same in-memory real
training tensors, with the same batch size, precision, optimizer and one-cycle schedule. The Lightning path is the
project's own: FashionMNISTDataModule (index-cut batches, conversion after transfer) + Classifier + Trainer with the
Rich progress bar; validation and checkpointing are off so that both time the same work. Measurements alternate
(plain, Lightning, plain, ...) so that drifts of the shared machine hit both.

Every step is timed on its own (start of one batch to the start of the next, so the loader, hooks, logging and
progress bar are inside it). The shared VMs this runs on swing by ±20 % between 15-second windows, which made
whole-window throughputs scatter more than the overhead being measured; the median step period of each path is
robust to such bursts, so the figure reported is batch size / median step period (the window means are printed too).

    python benchmarks/bench_overhead.py [--steps 150] [--warmup 10] [--repeats 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, RichProgressBar

import fmnist.resolvers  # noqa: F401  (resolvers)
from fmnist import PROJECT_ROOT
from fmnist.models.components.weight_decay import weight_decay_groups
from fmnist.utils.runtime import resolve_precision


class StepTimer(Callback):
    """The start time of every batch from batch `warmup` on, and the end of the last one."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.stamps = warmup, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step >= self.warmup:
            self.stamps.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.stamps.append(time.perf_counter())


def step_periods(stamps: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(stamps)]


def lightning_throughput(cfg, steps: int, warmup: int, refresh_rate: int = 1) -> list[float]:
    """Step periods (s) of the project's Lightning path."""
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, precision=cfg.trainer.precision, max_steps=warmup + steps,
        limit_val_batches=0, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=refresh_rate > 0,
        callbacks=[timer, *([RichProgressBar(refresh_rate=refresh_rate)] if refresh_rate > 0 else [])],
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    return step_periods(timer.stamps)


def plain_throughput(cfg, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int) -> list[float]:
    """Step periods (s) of the same training as a hand-written loop: no Lightning, no DataLoader."""
    model = instantiate(cfg.model.backbone)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.model.optimizer)(weight_decay_groups(model.parameters()))  # as the Classifier's
    scheduler = instantiate(cfg.model.scheduler)(optimizer, total_steps=warmup + steps)
    mean, std = cfg.model.mean[0], cfg.model.std[0]
    batch, bf16 = cfg.data.batch_size, str(cfg.trainer.precision).startswith("bf16")
    order = torch.randperm(len(labels))
    model.train()
    stamps = []
    for step in range(warmup + steps):
        if step >= warmup:
            stamps.append(time.perf_counter())
        index = order[step * batch : (step + 1) * batch]
        x = (images[index].unsqueeze(1).float().div_(255) - mean) / std
        if cfg.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), labels[index], label_smoothing=cfg.model.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    stamps.append(time.perf_counter())
    return step_periods(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="measurements of each path, alternating")
    parser.add_argument(
        "--refresh-rate",
        type=int,
        default=None,
        help="Rich progress bar refresh every N steps (0: no bar; default: conf/callbacks' value)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. data.batch_size=512")
    args = parser.parse_args()
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        cfg = compose("train", overrides=["trainer.accelerator=cpu", "model=cnn", *args.overrides])  # RESULTS.md's CNN
    resolve_precision(cfg.trainer)
    refresh_rate = args.refresh_rate
    if refresh_rate is None:
        refresh_rate = cfg.callbacks.rich_progress_bar.get("refresh_rate", 1)
    torch.set_num_threads(torch.get_num_threads())
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    if (args.warmup + args.steps) * cfg.data.batch_size > len(labels):
        raise SystemExit("--warmup + --steps must fit in one epoch of the training split")
    batch = cfg.data.batch_size
    periods: dict[str, list[float]] = {"plain": [], "lightning": []}
    for repeat in range(args.repeats):
        pl.seed_everything(repeat, verbose=False)
        plain = plain_throughput(cfg, images, labels, args.steps, args.warmup)
        pl.seed_everything(repeat, verbose=False)
        light = lightning_throughput(cfg, args.steps, args.warmup, refresh_rate)
        periods["plain"] += plain
        periods["lightning"] += light
        print(
            f"repeat {repeat}: img/s by median step (window mean) — plain {batch / statistics.median(plain):.0f} "
            f"({batch * len(plain) / sum(plain):.0f}), lightning {batch / statistics.median(light):.0f} "
            f"({batch * len(light) / sum(light):.0f})"
        )
    plain, light = (batch / statistics.median(periods[k]) for k in ("plain", "lightning"))
    print(
        f"\nbatch {batch}, precision {cfg.trainer.precision}, threads {torch.get_num_threads()}, "
        f"{args.steps} timed steps x {args.repeats} repeats, img/s = batch / median step period\n"
        f"plain loop: {plain:.0f} img/s   lightning path: {light:.0f} img/s   ratio: {light / plain:.3f}"
    )


if __name__ == "__main__":
    main()
