"""`python export.py ckpt_path=<ckpt or run> format=onnx|torchscript|safetensors`: a classifier for use elsewhere.

The ONNX and TorchScript models take one input `images`: float32 of shape (B, 1, 28, 28), values in [0, 1] (0 =
background, light object on black like Fashion-MNIST), B free (a dynamic batch axis); they output `logits` (B, 10).
Normalisation is inside the model. A JSON sidecar (<out> with .json for its suffix) carries the class names, this input
contract and the preprocessing that turns a photo into such an input. The exported model is checked against PyTorch
(onnxruntime for ONNX) on random and blank inputs at two batch sizes before the files are kept. `safetensors` writes the
pickle-free form that predict.py loads (models/fmnist_cnn.safetensors is one). The model's `scoring` (TTA, temperature
and uncertainty threshold fitted on validation, fmnist.models.calibration) goes into the sidecar and, for safetensors,
into the file; `calibrate=true` fits it again on the model's validation split first (a model from before runs recorded
it)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from fmnist.dataset import SPLIT_KEYS
from fmnist.models.calibration import batches, fit_scoring, logits_and_labels
from fmnist.models.classifier import Classifier, normalise
from fmnist.models.files import (
    RECORDED_KEYS,
    SOURCE_KEY,
    SPLIT_KEY,
    load_safetensors,
    load_trained,
    save_safetensors,
)
from fmnist.models.tta import check_tta
from fmnist.predict.preprocess import BACKGROUND_TOLERANCE
from fmnist.task import hydra_task
from fmnist.utils.errors import UserError
from fmnist.utils.io import atomic_path, check_output_path
from fmnist.utils.run_info import scored_checkpoint
from fmnist.utils.runtime import setup_runtime

log = logging.getLogger("fmnist")
FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
TOLERANCE = 1e-4  # max abs logit difference accepted between the exported model and PyTorch


class Logits(nn.Module):
    """Classifier.forward for float (B, 1, 28, 28) in [0, 1] only, as a plain module (a LightningModule does not
    trace: its `trainer` property raises outside a Trainer). `parity` checks it against the Classifier."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.register_buffer("mean", model.input_mean.clone())
        self.register_buffer("std", model.input_std.clone())
        self.image_size, self.in_chans = int(model.hparams.image_size), int(model.hparams.in_chans)
        self.input_norm = model.hparams.get("input_norm", "dataset")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.image_size != 28:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)
        if self.in_chans != 1:
            images = images.expand(-1, self.in_chans, -1, -1)
        return self.backbone(normalise(images, self.mean, self.std, self.input_norm))


def plain_model(model: Classifier) -> Classifier:
    """The classifier in eval mode, contiguous memory format (channels_last only pays off while training)."""
    model.hparams.channels_last = False
    return model.to(memory_format=torch.contiguous_format).eval()


def check_inputs() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.cat([torch.rand(7, 1, 28, 28, generator=generator), torch.zeros(1, 1, 28, 28)])


def export_onnx(model: Classifier, path: Path) -> float:
    try:  # the optional `export` extra: torch's exporter needs onnxscript, the parity check onnxruntime
        import onnxruntime as ort
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"format=onnx needs the optional packages onnx, onnxscript and onnxruntime ({e.name} is missing): "
            "pip install 'fmnist[export]' (in a checkout: pip install -e '.[export]'), or use format=torchscript."
        ) from e

    for name in ("onnxscript", "onnx_ir", "torch.onnx"):  # their INFO lines would flood the run's log
        logging.getLogger(name).setLevel(logging.WARNING)
    example = torch.rand(2, 1, 28, 28)
    batch = torch.export.Dim("batch", min=1, max=65536)
    with atomic_path(path) as tmp, torch.no_grad():
        torch.onnx.export(
            Logits(model).eval(), (example,), str(tmp), input_names=["images"], output_names=["logits"],
            dynamo=True, external_data=False, dynamic_shapes={"images": {0: batch}},
        )  # fmt: skip
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        return parity(model, lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0]))


def export_torchscript(model: Classifier, path: Path) -> float:
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice; it still works
        traced = torch.jit.trace(Logits(model).eval(), torch.rand(2, 1, 28, 28))
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp), map_location="cpu")
        return parity(model, loaded)


def parity(model: Classifier, exported: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Max abs logit difference over batches of 8 and 1; UserError above TOLERANCE (the file is then not kept)."""
    inputs = check_inputs()
    with torch.no_grad():
        diff = max(float((exported(x) - model(x)).abs().max()) for x in (inputs, inputs[:1]))
    if diff > TOLERANCE:
        raise UserError(f"the exported model's logits differ from PyTorch's by {diff:.2e} (> {TOLERANCE}).")
    return diff


def checkpoint_label(path: str | Path) -> str:
    """The checkpoint as `<parent>/<run dir>/checkpoints/<file>`: enough to find the run, without the exporting
    machine's absolute paths (a shipped sidecar would otherwise carry them)."""
    path = Path(path).resolve()
    parts = path.parts[1:]  # resolved, so parts[0] is the root: left out, the label is never absolute
    return str(Path(*parts[-4:])) if path.parent.name == "checkpoints" else path.name


def source_label(cfg: DictConfig) -> str:
    """checkpoint_label, or for a .safetensors re-exported (e.g. calibrated) the source its own sidecar names."""
    path = Path(cfg.ckpt_path)
    previous = path.with_suffix(".json")
    if path.suffix == ".safetensors" and previous.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return str(json.loads(previous.read_text())["source_checkpoint"])
    return checkpoint_label(path)


def sidecar(model: Classifier, cfg: DictConfig, out: Path, diff: float | None) -> dict:
    return {
        "format": cfg.format,
        "model_file": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "source_checkpoint": source_label(cfg),
        "class_names": list(model.hparams.class_names),
        "input": {
            "name": "images",
            "dtype": "float32",
            "shape": ["batch", 1, 28, 28],
            "range": [0.0, 1.0],
            "layout": "NCHW grayscale; 0 = background: a light object on black, like Fashion-MNIST",
            "normalisation": f"inside the model: (x - {model.hparams.mean}) / {model.hparams.std}",
        },
        "output": {
            "name": "logits",
            "shape": ["batch", len(model.hparams.class_names)],
            "softmax": "not applied; calibrated probabilities: softmax(logits / scoring.temperature), averaged over "
            "scoring.tta's views (none | flip: the image and its mirror | flip+shift: also 1-px shifts) before it",
        },
        "scoring": model.hparams.scoring,  # fitted on validation; uncertain: -logsumexp(logits / T) > uncertain_above
        "preprocessing": {
            "reference": "Xiao et al. 2017, arXiv:1708.07747 section 2; fmnist/predict/preprocess.py photo_to_fmnist",
            "steps": [
                "grayscale (ITU-R 601-2 luma; transparency composited onto white; EXIF rotation applied)",
                "invert when the median border pixel is above 127.5 (light background)",
                "subtract the background: a plane a + b*x + c*y fitted (least squares) to the border pixels, "
                "clipped at 0",
                f"crop to the bounding box of pixels more than {BACKGROUND_TOLERANCE:.0%} of 255 above that background",
                "pad the shorter side with 0 to a square, object centred",
                "resize to 28x28 with Lanczos (antialiased)",
                "stretch levels: background -> 0, brightest pixel -> 255",
                "divide by 255 -> float32 in [0, 1]",
            ],
        },
        "max_abs_logit_diff_vs_pytorch": diff,
    }


def calibrate(cfg: DictConfig, model: Classifier, split: dict) -> dict:
    """Fit the model's `scoring` on its validation split (fp32 on the CPU), under `tta` (auto: its recorded one).
    Returns the split used (the data config's when the model records none)."""
    tta = model.tta if cfg.tta == "auto" else check_tta(cfg.tta)
    split = {k: split[k] for k in SPLIT_KEYS if k in split}
    if not split:
        split = {k: cfg.data[k] for k in SPLIT_KEYS}
        log.warning(
            f"{cfg.ckpt_path} does not record its training split; calibrating on the data config's {split}. The "
            "exported file will not claim it as its training split: it cannot join ensembles or teach."
        )
    datamodule = instantiate(cfg.data, **split)
    datamodule.setup("validate")
    val = datamodule.val_set
    logits, labels = logits_and_labels(model.eval(), batches(val.images, val.labels), tta)
    model.hparams.scoring = fit_scoring(logits, labels, tta, precision="32-true")
    model.tta = tta
    log.info(f"calibrated on {len(labels)} validation images: {model.hparams.scoring}")
    return split


def export(cfg: DictConfig) -> dict:
    cfg.ckpt_path = scored_checkpoint(cfg.ckpt_path)  # a run directory: the checkpoint validation chose
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format}: choose from {', '.join(FORMATS)}.")
    out = Path(cfg.out) if cfg.out else Path(cfg.paths.output_dir) / (Path(cfg.ckpt_path).stem + FORMATS[cfg.format])
    if out.suffix != FORMATS[cfg.format]:  # else out=model.json would be overwritten by its own sidecar
        raise UserError(f"out={out}: a {cfg.format} model file must end in {FORMATS[cfg.format]}.")
    check_output_path(out)  # before the work: an unwritable out= must not cost the calibration
    setup_runtime(cfg)
    # safetensors keeps the model as trained (channels_last included); the traced formats use the plain layout
    model, trained_with = load_trained(cfg.ckpt_path)
    model = model if cfg.format == "safetensors" else plain_model(model)
    # the data settings it was trained with: kept, so ensembles and distillation can check its split and data set
    split = {k: trained_with[k] for k in RECORDED_KEYS if k in trained_with}
    calibrated_on = calibrate(cfg, model, split) if cfg.get("calibrate") else None
    diff = None
    if cfg.format == "onnx":
        diff = export_onnx(model, out)
    elif cfg.format == "torchscript":
        diff = export_torchscript(model, out)
    else:
        extra = {SOURCE_KEY: getattr(model, "source", None) or Path(cfg.ckpt_path).name}  # a re-export keeps it
        if split:  # what it was trained and selected on: eval.py splits=[val], ensembles and distillation check it
            extra[SPLIT_KEY] = json.dumps(split)
        with atomic_path(out) as tmp:  # checked before it replaces `out`: a file that fails parity is not kept
            save_safetensors(model, tmp, extra=extra)
            diff = parity(model, load_safetensors(tmp))
    info = sidecar(model, cfg, out, diff)
    if calibrated_on and not split:
        info["calibrated_on"] = calibrated_on  # the data config's split: not known to be the one it was trained on
    side = out.with_suffix(".json")
    with atomic_path(side) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    log.info(f"{cfg.format}: {out} (+ {side.name}); max abs logit difference vs PyTorch {diff:.2e}")
    return {"out": str(out), "sidecar": str(side), "max_abs_logit_diff": diff}


@hydra_task("export")
def main(cfg: DictConfig) -> None:
    export(cfg)
