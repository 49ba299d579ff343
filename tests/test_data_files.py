"""The idx reader's checks and the order of data sources, including a real download from a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from fmnist.data.idx import IMAGE_MAGIC, load_idx_gz, parse_idx
from fmnist.data.sources import FILES, OFFICIAL_MD5, load_arrays, locate
from fmnist.utils.errors import DataError

from conftest import idx_bytes, write_tiny_fmnist

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def test_good_files_load_with_shapes_and_values(tiny_data):
    directory, checksums = tiny_data
    arrays = load_arrays(directory, checksums)
    assert arrays["train_images"].shape == (600, 28, 28) and arrays["train_images"].dtype == torch.uint8
    assert arrays["test_images"].shape == (200, 28, 28)
    assert arrays["train_labels"].shape == (600,)
    assert torch.bincount(arrays["train_labels"].long()).tolist() == [60] * 10


def test_parse_idx_round_trip():
    array = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    assert torch.equal(parse_idx(idx_bytes(array), IMAGE_MAGIC, "x"), torch.from_numpy(array))


def test_wrong_magic_names_the_file(tiny_data, tmp_path):
    directory, _ = tiny_data
    # a label file where an image file belongs
    shutil.copy(directory / "train-labels-idx1-ubyte.gz", tmp_path / TRAIN_IMAGES)
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}.*magic number 2049 where 2051"):
        load_idx_gz(tmp_path / TRAIN_IMAGES, IMAGE_MAGIC, None)


def test_truncated_gzip_is_reported(tiny_data, tmp_path):
    directory, _ = tiny_data
    data = (directory / TRAIN_IMAGES).read_bytes()
    (tmp_path / TRAIN_IMAGES).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_idx_gz(tmp_path / TRAIN_IMAGES, IMAGE_MAGIC, None)


def test_truncated_contents_fail_the_size_check(tiny_data, tmp_path):
    raw = gzip.decompress((tiny_data[0] / TRAIN_IMAGES).read_bytes())
    (tmp_path / TRAIN_IMAGES).write_bytes(gzip.compress(raw[:-100]))  # valid gzip, short idx payload
    with pytest.raises(DataError, match="header declares shape"):
        load_idx_gz(tmp_path / TRAIN_IMAGES, IMAGE_MAGIC, None)


def test_checksum_mismatch_names_file_and_fix(tiny_data, tmp_path):
    directory, _ = tiny_data
    for name, _ in FILES.values():
        shutil.copy(directory / name, tmp_path / name)
    # the tiny files are not the official release: the default (official) checksums must refuse them
    with pytest.raises(DataError, match=rf"{TRAIN_IMAGES}: MD5 .* expected {OFFICIAL_MD5[TRAIN_IMAGES]}") as e:
        load_arrays(tmp_path)
    assert "Fix: delete" in str(e.value) and "dataset-fashion-mnist" in str(e.value)


def test_label_and_image_counts_must_agree(tmp_path):
    checksums = write_tiny_fmnist(tmp_path, n_train=100, n_test=20)
    labels = np.zeros(90, dtype=np.uint8)  # 100 images, 90 labels
    name = "train-labels-idx1-ubyte.gz"
    (tmp_path / name).write_bytes(gzip.compress(idx_bytes(labels)))
    with pytest.raises(DataError, match="100 images but 90 labels"):
        load_arrays(tmp_path, {**checksums, name: None})


# --- where the files come from --------------------------------------------------------------------------------
def test_decompressed_files_load_like_the_gz_ones(tiny_data, tmp_path):
    """`gunzip *.gz` leaves train-images-idx3-ubyte & co.: found, checked (the MD5 is of the decompressed bytes)."""
    directory, checksums = tiny_data
    for path in directory.glob("*.gz"):
        (tmp_path / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    assert locate(tmp_path, system_dir=None, download=False) == tmp_path
    arrays, expected = load_arrays(tmp_path, checksums), load_arrays(directory, checksums)
    assert all(torch.equal(arrays[k], expected[k]) for k in expected)
    (tmp_path / TRAIN_IMAGES.removesuffix(".gz")).write_bytes(b"\x00" * 20)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: MD5 .*\nFix: delete .*train-images-idx3-ubyte "):
        load_arrays(tmp_path, checksums)


def test_configured_dir_comes_first(tiny_data, tmp_path):
    directory, _ = tiny_data
    assert locate(directory, system_dir=tmp_path, download=False) == directory


def test_system_dir_is_second(tiny_data, tmp_path):
    directory, _ = tiny_data
    assert locate(tmp_path / "empty", system_dir=directory, download=False) == directory


def test_nothing_found_lists_places_and_three_fixes(tmp_path):
    with pytest.raises(DataError) as e:
        locate(tmp_path / "mine", system_dir=tmp_path / "system", download=False)
    message = str(e.value)
    assert str(tmp_path / "mine") in message and str(tmp_path / "system") in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "data.download=true" in message and "data.data_dir=" in message


@contextlib.contextmanager
def serve(directory: Path):
    """A local HTTP server on 127.0.0.1 serving `directory` (so the real download code runs offline)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.fixture
def http_server(tiny_data):
    with serve(tiny_data[0]) as url:
        yield url


def test_download_is_third_and_checked(tiny_data, http_server, tmp_path):
    _, checksums = tiny_data
    target = tmp_path / "data"
    dead_mirror = "http://127.0.0.1:9/"  # nothing listens on the discard port: the next mirror is tried
    found = locate(target, tmp_path / "system", True, [dead_mirror, http_server], checksums)
    assert found == target
    arrays = load_arrays(target, checksums)
    assert arrays["train_images"].shape == (600, 28, 28)
    assert sorted(p.name for p in target.iterdir()) == sorted(checksums)  # no temporary file left


def test_damaged_download_moves_on_to_the_next_mirror(tiny_data, http_server, tmp_path):
    directory, checksums = tiny_data
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in checksums:  # a gzip header, then a deflate stream with flipped bytes: zlib.error on reading
        data = bytearray((directory / name).read_bytes())
        for i in range(20, len(data) - 20, 7):
            data[i] ^= 0xFF
        (damaged / name).write_bytes(bytes(data))
    target = tmp_path / "data"
    with serve(damaged) as damaged_mirror:
        assert locate(target, None, True, [damaged_mirror, http_server], checksums) == target
    assert load_arrays(target, checksums)["train_images"].shape == (600, 28, 28)
    assert sorted(p.name for p in target.iterdir()) == sorted(checksums)  # the damaged tries left nothing


def test_download_with_wrong_checksum_leaves_nothing(tiny_data, http_server, tmp_path):
    _, checksums = tiny_data
    wrong = {**checksums, TRAIN_IMAGES: "0" * 32}
    target = tmp_path / "data"
    with pytest.raises(DataError, match=r"(?s)MD5 of the decompressed download.*apt-get install"):
        locate(target, None, True, [http_server], wrong)
    assert not (target / TRAIN_IMAGES).exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")], "a failed download must not leave partials"
