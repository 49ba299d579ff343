"""predict.py: preprocessing, reading inputs safely, predictions, and every bad input ending in one message naming
the file and exit 2. Export and the shipped models: test_export.py."""

from __future__ import annotations

import gzip
import json
import logging
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from fmnist import PROJECT_ROOT
from fmnist.models.files import load_classifier
from fmnist.predict.images import read_items
from fmnist.predict.preprocess import photo_to_fmnist, prepare
from fmnist.predict.task import predict
from fmnist.utils.errors import report_user_errors

from conftest import HAVE_REAL_DATA, compose_cfg, idx_bytes, run_cli

SHIPPED = PROJECT_ROOT / "models" / "fmnist_cnn.safetensors"
SHIPPED_RESNET = PROJECT_ROOT / "models" / "fmnist_resnet.safetensors"


def run_predict(tmp_path: Path, *overrides: str) -> list[dict]:
    cfg = compose_cfg("predict", [f"paths.log_dir={tmp_path / 'out'}", *overrides], tmp_path / "run")
    return report_user_errors(predict, cfg)


def forward_classes(model_path: Path, images: np.ndarray) -> list[int]:
    """The classes eval.py scores: the model's recorded test-time augmentation on the data set's tensors."""
    model = load_classifier(model_path)
    with torch.no_grad():
        return model.calibrated(torch.from_numpy(images).float().div(255).unsqueeze(1)).argmax(1).tolist()


def top1(rows: list[dict]) -> list[int]:
    return [r["index"] for r in rows]


# --- preprocessing -----------------------------------------------------------------------------------------------
def photo(size=(300, 200), box=(20, 30, 110, 170), fill=40, background=235) -> Image.Image:
    """A dark garment-like shape (a shirt body with sleeves) off-centre on a larger light canvas."""
    image = Image.new("RGB", size, (background, background, background - 5))
    left, top, right, bottom = box
    draw = ImageDraw.Draw(image)
    w = right - left
    draw.rectangle([left + w // 4, top, right - w // 4, bottom], fill=(fill, fill, fill + 20))
    draw.polygon([(left, top + 20), (left + w // 4, top), (left + w // 4, top + 50)], fill=(fill, fill, fill))
    draw.polygon([(right, top + 20), (right - w // 4, top), (right - w // 4, top + 50)], fill=(fill, fill, fill))
    return image


def test_photo_becomes_centred_light_on_black_28x28():
    out, applied = prepare(photo(), "photo")
    assert applied == "photo" and out.shape == (28, 28) and out.dtype == np.uint8
    corners = [out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]]
    assert max(corners) == 0, "the light background became black"
    assert out.max() == 255 and out[14, 14] > 200, "the dark garment became light"
    rows, cols = np.flatnonzero(out.max(1) > 64), np.flatnonzero(out.max(0) > 64)
    assert rows[0] <= 1 and rows[-1] >= 26, "the longest edge (height) spans the 28 pixels"
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1, "centred horizontally"
    mass = out.astype(float)
    centroid = (mass.sum(1) @ np.arange(28)) / mass.sum(), (mass.sum(0) @ np.arange(28)) / mass.sum()
    assert abs(centroid[1] - 13.5) <= 1.0, centroid


def test_unevenly_lit_photo_is_cropped_to_the_garment_not_the_light():
    """A table lit from above: the background darkens from 250 to 170 towards the bottom. With one background
    level the darker half counts as object; the fitted background plane keeps the crop on the garment."""
    image = photo(size=(300, 400), box=(150, 40, 240, 180))  # the garment in the upper right
    gradient = np.linspace(250, 170, 400)[:, None] * np.ones((1, 300))
    gray = np.asarray(image.convert("L")).astype(float)
    lit = np.where(gray > 200, gradient, gray).astype(np.uint8)  # the light background replaced by the gradient
    out = photo_to_fmnist(lit)
    rows, cols = np.flatnonzero(out.max(1) > 64), np.flatnonzero(out.max(0) > 64)
    assert rows[0] <= 1 and rows[-1] >= 26, "the garment's height spans the 28 pixels, not the garment + the shade"
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1, "centred horizontally"
    assert max(out[0, 0], out[0, -1], out[-1, 0], out[-1, -1]) == 0, "no background left in the corners"
    evenly_lit = photo_to_fmnist(np.asarray(image.convert("L")))
    assert ((out > 64) == (evenly_lit > 64)).mean() > 0.97, "the same shape as without the shade"


def test_photo_on_dark_background_is_not_inverted():
    light_on_dark = 255 - np.asarray(photo().convert("L"))
    assert np.array_equal(photo_to_fmnist(light_on_dark), prepare(photo(), "photo")[0])


def test_preprocess_none_passes_28x28_unchanged(tmp_path, test_images):
    image = test_images[0][3]
    Image.fromarray(image).save(tmp_path / "x.png")
    (item,) = read_items(tmp_path / "x.png", "none")
    assert np.array_equal(item.pixels, image)


# --- predictions -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["random", "shipped_cnn", "shipped_resnet"])
def test_png_predictions_match_forward_on_tensors(model, tmp_path, request, test_images):
    """Test images written to PNG and read back by predict.py get the classes of the model's forward pass on the
    data set's tensors (what eval.py scores); the shipped models also get them right."""
    path = {"random": None, "shipped_cnn": SHIPPED, "shipped_resnet": SHIPPED_RESNET}[model]
    path = path or request.getfixturevalue("random_ckpt")
    images, labels = test_images
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    rows = run_predict(tmp_path, f"images={folder}", f"ckpt_path={path}", "top_k=2",
                       f"out={tmp_path / 'preds.json'}", "save_inputs=true")  # fmt: skip
    assert {r["preprocess"] for r in rows} == {"none"}, "28x28 on black: the photo steps are skipped by themselves"
    assert top1(rows) == forward_classes(path, images)
    if model != "random" and HAVE_REAL_DATA:  # 40 real test images: at 93-95 % accuracy, 2-3 wrong at most
        assert (np.array(top1(rows)) == labels).sum() >= 36
    saved = json.loads((tmp_path / "preds.json").read_text())["predictions"]
    assert [s["top"][0]["index"] for s in saved] == top1(rows) and len(saved[0]["top"]) == 2
    assert (tmp_path / "run" / "inputs.png").is_file()


def test_npy_and_idx_inputs(tmp_path, random_ckpt, test_images):
    images = test_images[0][:10]
    np.save(tmp_path / "x.npy", images)
    (tmp_path / "x-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    rows = run_predict(tmp_path, f"images=[{tmp_path / 'x.npy'},{tmp_path / 'x-idx3-ubyte.gz'}]",
                       f"ckpt_path={random_ckpt}", "top_k=1", f"out={tmp_path / 'p.csv'}")  # fmt: skip
    assert top1(rows) == forward_classes(random_ckpt, images) * 2
    first = (tmp_path / "p.csv").read_text().splitlines()[1]
    assert first.startswith(f"{tmp_path / 'x.npy'}[0],{rows[0]['class']},{rows[0]['index']},")


def test_folder_skips_bad_files_and_predicts_the_rest(tmp_path, random_ckpt, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    photo().save(folder / "good.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "cut.png").write_bytes(png_bytes()[:-200])
    with caplog.at_level(logging.WARNING, logger="fmnist"):
        rows = run_predict(tmp_path, f"images={folder}", f"ckpt_path={random_ckpt}")
    assert {r["file"] for r in rows} == {str(folder / "good.jpg")}
    assert "notes.txt" in caplog.text and "cut.png" in caplog.text


# --- bad input ---------------------------------------------------------------------------------------------------
def png_bytes(size=(64, 64)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit gray) and holds no pixel data: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def write_bad(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / {"missing": "nothing.png", "text": "notes.png", "truncated_png": "cut.png",
                       "truncated_jpeg": "cut.jpg", "bomb": "bomb.png", "bomb_warning": "big.png",
                       "gif": "anim.gif", "npy_shape": "x.npy", "npy_pickle": "o.npy",
                       "labels_idx": "t10k-labels-idx1-ubyte.gz", "empty": "empty.bmp"}[kind]  # fmt: skip
    if kind == "text":
        path.write_text("this is not an image\n")
    elif kind == "truncated_png":
        path.write_bytes(png_bytes()[:-300])
    elif kind == "truncated_jpeg":
        photo().save(path, format="JPEG")
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "bomb":  # over 2x Image.MAX_IMAGE_PIXELS: Pillow's DecompressionBombError
        path.write_bytes(png_header(20000, 20000))
    elif kind == "bomb_warning":  # between 1x and 2x: Pillow only warns, predict refuses
        path.write_bytes(png_header(10000, 10000))
    elif kind == "gif":
        Image.new("L", (28, 28)).save(path, format="GIF")
    elif kind == "npy_shape":
        np.save(path, np.zeros((3, 32, 32), np.uint8))
    elif kind == "npy_pickle":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif kind == "labels_idx":
        path.write_bytes(gzip.compress(struct.pack(">II", 2049, 3) + bytes(3)))
    elif kind == "empty":
        path.write_bytes(b"")
    return path


BAD_INPUTS = {
    "missing": "does not exist",
    "text": "unknown format",
    "truncated_png": "truncated or corrupt",
    "truncated_jpeg": "truncated or corrupt",
    "bomb": "decompression bomb",
    "bomb_warning": "decompression bomb",
    "gif": "is a GIF file",
    "npy_shape": "shape (3, 32, 32)",
    "npy_pickle": "not a readable .npy",
    "labels_idx": "not a Fashion-MNIST image file",
    "empty": "is empty",
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_exits_2_naming_the_file(kind, tmp_path, random_ckpt, caplog):
    path = write_bad(tmp_path, kind)
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
        run_predict(tmp_path, f"images={path}", f"ckpt_path={random_ckpt}")
    assert exit_info.value.code == 2
    assert str(path) in caplog.text and BAD_INPUTS[kind] in caplog.text, caplog.text


def test_preprocess_none_refuses_other_sizes(tmp_path, random_ckpt, caplog):
    photo().save(tmp_path / "big.png")
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
        run_predict(tmp_path, f"images={tmp_path / 'big.png'}", f"ckpt_path={random_ckpt}", "preprocess=none")
    assert exit_info.value.code == 2 and "big.png is 300x200" in caplog.text


def test_uniform_image_has_no_object(tmp_path, random_ckpt, caplog):
    Image.new("RGB", (50, 50), "white").save(tmp_path / "blank.webp", format="WEBP")
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit):
        run_predict(tmp_path, f"images={tmp_path / 'blank.webp'}", f"ckpt_path={random_ckpt}")
    assert "blank.webp shows no object" in caplog.text


@pytest.mark.parametrize("kind", ["gan", "plain_safetensors", "missing", "garbage"])
def test_checkpoint_that_is_not_a_classifier_exits_2(kind, tmp_path, caplog):
    from safetensors.torch import save_file

    photo().save(tmp_path / "x.png")
    path = tmp_path / ("model.safetensors" if "safetensors" in kind else "model.ckpt")
    if kind == "gan":
        torch.save({"state_dict": {}, "hyper_parameters": {"generator": {}}}, path)
    elif kind == "plain_safetensors":
        save_file({"w": torch.zeros(2)}, str(path))
    elif kind == "garbage":
        path.write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
        run_predict(tmp_path, f"images={tmp_path / 'x.png'}", f"ckpt_path={path}")
    assert exit_info.value.code == 2 and str(path) in caplog.text, caplog.text


def test_a_run_folder_predicts_with_its_best_checkpoint(tmp_path, random_ckpt):
    photo().save(tmp_path / "x.png")
    run = tmp_path / "run_dir"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(random_ckpt.read_bytes())
    from_folder = run_predict(tmp_path, f"images={tmp_path / 'x.png'}", f"ckpt_path={run}")
    from_file = run_predict(tmp_path, f"images={tmp_path / 'x.png'}", f"ckpt_path={random_ckpt}")
    assert [r["top"] for r in from_folder] == [r["top"] for r in from_file]


def test_a_run_folder_without_a_checkpoint_or_an_unwritable_out_is_refused_with_the_fix(tmp_path, random_ckpt, caplog):
    photo().save(tmp_path / "x.png")
    run = tmp_path / "run_dir"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(random_ckpt.read_bytes())
    (tmp_path / "a_file").write_text("")
    cases = {  # what was given -> what the one message must say
        (f"ckpt_path={run}",): f"ckpt_path={run} is a folder without checkpoints/best.ckpt (an unfinished or failed",
        (f"ckpt_path={random_ckpt}", f"out={tmp_path / 'a_file' / 'p.csv'}"): "a_file is a file, not a folder",
    }
    for overrides, message in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
            run_predict(tmp_path, f"images={tmp_path / 'x.png'}", *overrides)
        assert exit_info.value.code == 2 and message in caplog.text, caplog.text


def test_empty_images_and_a_changed_or_unsafe_checkpoint_say_what_to_do(tmp_path, random_ckpt, caplog):
    import argparse

    photo().save(tmp_path / "x.png")
    checkpoint = torch.load(random_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["backbone"]["hidden"] = 64  # weights of the 128-unit layer no longer fit
    torch.save(checkpoint, tmp_path / "changed.ckpt")
    torch.save({"state_dict": {}, "x": argparse.Namespace(a=1)}, tmp_path / "pickled.ckpt")
    data = bytearray(random_ckpt.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 400] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 400])
    (tmp_path / "damaged.ckpt").write_bytes(data)  # the weights' bytes flipped, the archive's structure intact
    image = f"images={tmp_path / 'x.png'}"
    cases = {  # what was given -> what the one message must say
        ("images=[]", f"ckpt_path={random_ckpt}"): r"images=\[\]: names no file. Give a file, a folder or a glob",
        ("images=''", f"ckpt_path={random_ckpt}"): "images= is empty. Pass an image file, a folder or a glob",
        (image, f"ckpt_path={tmp_path / 'changed.ckpt'}"): "its weights do not fit the model its own hyperparameters",
        (image, f"ckpt_path={tmp_path / 'pickled.ckpt'}"): "was refused: it names argparse.Namespace, which only a",
        (image, f"ckpt_path={tmp_path / 'damaged.ckpt'}"): "is damaged: .* fails the archive's CRC check",
    }
    for overrides, message in cases.items():
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
            run_predict(tmp_path, *overrides)
        assert exit_info.value.code == 2 and re.search(message, caplog.text) and "\x1b[" not in caplog.text, caplog.text


def test_unsafe_target_in_model_file_is_refused(tmp_path, random_ckpt):
    from fmnist.utils.errors import CheckpointError

    checkpoint = torch.load(random_ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["finetuning"] = {"_target_": "os.system", "command": "echo hi"}
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"os\.system"):
        load_classifier(tmp_path / "evil.ckpt")
    # an allowed prefix is not enough: Hydra walks attributes, and fmnist.utils.io imports os
    marker = tmp_path / "pwned.txt"
    checkpoint["hyper_parameters"]["finetuning"] = {
        "_target_": "fmnist.utils.io.os.system",
        "_args_": [f"touch {marker}"],
    }
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointError, match=r"names fmnist\.utils\.io\.os\.system to instantiate"):
        load_classifier(tmp_path / "evil.ckpt")
    assert not marker.exists()


@pytest.mark.parametrize("override", ["top_k=abc", "top_k=2.5", "top_k=0", "max_image_pixels=lots"])
def test_bad_config_values_exit_2_naming_the_key(override, tmp_path, random_ckpt, caplog):
    photo().save(tmp_path / "x.png")
    with caplog.at_level(logging.ERROR, logger="fmnist"), pytest.raises(SystemExit) as exit_info:
        run_predict(tmp_path, f"images={tmp_path / 'x.png'}", f"ckpt_path={random_ckpt}", override)
    assert exit_info.value.code == 2 and override.split("=")[0] in caplog.text, caplog.text


def test_cli_exit_codes(tmp_path, random_ckpt):
    bad = write_bad(tmp_path, "truncated_png")
    result = run_cli("predict.py", f"images={bad}", f"ckpt_path={random_ckpt}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 2 and f"{bad} is truncated or corrupt" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    photo().save(tmp_path / "shirt.png")
    result = run_cli("predict.py", f"images={tmp_path}/*.png", f"ckpt_path={random_ckpt}", f"paths.log_dir={tmp_path}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Predictions · random.ckpt" in result.stdout and "1 of 2 inputs skipped" in result.stdout
