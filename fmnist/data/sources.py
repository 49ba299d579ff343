"""Finding the four Fashion-MNIST files: the configured directory, then the Debian/Ubuntu package's directory,
then a download from the official mirrors. Whatever the source, every file is checked before use."""

from __future__ import annotations

import gzip
import logging
import os
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import torch
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from fmnist.data.idx import IMAGE_MAGIC, LABEL_MAGIC, load_idx_gz, md5
from fmnist.utils.errors import DataError
from fmnist.utils.io import atomic_path

log = logging.getLogger(__name__)

# split name -> (file name, idx magic number)
FILES: dict[str, tuple[str, int]] = {
    "train_images": ("train-images-idx3-ubyte.gz", IMAGE_MAGIC),
    "train_labels": ("train-labels-idx1-ubyte.gz", LABEL_MAGIC),
    "test_images": ("t10k-images-idx3-ubyte.gz", IMAGE_MAGIC),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", LABEL_MAGIC),
}
# MD5 of the decompressed bytes as published by Zalando; the same for their `.gz` files and Debian's repacked ones.
OFFICIAL_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
HOW_TO_GET = (
    "Get the data in one of three ways:\n"
    "  1. on Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (files land in {system})\n"
    "  2. with network access: run again with data.download=true (the default) to fetch them into {data_dir}\n"
    "  3. copy the four files ({names}) into a directory and pass data.data_dir=<that directory>"
)


def data_file(directory: Path, name: str) -> Path | None:
    """`name` in `directory`, or its decompressed copy (`gunzip` leaves train-images-idx3-ubyte); None if neither."""
    return next((p for p in (directory / name, directory / name.removesuffix(".gz")) if p.is_file()), None)


def _missing(directory: Path) -> list[str]:
    return [name for name, _ in FILES.values() if data_file(directory, name) is None]


def download_file(url: str, dest: Path, expected_md5: str | None, timeout: float = 30.0) -> None:
    """Fetch `url` to `dest` atomically: a temporary file in the same directory, checked, then renamed."""
    with atomic_path(dest) as tmp:  # a failed or interrupted download leaves nothing under dest's name
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task(f"download {dest.name}", total=total)
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    progress.advance(task, len(chunk))
        with gzip.open(tmp, "rb") as f:
            digest = md5(f.read())
        if expected_md5 is not None and digest != expected_md5:
            raise DataError(f"{url}: MD5 of the decompressed download is {digest}, expected {expected_md5}.")


def _download_all(data_dir: Path, mirrors: list[str], checksums: dict[str, str]) -> list[str]:
    """Download the missing files into data_dir, trying each mirror; returns the reasons of failures."""
    failures = []
    for name in _missing(data_dir):
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                log.info(f"Downloading {url}")
                download_file(url, data_dir / name, checksums.get(name))
                break
            except (urllib.error.URLError, OSError, EOFError, zlib.error, DataError) as e:  # a damaged body: next
                failures.append(f"{url}: {e}")
        else:
            return failures
    return failures


def locate(
    data_dir: str | os.PathLike,
    system_dir: str | os.PathLike | None = SYSTEM_DIR,
    download: bool = True,
    mirrors: list[str] | tuple[str, ...] = MIRRORS,
    checksums: dict[str, str] | None = None,
) -> Path:
    """The first directory that holds all four files: data_dir, system_dir, or data_dir after a download."""
    checksums = OFFICIAL_MD5 if checksums is None else checksums
    tried = []
    for directory in [Path(data_dir), Path(system_dir) if system_dir else None]:
        if directory is None:
            continue
        missing = _missing(directory)
        if not missing:
            return directory
        tried.append(f"{directory}: missing {', '.join(missing)}")
    if download:
        failures = _download_all(Path(data_dir), list(mirrors), checksums)
        if not _missing(Path(data_dir)):
            return Path(data_dir)
        tried.append("download from " + ", ".join(mirrors) + ":\n      " + "\n      ".join(failures))
    else:
        tried.append("download: skipped (data.download=false)")
    names = ", ".join(name for name, _ in FILES.values())
    raise DataError(
        "Fashion-MNIST files not found. Tried:\n  - "
        + "\n  - ".join(tried)
        + "\n"
        + HOW_TO_GET.format(system=SYSTEM_DIR, data_dir=data_dir, names=names)
    )


def load_arrays(directory: Path, checksums: dict[str, str] | None = None) -> dict[str, torch.Tensor]:
    """All four files of `directory` as uint8 tensors, each verified (gzip, MD5, magic, shape, counts)."""
    checksums = OFFICIAL_MD5 if checksums is None else checksums
    arrays = {}
    for key, (name, magic) in FILES.items():
        try:
            path = data_file(directory, name) or directory / name
            arrays[key] = load_idx_gz(path, magic, checksums.get(name))
        except DataError as e:
            raise DataError(
                f"{e}\nFix: delete {path} and run again to download it, reinstall the package "
                "(sudo apt-get install --reinstall dataset-fashion-mnist), or point data.data_dir to good files."
            ) from e
    for split in ("train", "test"):
        n_images, n_labels = len(arrays[f"{split}_images"]), len(arrays[f"{split}_labels"])
        if n_images != n_labels:
            raise DataError(f"{directory}: the {split} split has {n_images} images but {n_labels} labels.")
        if int(arrays[f"{split}_labels"].max()) > 9:
            raise DataError(f"{directory}: {split} labels outside 0..9; not Fashion-MNIST label files.")
    return arrays
