"""The corruption suite's figures (docs/robustness.md): models scored on it, the cost of generating the sets, and
the step-time cost of training with them.

    python benchmarks/bench_robust.py score --name shipped resnet=models/fmnist_resnet.safetensors cnn=models/...
        [--splits test|val|val,test] [--tta none]  # eval.py corruptions=all per model; mean ± sd when several
    python benchmarks/bench_robust.py generate                    # seconds to generate every set (test, val)
    python benchmarks/bench_robust.py steps [--steps 30]          # training step time: aug=flip vs aug=robust

Outputs land in outputs/bench/robust/<name>/ (score) with a summary.json; the tables are printed in Markdown.
Run with PYTHONPATH=<checkout> from another checkout's virtual environment, so fmnist is this one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import mean_sd, run_entry
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fmnist import PROJECT_ROOT
from fmnist.data.corrupted_sets import corrupted_set
from fmnist.data.corruptions import CORRUPTIONS
from fmnist.data.sources import load_arrays

OUT = PROJECT_ROOT / "outputs" / "bench" / "robust"


def score(args: argparse.Namespace) -> None:
    runs = {}
    for entry in args.models:
        label, _, path = entry.partition("=")
        run_dir = OUT / args.name / label
        overrides = [f"ckpt_path={Path(path).resolve()}", "corruptions=all", f"splits=[{','.join(args.splits)}]",
                     f"tta={args.tta}", f"hydra.run.dir={run_dir}", *args.overrides]  # fmt: skip
        metrics, wall = run_entry(str(PROJECT_ROOT / "eval.py"), overrides, run_dir, cwd=PROJECT_ROOT)
        runs[label] = {"ckpt_path": path, "wall_seconds": wall, **metrics}
        print(f"{label}: {wall:.0f} s", flush=True)
    for split in args.splits:
        keys = [f"{split}/acc"] + [f"{split}/corrupted/{n}/acc" for n in CORRUPTIONS] + [f"{split}/corrupted/mean_acc"]
        header = "| " + split + " accuracy, % | " + " | ".join(runs) + (" | mean ± sd |" if len(runs) > 1 else " |")
        print("\n" + header + "\n|" + " --- |" * (header.count("|") - 1))
        for key in keys:
            values = [runs[label][key] * 100 for label in runs]
            name = key.split("/")[-2] if "/corrupted/" in key and not key.endswith("mean_acc") else key
            name = {f"{split}/acc": "clean", f"{split}/corrupted/mean_acc": "**mean over corruptions**"}.get(name, name)
            cells = [f"{v:.2f}" for v in values]
            if len(values) > 1:
                cells.append("{:.2f} ± {:.2f}".format(*mean_sd(values)))
            print(f"| {name} | " + " | ".join(cells) + " |")
    (OUT / args.name / "summary.json").write_text(json.dumps({"command": vars(args), "runs": runs}, indent=2))


def generate(args: argparse.Namespace) -> None:
    arrays = load_arrays(Path(args.data_dir))
    sources = {"test": arrays["test_images"], "val-sized (5,000)": arrays["train_images"][:5000]}
    print("| corruption | " + " | ".join(f"{s} set, s" for s in sources) + " |\n| --- |" + " --- |" * len(sources))
    totals = dict.fromkeys(sources, 0.0)
    with tempfile.TemporaryDirectory() as cache:
        for name in CORRUPTIONS:
            cells = []
            for split, images in sources.items():
                start = time.perf_counter()
                corrupted_set(images, split.split()[0], name, 0, cache)  # generate + write + checksum
                totals[split] += time.perf_counter() - start
                cells.append(f"{time.perf_counter() - start:.2f}")
            print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
        start = time.perf_counter()
        for name in CORRUPTIONS:  # the cached path: read + checksum
            corrupted_set(sources["test"], "test", name, 0, cache)
        cached = time.perf_counter() - start
    print("| **all** | " + " | ".join(f"{t:.1f}" for t in totals.values()) + " |")
    print(f"\nreading all {len(CORRUPTIONS)} cached test sets back (checksum included): {cached:.1f} s")


def steps(args: argparse.Namespace) -> None:
    images = load_arrays(Path(args.data_dir))["train_images"]
    variants = {"aug=flip": ["aug=flip"], "aug=robust": ["aug=robust"],
                "aug=robust model.input_norm=per_image": ["aug=robust", "model.input_norm=per_image"]}  # fmt: skip
    trainers = {}
    with initialize_config_dir(version_base="1.3", config_dir=str(PROJECT_ROOT / "conf")):
        for label, overrides in variants.items():
            cfg = compose("train", overrides=["trainer.accelerator=cpu", *overrides])
            model = instantiate(cfg.model).train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            trainers[label] = (instantiate(cfg.aug), model, optimizer, int(cfg.data.batch_size))
    times = {label: [] for label in variants}
    generator = torch.Generator().manual_seed(0)
    for i in range(args.steps + 2):  # round-robin, so drifts of the shared machine hit every variant
        for label, (augment, model, optimizer, batch) in trainers.items():
            index = torch.randint(len(images), (batch,), generator=generator)
            start = time.perf_counter()
            x, y = augment(images[index].unsqueeze(1).float().div_(255), torch.zeros(batch, dtype=torch.long))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= 2:  # the first steps warm up oneDNN
                times[label].append(time.perf_counter() - start)
    base = statistics.median(times["aug=flip"])
    print(f"| variant (default ResNet, batch {batch}, bf16 autocast) | median step, ms | vs aug=flip |")
    print("| --- | --- | --- |")
    for label, values in times.items():
        print(f"| {label} | {statistics.median(values) * 1000:.1f} | {statistics.median(values) / base:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("score", help="eval.py corruptions=all for each label=checkpoint")
    p.add_argument("--name", required=True, help="outputs/bench/robust/<name>")
    p.add_argument("--splits", type=lambda text: text.split(","), default=["test"], help="test | val | val,test")
    p.add_argument("--tta", default="none")
    p.add_argument("--overrides", nargs="*", default=[], help="more eval.py overrides")
    p.add_argument("models", nargs="+", help="label=path of a .ckpt or .safetensors")
    for name in ("generate", "steps"):
        q = sub.add_parser(name)
        q.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
        q.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    {"score": score, "generate": generate, "steps": steps}[args.command](args)


if __name__ == "__main__":
    main()
