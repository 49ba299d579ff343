"""predict.py as a timm inference.py user expects: the strongest shipped model by default, 28x28 Fashion-MNIST-style
inputs left as they are, one row per image (CSV or JSON; the long layout on request), calibrated probabilities
from the model's recorded TTA and temperature, and an `uncertain` flag from its validation threshold."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmnist.models.files import load_classifier
from fmnist.models.tta import tta_logits
from fmnist.predict.output import wide_columns
from fmnist.predict.task import predict
from fmnist.utils.errors import report_user_errors

from conftest import HAVE_REAL_DATA, REAL_DATA, compose_cfg


def run_predict(tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_cfg("predict", [f"paths.log_dir={tmp_path / 'out'}", *overrides], tmp_path / "run")
    return report_user_errors(predict, cfg)


@pytest.fixture
def scored_ckpt(random_ckpt, tmp_path) -> Path:
    """The random CNN with a scoring record, as a training run writes it."""
    checkpoint = torch.load(random_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["scoring"] = {"tta": "flip", "temperature": 0.25, "uncertain_above": 0.0}
    torch.save(checkpoint, tmp_path / "scored.ckpt")
    return tmp_path / "scored.ckpt"


def photo() -> Image.Image:
    """A dark garment-like rectangle off-centre on a large light canvas."""
    image = Image.new("RGB", (300, 200), (235, 235, 230))
    image.paste((40, 40, 60), (40, 30, 110, 170))
    return image


def pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def test_default_model_is_the_stronger_shipped_resnet(tmp_path):
    cfg = compose_cfg("predict", ["images=x.png"], tmp_path)
    assert Path(cfg.ckpt_path).name == "fmnist_resnet.safetensors" and cfg.preprocess == "auto"


def test_probabilities_use_the_recorded_tta_and_temperature(scored_ckpt, test_images, tmp_path, caplog):
    images = test_images[0][:4]
    folder = pngs(tmp_path / "in", images)
    with caplog.at_level(logging.INFO, logger="fmnist"):
        rows = run_predict(tmp_path, f"images={folder}", f"ckpt_path={scored_ckpt}", "top_k=2")
    model = load_classifier(scored_ckpt)
    batch = torch.from_numpy(images).float().div(255).unsqueeze(1)
    with torch.no_grad():
        calibrated = tta_logits(model, batch, "flip") / 0.25
    assert [r["probability"] for r in rows] == pytest.approx(calibrated.softmax(1).max(1).values.tolist(), abs=1e-6)
    energies = (-calibrated.logsumexp(1)).tolist()
    assert [r["energy"] for r in rows] == pytest.approx(energies, abs=1e-3)
    assert [r["uncertain"] for r in rows] == [e > 0.0 for e in energies]
    assert "tta flip · temperature 0.250 · uncertain above energy 0.00" in caplog.text  # the log names how it scored
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fmnist"):
        overridden = run_predict(tmp_path, f"images={folder}", f"ckpt_path={scored_ckpt}", "tta=none")
    assert "fitted on validation with tta=flip; with other views the probabilities are calibrated only" in caplog.text
    with torch.no_grad():
        plain = (model(batch) / 0.25).softmax(1).max(1).values
    assert [r["probability"] for r in overridden] == pytest.approx(plain.tolist(), abs=1e-6)


def test_one_row_per_image_csv_json_and_the_long_layout(scored_ckpt, test_images, tmp_path):
    folder = pngs(tmp_path / "in", test_images[0][:3])
    rows = run_predict(tmp_path, f"images={folder}", f"ckpt_path={scored_ckpt}", f"out={tmp_path / 'p.csv'}")
    with open(tmp_path / "p.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == wide_columns(3) and len(table) == 3
    assert table[0]["file"] == str(folder / "000.png") and table[0]["class"] == rows[0]["class"]
    assert float(table[0]["probability"]) >= float(table[0]["probability_2"]) >= float(table[0]["probability_3"])
    assert table[0]["uncertain"] in ("true", "false") and table[0]["preprocess"] == "none"
    run_predict(tmp_path, f"images={folder}", f"ckpt_path={scored_ckpt}", f"out={tmp_path / 'p.json'}")
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["scoring"]["tta"] == "flip" and saved["scoring"]["temperature"] == 0.25
    assert [p["class"] for p in saved["predictions"]] == [r["class"] for r in rows]
    run_predict(tmp_path, f"images={folder}", f"ckpt_path={scored_ckpt}", f"out={tmp_path / 'l.csv'}", "format=long")
    with open(tmp_path / "l.csv") as f:
        long = list(csv.DictReader(f))
    assert list(long[0]) == ["file", "rank", "class", "index", "probability", "uncertain"] and len(long) == 9
    assert long[0]["file"] == table[0]["file"] and long[0]["uncertain"] == table[0]["uncertain"]


def test_the_table_names_inputs_within_their_shared_folder(random_ckpt, test_images, tmp_path, capsys):
    folder = tmp_path / "a_folder_with_a_long_name_that_would_wrap_the_input_column"
    folder.mkdir()
    folder = pngs(folder / "shots", test_images[0][:3])
    rows = run_predict(tmp_path, f"images={folder}", f"ckpt_path={random_ckpt}")
    console = capsys.readouterr().out
    assert f"in{folder}" in "".join(console.split())  # the title names the folder once (wrapped if long)
    for name in ("000.png", "001.png", "002.png"):
        assert any(line.startswith(f"│ {name} ") for line in console.splitlines()), console
    assert str(folder / "000.png") not in "".join(console.split())  # not the whole path, not even folded
    assert rows[0]["file"] == str(folder / "000.png")  # the rows (CSV, JSON) keep it


def test_fmnist_style_inputs_skip_the_photo_steps(random_ckpt, test_images, tmp_path):
    image = test_images[0][0]
    Image.fromarray(image).save(tmp_path / "fmnist.png")
    photo().save(tmp_path / "photo.jpg")
    Image.fromarray(255 - image).save(tmp_path / "light.png")  # 28x28 on a light background: a photo
    rows = run_predict(tmp_path, f"images=[{tmp_path}/fmnist.png,{tmp_path}/photo.jpg,{tmp_path}/light.png]",
                       f"ckpt_path={random_ckpt}", "save_inputs=true")  # fmt: skip
    assert [r["preprocess"] for r in rows] == ["none", "photo", "photo"]
    forced = run_predict(tmp_path, f"images={tmp_path}/fmnist.png", f"ckpt_path={random_ckpt}", "preprocess=photo")
    assert forced[0]["preprocess"] == "photo"


@pytest.mark.realdata
@pytest.mark.skipif(not HAVE_REAL_DATA, reason="the real Fashion-MNIST files are not installed")
def test_uncertain_flags_noise_but_few_real_images(tmp_path):
    """The default model's validation threshold (5 % of validation images flagged): most noise is flagged, as
    28x28 arrays and as noise photos (the photo steps crop and stretch them), and few real test images."""
    from fmnist.data.idx import IMAGE_MAGIC, load_idx_gz

    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", load_idx_gz(REAL_DATA / "t10k-images-idx3-ubyte.gz", IMAGE_MAGIC, None)[:200])
    np.save(tmp_path / "noise.npy", rng.integers(0, 256, (100, 28, 28), dtype=np.uint8))
    (tmp_path / "photos").mkdir()
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")

    def flagged(images: str) -> float:
        return float(np.mean([r["uncertain"] for r in run_predict(tmp_path, f"images={images}")]))

    assert flagged(f"{tmp_path}/real.npy") <= 0.08
    assert flagged(f"{tmp_path}/noise.npy") >= 0.85  # measured: 94 % of 300 (docs/predict.md)
    assert flagged(f"{tmp_path}/photos") >= 0.6  # measured: 82 % of 300 (square: a padded one looks like a bag)
