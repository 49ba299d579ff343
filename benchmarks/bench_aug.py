"""Per-step cost of each `aug` option against `aug=none`, and of the common per-sample pipeline, in one run.

Every measurement trains the simple CNN (conf/model/cnn.yaml) for --steps batches on the real training images:
augmentation + forward + backward + optimizer step, batches cut from the in-memory tensor as in the project. The
options are measured round-robin (--repeats rounds) so that drifts of the shared machine hit all of them; the
table gives the median step time and its ratio to `aug=none`. The per-sample pipeline is what most tutorials do:
torchvision's FashionMNIST dataset, PIL transforms (pad + random crop, flip) with ToImage/ToDtype/Normalize, and a
DataLoader with 0 and 2 workers, doing the same augmentation as `aug=basic`.

Then each augmentation call alone (no training step) over --calls batches, including aug=strong built on
kornia.augmentation's RandomAffine / RandomErasing, the library reference for our own ops.

    python benchmarks/bench_aug.py [--steps 40] [--repeats 3] [--calls 200]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.transforms import v2

import fmnist.resolvers  # noqa: F401  (resolvers)
from fmnist import PROJECT_ROOT
from fmnist.data.sources import FILES, SYSTEM_DIR

OPTIONS = ["none", "flip", "basic", "strong", "mixup", "cutmix"]


def compose_train(*overrides: str):
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        return compose("train", overrides=["trainer.accelerator=cpu", "model=cnn", *overrides])  # the CNN of RESULTS.md


def make_training(cfg):
    model = instantiate(cfg.model)  # the Classifier: its prepare_input normalises like a real run
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()

    def step(images: torch.Tensor, targets: torch.Tensor) -> None:
        loss = F.cross_entropy(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def in_memory_step_time(option: str, images: torch.Tensor, labels: torch.Tensor, steps: int, batch: int) -> float:
    cfg = compose_train(f"aug={option}")
    augment = instantiate(cfg.aug) if "_target_" in cfg.aug else None
    step = make_training(cfg)
    order = torch.randperm(len(labels))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        index = order[i * batch : (i + 1) * batch]
        x, y = images[index].unsqueeze(1).float().div_(255), labels[index]
        if augment is not None:
            x, y = augment(x, y)
        step(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])  # the first steps warm up oneDNN


def kornia_strong(cfg):
    """aug=strong with kornia.augmentation's RandomAffine / RandomErasing in place of ours: the library reference."""
    import kornia.augmentation as K  # a dev dependency: only this comparison needs it

    basic = instantiate(compose_train("aug=basic").aug)
    affine, erasing = K.RandomAffine(**cfg.aug.affine), K.RandomErasing(**cfg.aug.erasing)
    return lambda x, y: (erasing(affine(basic(x, y)[0])).clamp_(0, 1), y)


def augment_only_time(augment, images: torch.Tensor, labels: torch.Tensor, calls: int, batch: int) -> float:
    """The augmentation call alone (no training step), median over many batches: small costs without step noise."""
    times = []
    for _ in range(calls + 5):
        index = torch.randint(0, len(labels), (batch,))
        x, y = images[index].unsqueeze(1).float().div_(255), labels[index]
        start = time.perf_counter()
        augment(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def per_sample_step_time(root: Path, workers: int, steps: int, batch: int) -> float:
    transform = v2.Compose(
        [
            v2.RandomCrop(28, padding=2),
            v2.RandomHorizontalFlip(),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    dataset = datasets.FashionMNIST(str(root), train=True, download=False, transform=transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=False)
    step = make_training(compose_train())
    times, start = [], time.perf_counter()
    for i, (x, y) in enumerate(loader):
        step(x, y)
        now = time.perf_counter()
        times.append(now - start)
        start = now
        if i == steps + 2:
            break
    return statistics.median(times[2:])


def torchvision_root(directory: Path) -> Path:
    """torchvision's FashionMNIST wants the decompressed files in <root>/FashionMNIST/raw/."""
    root = Path(tempfile.mkdtemp(prefix="fmnist-tv-"))
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, _ in FILES.values():
        (raw / name.removesuffix(".gz")).write_bytes(gzip.decompress((directory / name).read_bytes()))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="round-robin rounds")
    parser.add_argument("--calls", type=int, default=200, help="augmentation-only calls per option")
    args = parser.parse_args()
    cfg = compose_train()
    batch = cfg.data.batch_size
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    images, labels = datamodule.train_set.images, datamodule.train_set.labels
    root = torchvision_root(Path(SYSTEM_DIR) if Path(SYSTEM_DIR).is_dir() else Path(cfg.data.data_dir))
    pipelines = [*OPTIONS, "per-sample PIL, 0 workers", "per-sample PIL, 2 workers"]
    results: dict[str, list[float]] = {name: [] for name in pipelines}
    for round_ in range(args.repeats):
        torch.manual_seed(round_)
        for option in OPTIONS:
            results[option].append(in_memory_step_time(option, images, labels, args.steps, batch))
        results[pipelines[-2]].append(per_sample_step_time(root, 0, args.steps, batch))
        results[pipelines[-1]].append(per_sample_step_time(root, 2, args.steps, batch))
        print(f"round {round_}: " + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in results.items()))
    base = statistics.median(results["none"])
    print(f"\nbatch {batch}, {args.steps} steps x {args.repeats} rounds, threads {torch.get_num_threads()}\n")
    print("| pipeline | ms / step (median) | vs aug=none |\n|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.1f} | {median / base:.3f}x |")
    augments = {o: instantiate(compose_train(f"aug={o}").aug) for o in OPTIONS if o != "none"}
    augments["strong, kornia affine + erasing"] = kornia_strong(compose_train("aug=strong"))
    print(f"\nThe augmentation call alone, median of {args.calls} batches of {batch}, share of the aug=none step\n")
    print("| aug | ms / batch | share of the step |\n|---|---|---|")
    for name, augment in augments.items():
        seconds = augment_only_time(augment, images, labels, args.calls, batch)
        print(f"| {name} | {seconds * 1000:.2f} | {100 * seconds / base:.1f} % |")


if __name__ == "__main__":
    main()
