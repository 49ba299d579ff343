"""Reading the idx files Fashion-MNIST ships in, with every check that turns a bad file into a clear message.

The format (http://yann.lecun.com/exdb/mnist/): a big-endian header `0x0000 <dtype> <ndim>` followed by one
uint32 size per dimension, then the raw bytes. Fashion-MNIST uses dtype 0x08 (uint8): images are 3-d
(magic 2051), labels 1-d (magic 2049).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from fmnist.utils.errors import DataError

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049


def read_gz(path: Path) -> bytes:
    """Decompressed bytes of a `.gz` file; a truncated or non-gzip file raises DataError naming it."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; truncation is an EOFError
        raise DataError(f"{path} is not a readable gzip file ({e}); it is truncated or corrupt.") from e


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def parse_idx(data: bytes, expected_magic: int, name: str) -> torch.Tensor:
    """Parse idx bytes into a uint8 tensor, checking the magic number and that the sizes match the length."""
    if len(data) < 8:
        raise DataError(f"{name}: {len(data)} bytes is too short for an idx header.")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataError(
            f"{name}: magic number {magic} where {expected_magic} was expected; "
            "this is not a Fashion-MNIST "
            f"{'image' if expected_magic == IMAGE_MAGIC else 'label'} file."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected_len = header + int(np.prod(shape))
    if len(data) != expected_len:
        raise DataError(
            f"{name}: header declares shape {tuple(shape)} ({expected_len} bytes) but the file has "
            f"{len(data)} bytes; it is truncated or corrupt."
        )
    if ndim == 3 and tuple(shape[1:]) != (28, 28):
        raise DataError(f"{name}: images are {shape[1]}x{shape[2]}, Fashion-MNIST images are 28x28.")
    array = np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)
    return torch.from_numpy(array.copy())


def load_idx_gz(path: Path, expected_magic: int, expected_md5: str | None) -> torch.Tensor:
    """Read, verify and parse one idx file: `.gz`, or already decompressed (any other name).

    The MD5 is of the *decompressed* bytes: Debian repacks the `.gz` files, so only the raw contents match
    the published checksums for every source.
    """
    data = read_gz(path) if path.suffix == ".gz" else path.read_bytes()
    if expected_md5 is not None and md5(data) != expected_md5:
        raise DataError(
            f"{path}: MD5 of the decompressed contents is {md5(data)}, expected {expected_md5}; "
            "the file is corrupt or not the official Fashion-MNIST release."
        )
    return parse_idx(data, expected_magic, str(path))
