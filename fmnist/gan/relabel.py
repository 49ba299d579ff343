"""Label a synthetic set with a teacher: the mean probabilities of finished classifier runs (an ensemble of one or
more). Why: a conditional GAN's own labels are wrong on its ambiguous samples (a shirt drawn for "T-shirt"), and a
teacher's soft labels also carry what it knows about similar classes (distillation).

    python scripts/relabel.py source=<set.safetensors> runs='<run>|<glob>|[<run>,...]' [mode=soft] [tta=flip] [out=...]
    python scripts/relabel.py source=real runs=...   # the teachers' own training images, soft-labelled: the control

(conf/relabel.yaml; the set lands in this task's run directory, outputs/relabel/runs/<timestamp>/, unless out= says)

mode=soft   every image, labelled with the teachers' probabilities (float32 (N, 10); see fmnist/data/synthetic.py)
mode=filter only the images whose teacher prediction equals their GAN label, keeping the hard labels
`real` writes the teachers' training split (data.train_fraction and all, from their checkpoints) with soft labels:
training on it with the same share separates what the teacher's labels buy from what the GAN's images buy.
Teachers must be trained on the same training split as the run that uses the set — the teacher then saw no image
that run does not see; they never see validation or test images here. Use the set with
`python train.py aug=gan aug.source=<out>`.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from fmnist.data.datamodule import FashionMNISTDataModule
from fmnist.data.synthetic import load_synthetic, save_synthetic
from fmnist.ensemble.members import load_members, predict
from fmnist.models.tta import check_tta
from fmnist.task import hydra_task, task_run
from fmnist.utils.errors import UserError, config_int
from fmnist.utils.io import check_output_path
from fmnist.utils.run_info import expand_runs

log = logging.getLogger("fmnist")


def teacher_images(source: str, data: dict) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(uint8 images, their hard labels or None, metadata) of a synthetic set, or of the teachers' training split."""
    if source != "real":
        images, labels, meta = load_synthetic(source)
        return images, None if labels.is_floating_point() else labels, meta
    known = inspect.signature(FashionMNISTDataModule).parameters  # older checkpoints also record a data.image_size
    datamodule = FashionMNISTDataModule(**{k: v for k, v in data.items() if k in known}, augment=None)
    datamodule.setup("fit")
    train = datamodule.train_set
    return train.images, train.labels, {"n_per_class": "-", "seed": str(data.get("split_seed"))}


def relabel(cfg: DictConfig) -> Path:
    source = str(cfg.source)
    if cfg.mode not in ("soft", "filter"):
        raise UserError(f"mode={cfg.mode!r}: choose soft (teacher probabilities) or filter (keep agreeing images).")
    tta = check_tta(str(cfg.tta))
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_config(cfg.runs) else str(cfg.runs)
    paths = expand_runs(runs, str(cfg.checkpoint), at_least=1)
    stem = "real_train" if source == "real" else Path(source).stem
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.output_dir) / f"{stem}_{cfg.mode}.safetensors"
    if out.suffix != ".safetensors":
        raise UserError(f"out={out}: the file name must end with .safetensors.")
    check_output_path(out)
    members = load_members(paths, data_checksums=None)  # weights_only; refuses members of different val splits
    if len({m.data.get("train_fraction") for m in members}) > 1:
        raise UserError("The teachers were trained on different data.train_fraction; use teachers of one split.")
    if source == "real" and not any("data_dir" in m.data for m in members):
        raise UserError(
            "source=real rebuilds the teachers' training split from a training checkpoint's data settings; "
            "the teachers are exported files that record only the split: pass at least one run or .ckpt in runs=."
        )
    with task_run(cfg, csv=False) as run:
        agreement = label_with_teachers(cfg, source, members, tta, out)
        run.finish({"out": str(out.resolve()), "source": source, "mode": str(cfg.mode), "tta": tta,
                    "teachers": [str(m.ckpt_path) for m in members], "teacher_agreement": agreement})  # fmt: skip
    return out


def label_with_teachers(cfg: DictConfig, source: str, members: list, tta: str, out: Path) -> float | None:
    """Write the set with the teachers' labels (soft, or the images they agree with); the share of images whose
    label the teachers' soft vote agrees with (None for a soft-labelled source)."""
    data = next((m.data for m in members if "data_dir" in m.data), {})  # exported files record only the split
    images, labels, meta = teacher_images(source, data)
    if cfg.mode == "filter" and labels is None:
        raise UserError(f"mode=filter needs hard labels to compare with; {source} is soft-labelled already.")
    logits = predict(members, images, "relabel", tta, config_int(cfg, "batch_size", minimum=1), torch.device("cpu"))
    probs = logits.float().softmax(-1).mean(0)  # soft voting of the teachers
    if labels is not None:
        agree = probs.argmax(1) == labels
        log.info(f"teachers agree with the labels on {agree.float().mean():.1%} of {len(labels)} images")
    if cfg.mode == "filter":
        if not agree.any():  # an empty set would be refused later, by whoever loads it
            raise UserError(f"mode=filter kept none of {len(labels)} images: the teachers agree with no label.")
        images, new_labels = images[agree], labels[agree]
    else:
        new_labels = probs
    teachers = [str(m.ckpt_path) for m in members]
    save_synthetic(out, images, new_labels, source=str(source), teachers=teachers, mode=str(cfg.mode), tta=tta,
                   seed=meta.get("seed", "-"), n_per_class=meta.get("n_per_class", "-"))  # fmt: skip
    log.info(f"{len(new_labels)} images ({cfg.mode} labels of {len(members)} teacher(s), tta={tta}) -> {out}")
    return float(agree.float().mean()) if labels is not None else None


@hydra_task("relabel")
def main(cfg: DictConfig) -> None:
    relabel(cfg)
