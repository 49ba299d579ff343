"""Framework overhead: training throughput of the Lightning path against a plain PyTorch loop, in one run.

Both train the default model (conf/model/cnn.yaml) on the same in-memory real training tensors, with the same batch
size, precision, optimizer and one-cycle schedule. The Lightning path is the project's own: FashionMNISTDataModule
(index-cut batches, conversion after transfer) + Classifier + Trainer with the Rich progress bar; validation and
checkpointing are off so that both time the same work. Measurements alternate (plain, Lightning, plain, ...) so that
drifts of the shared machine hit both.

    python scripts/bench_overhead.py [--steps 150] [--warmup 10] [--repeats 3] [overrides ...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, RichProgressBar

import fmnist.utils  # noqa: F401  (resolvers)
from fmnist import PROJECT_ROOT
from fmnist.utils import resolve_precision


class StepTimer(Callback):
    """Wall time from the start of batch `warmup` to the end of the last batch."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def lightning_throughput(cfg, steps: int, warmup: int, refresh_rate: int = 1) -> float:
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
    return steps * cfg.data.batch_size / (timer.end - timer.start)


def plain_throughput(cfg, images: torch.Tensor, labels: torch.Tensor, steps: int, warmup: int) -> float:
    """The same training as a hand-written loop: no Lightning, no DataLoader."""
    model = instantiate(cfg.model.backbone)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = instantiate(cfg.model.optimizer)([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
    scheduler = instantiate(cfg.model.scheduler)(optimizer, total_steps=warmup + steps)
    mean, std = cfg.model.mean[0], cfg.model.std[0]
    batch, bf16 = cfg.data.batch_size, str(cfg.trainer.precision).startswith("bf16")
    order = torch.randperm(len(labels))
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            start = time.perf_counter()
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
    return steps * batch / (time.perf_counter() - start)


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
        cfg = compose("train", overrides=["trainer.accelerator=cpu", *args.overrides])
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
    results: dict[str, list[float]] = {"plain": [], "lightning": []}
    for repeat in range(args.repeats):
        pl.seed_everything(repeat, verbose=False)
        results["plain"].append(plain_throughput(cfg, images, labels, args.steps, args.warmup))
        pl.seed_everything(repeat, verbose=False)
        results["lightning"].append(lightning_throughput(cfg, args.steps, args.warmup, refresh_rate))
        print(f"repeat {repeat}: plain {results['plain'][-1]:.0f} img/s, lightning {results['lightning'][-1]:.0f}")
    plain, light = statistics.median(results["plain"]), statistics.median(results["lightning"])
    print(
        f"\nbatch {cfg.data.batch_size}, precision {cfg.trainer.precision}, threads {torch.get_num_threads()}, "
        f"{args.steps} timed steps x {args.repeats} repeats (medians)\n"
        f"plain loop: {plain:.0f} img/s   lightning path: {light:.0f} img/s   ratio: {light / plain:.3f}"
    )


if __name__ == "__main__":
    main()
