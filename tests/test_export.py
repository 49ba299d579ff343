"""export.py (ONNX, TorchScript, safetensors: the same logits as PyTorch) and the shipped models (small, loadable,
their cards' test accuracy reproduced by eval.py)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist import PROJECT_ROOT
from fmnist.data.corruptions import corrupt
from fmnist.data.idx import IMAGE_MAGIC, load_idx_gz
from fmnist.models.files import SPLIT_KEY, load_classifier, load_trained, save_safetensors
from fmnist.predict.export import export
from fmnist.predict.task import predict
from fmnist.utils.errors import CheckpointError, report_user_errors

from conftest import HAVE_REAL_DATA, REAL_DATA, compose_cfg, run_cli, tiny_data_overrides

SHIPPED = PROJECT_ROOT / "models" / "fmnist_cnn.safetensors"


def run_predict(tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_cfg("predict", [f"paths.log_dir={tmp_path / 'out'}", *overrides], tmp_path / "run")
    return report_user_errors(predict, cfg)


def top1(rows: list[dict]) -> list[int]:
    return [r["index"] for r in rows]


def run_export(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_cfg("export", [f"paths.log_dir={tmp_path / 'out'}", *overrides], tmp_path / "run")
    return report_user_errors(export, cfg)


def test_onnx_logits_match_pytorch(tmp_path, random_ckpt, test_images):
    import onnxruntime as ort

    result = run_export(tmp_path, f"ckpt_path={random_ckpt}", "format=onnx", f"out={tmp_path / 'm.onnx'}")
    session = ort.InferenceSession(result["out"], providers=["CPUExecutionProvider"])
    images = torch.from_numpy(test_images[0]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        expected = load_classifier(random_ckpt)(images).numpy()
    for batch in (images[:1], images):  # the batch axis is dynamic
        (logits,) = session.run(["logits"], {"images": batch.numpy()})
        assert np.abs(logits - expected[: len(batch)]).max() < 1e-4
    meta = json.loads((tmp_path / "m.json").read_text())
    assert meta["class_names"][0] == "T-shirt/top" and meta["input"]["shape"] == ["batch", 1, 28, 28]
    assert meta["max_abs_logit_diff_vs_pytorch"] < 1e-4
    assert not Path(meta["source_checkpoint"]).is_absolute() and str(random_ckpt).endswith(meta["source_checkpoint"])


def test_torchscript_and_safetensors_exports(tmp_path, random_ckpt, test_images):
    images = torch.from_numpy(test_images[0]).float().div(255).unsqueeze(1)
    with torch.no_grad():
        expected = load_classifier(random_ckpt)(images)
    run_export(tmp_path, f"ckpt_path={random_ckpt}", "format=torchscript", f"out={tmp_path / 'm.pt'}")
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(tmp_path / "m.pt")(images), expected, atol=1e-5)
    run_export(tmp_path, f"ckpt_path={random_ckpt}", "format=safetensors", f"out={tmp_path / 'm.safetensors'}")
    exported = load_classifier(tmp_path / "m.safetensors")
    with torch.no_grad():
        assert torch.equal(exported(images), expected)
    # the split it was selected on travels with it, so eval.py splits=[val] scores the same validation images
    assert exported.trained_split == {"val_size": 5000, "split_seed": 0, "train_fraction": 1.0}


def test_a_failed_or_misnamed_export_leaves_no_model_file(tmp_path, random_ckpt, monkeypatch):
    import fmnist.predict.export as export_module

    previous = tmp_path / "m.safetensors"
    previous.write_bytes(b"an earlier export")
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # every parity check fails
    with pytest.raises(SystemExit) as exit_info:
        run_export(tmp_path, f"ckpt_path={random_ckpt}", "format=safetensors", f"out={previous}")
    assert exit_info.value.code == 2 and previous.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no sidecar, no temporary file left
    monkeypatch.undo()
    for fmt, out in [("safetensors", "m.json"), ("torchscript", "m.onnx")]:  # m.json would be its own sidecar
        with pytest.raises(SystemExit) as exit_info:
            run_export(tmp_path, f"ckpt_path={random_ckpt}", f"format={fmt}", f"out={tmp_path / out}")
        assert exit_info.value.code == 2 and not (tmp_path / out).exists()


def test_onnx_without_its_optional_packages_names_the_extra(tmp_path, random_ckpt, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an install without the `export` extra sees
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
        run_export(tmp_path, f"ckpt_path={random_ckpt}", "format=onnx", f"out={tmp_path / 'm.onnx'}")
    assert exit_info.value.code == 2 and "pip install 'fmnist[export]'" in caplog.text, caplog.text
    assert not list(tmp_path.glob("m.*"))


def test_safetensors_round_trip_keeps_every_tensor(tmp_path, random_ckpt):
    model = load_classifier(random_ckpt)
    save_safetensors(model, tmp_path / "m.safetensors")
    again = load_classifier(tmp_path / "m.safetensors")
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in model.state_dict().items())


DAMAGED_SPLITS = [
    '{"val_size": 5000',
    "[5000, 0]",
    '{"val_size": "5000", "split_seed": 0}',
    '{"split_seed": true}',
    '{"train_fraction": [1]}',
    '{"checksums": {"train": 1}}',
    '{"val_size": 5000, "data_dir": "/etc"}',
]


@pytest.mark.parametrize("record", DAMAGED_SPLITS)
def test_a_damaged_split_record_is_refused_as_a_bad_model_file(tmp_path, random_ckpt, record):
    """eval, ensembles and distillation read the split an exported file records: damage (a wrong type, or a setting
    such as data_dir that an export never writes) ends in one message."""
    save_safetensors(load_classifier(random_ckpt), tmp_path / "m.safetensors", extra={SPLIT_KEY: record})
    with pytest.raises(CheckpointError, match=r"fmnist\.split metadata"):
        load_classifier(tmp_path / "m.safetensors")


@pytest.mark.parametrize("settings", ["5000", {"val_size": 5000, "split_seed": "0"}])
def test_a_checkpoint_with_damaged_data_settings_is_refused(tmp_path, random_ckpt, settings):
    checkpoint = torch.load(random_ckpt, weights_only=True)
    checkpoint["datamodule_hyper_parameters"] = settings
    torch.save(checkpoint, tmp_path / "damaged.ckpt")
    with pytest.raises(CheckpointError, match="datamodule_hyper_parameters"):
        load_trained(tmp_path / "damaged.ckpt")


def test_an_export_keeps_the_data_checksums_and_claims_no_split_it_was_not_trained_on(tmp_path, random_ckpt, tiny_data):
    """The checksums travel with the split, so ensembles and distillation compare data sets through exported
    files; a model that records no split is calibrated on the data config's, which its file does not claim."""
    checkpoint = torch.load(random_ckpt, weights_only=True)
    checksums = {"train-images-idx3-ubyte": "0" * 32}
    checkpoint["datamodule_hyper_parameters"]["checksums"] = checksums
    torch.save(checkpoint, tmp_path / "with_checksums.ckpt")
    run_export(
        tmp_path,
        f"ckpt_path={tmp_path / 'with_checksums.ckpt'}",
        f"out={tmp_path / 'a.safetensors'}",
        "format=safetensors",
    )
    assert load_trained(tmp_path / "a.safetensors")[1]["checksums"] == checksums

    del checkpoint["datamodule_hyper_parameters"]
    torch.save(checkpoint, tmp_path / "no_split.ckpt")
    data = [o for o in tiny_data_overrides(tiny_data, tmp_path) if o.startswith("data.")]  # val_size=100
    run_export(tmp_path, f"ckpt_path={tmp_path / 'no_split.ckpt'}", f"out={tmp_path / 'b.safetensors'}",
               "format=safetensors", "calibrate=true", *data)  # fmt: skip
    assert load_trained(tmp_path / "b.safetensors")[1] == {}  # so no ensemble or distillation takes it
    assert json.loads((tmp_path / "b.json").read_text())["calibrated_on"]["val_size"] == 100


SHIPPED_RESNET = PROJECT_ROOT / "models" / "fmnist_resnet.safetensors"
SHIPPED_ROBUST = PROJECT_ROOT / "models" / "fmnist_resnet_robust.safetensors"


@pytest.mark.parametrize("path", [SHIPPED, SHIPPED_RESNET, SHIPPED_ROBUST], ids=["cnn", "resnet", "robust"])
def test_shipped_models_are_small_and_load(path):
    assert path.is_file() and path.stat().st_size < 5 * 2**20
    model = load_classifier(path)
    assert list(model.hparams.class_names)[1] == "Trouser"


@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_REAL_DATA, reason="the real Fashion-MNIST files are not installed")
def test_shipped_model_is_accurate_on_real_test_images(tmp_path):
    images = load_idx_gz(REAL_DATA / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, None)[:500].numpy()
    labels = load_idx_gz(REAL_DATA / "t10k-labels-idx1-ubyte.gz", 2049, None)[:500].numpy()
    np.save(tmp_path / "test.npy", images)
    rows = run_predict(tmp_path, f"images={tmp_path / 'test.npy'}", "top_k=1")  # the default ckpt_path: shipped
    assert np.mean(np.array(top1(rows)) == labels) > 0.88


@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_REAL_DATA, reason="the real Fashion-MNIST files are not installed")
def test_the_robust_model_keeps_its_accuracy_where_the_default_one_loses_it():
    """500 real test images, turned a quarter, inverted or low in contrast (the benchmark's corruptions): the robust
    model stays near its clean accuracy, the default shipped model falls towards chance (its card: 13-26 %)."""
    images = load_idx_gz(REAL_DATA / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, None)[:500].unsqueeze(1) / 255
    labels = load_idx_gz(REAL_DATA / "t10k-labels-idx1-ubyte.gz", 2049, None)[:500].long()
    models = {path.stem: load_classifier(path).eval() for path in (SHIPPED_RESNET, SHIPPED_ROBUST)}
    for name in ("rot90", "inversion", "contrast"):
        corrupted = corrupt(images, name, seed=0)
        with torch.no_grad():
            acc = {m: (model(corrupted).argmax(1) == labels).float().mean().item() for m, model in models.items()}
        assert acc["fmnist_resnet_robust"] > 0.75 and acc["fmnist_resnet"] < 0.5, (name, acc)


CARDS = [  # model file, its card, the TTA its card's headline figure uses (the one its training run used)
    pytest.param(SHIPPED, PROJECT_ROOT / "models" / "README.md", "flip", id="cnn",
                 marks=pytest.mark.slow),  # 2 views of 10,000 images: ~15 s on 2 cores
    pytest.param(SHIPPED_RESNET, PROJECT_ROOT / "models" / "fmnist_resnet.md", "flip+shift", id="resnet",
                 marks=pytest.mark.slow),  # 6 views of 10,000 images through the ResNet: ~1 min on 2 cores
    pytest.param(SHIPPED_ROBUST, PROJECT_ROOT / "models" / "fmnist_resnet_robust.md", "flip+shift", id="robust",
                 marks=pytest.mark.slow),
]  # fmt: skip


@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_REAL_DATA, reason="the real Fashion-MNIST files are not installed")
@pytest.mark.parametrize(("model", "card", "tta"), CARDS)
def test_eval_reproduces_the_model_cards_test_accuracy(model, card, tta, tmp_path):
    """With no options: the model file records the TTA and precision (fp32) its card's figure was scored with."""
    stated = float(re.search(r"\*\*test accuracy ([\d.]+) %\*\*", card.read_text()).group(1))  # the headline
    result = run_cli("eval.py", f"ckpt_path={model}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert round(100 * metrics["test/acc"], 2) == stated
    assert metrics["tta"] == tta and metrics["precision"] == "32-true"
    assert f"tta={tta}" in result.stdout + result.stderr, "the log line names the TTA"
