"""Reading prediction inputs safely: image files (PNG, JPEG, WebP, BMP), .npy arrays and idx(.gz) files.

Every failure becomes a DataError naming the file and the reason: missing, empty, not an image, an unsupported
format (judged by the file's contents, not its name), truncated or corrupt, or a decompression bomb (more pixels
than Pillow's Image.MAX_IMAGE_PIXELS; the warning Pillow gives between 1x and 2x that limit is an error here).
Only Pillow's decoders of the four supported formats are ever run on a file.
"""

from __future__ import annotations

import glob
import struct
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from fmnist.data.idx import IMAGE_MAGIC, parse_idx, read_gz
from fmnist.predict.preprocess import prepare
from fmnist.utils.errors import DataError, UserError

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # the Pillow decoders allowed to run
# leading bytes -> format name; used to pick the reader and to name what an unsupported file is
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"\x93NUMPY", "NPY"),
    (b"\x1f\x8b", "GZIP"),
    (b"\x00\x00\x08", "IDX"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
)
GLOB_CHARS = set("*?[")


@dataclass
class Item:
    """One image to classify: a display name (file, or file[index] for arrays) and the 28x28 uint8 the model sees."""

    name: str
    pixels: np.ndarray
    preprocess: str = "none"  # what was applied: photo | none (arrays are already in the data set's form)


def sniff(path: Path) -> str | None:
    """The format of a file from its first bytes (WEBP inside RIFF), or None when unknown."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def expand(specs: str | Iterable[str]) -> list[tuple[Path, bool]]:
    """`images=` values (files, folders, globs; one or a list) -> [(file, named_directly)], in order, no repeats.
    A file named directly must be readable; files found in a folder or by a glob are skipped when bad."""
    if isinstance(specs, str | Path):
        specs = [specs]
    found: dict[Path, bool] = {}
    for spec in map(str, specs):
        if not spec.strip():  # Path("") is the current folder: never what images='' meant
            raise DataError("images= is empty. Pass an image file, a folder or a glob, e.g. images='shots/*.jpg'.")
        path = Path(spec).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not files:
                raise DataError(f"Folder {path} holds no files to predict.")
            found.update((p, found.get(p, False)) for p in files)
        elif path.exists():
            found[path] = True
        elif GLOB_CHARS & set(spec):
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not files:
                raise DataError(f"images={spec} matches no file.")
            found.update((p, found.get(p, False)) for p in files)
        else:
            raise DataError(
                f"{path} does not exist. Pass an image file, a folder or a glob, e.g. images='shots/*.jpg'."
            )
    return list(found.items())


def open_image(path: Path) -> Image.Image:
    """A fully decoded PIL image (the file closed again); DataError naming the file and the reason otherwise."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # a process-wide switch some libraries flip; truncation must be an error
        raise DataError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set in this process; truncated images would pass.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                image.verify()  # structure and checksums (PNG CRCs), without decoding
            with Image.open(path, formats=IMAGE_FORMATS) as image:
                image.load()
                return image.copy() if image.mode != "P" else image.convert("RGBA")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(
            f"{path} was refused as a possible decompression bomb: {e} Raise max_image_pixels= if it is genuine."
        ) from e
    except UnidentifiedImageError as e:
        raise DataError(f"{path} is not a readable {'/'.join(IMAGE_FORMATS)} image ({e}).") from e
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, struct.error) as e:
        raise DataError(f"{path} is truncated or corrupt: {e}.") from e


def read_npy(path: Path) -> np.ndarray:
    """(N, 28, 28) or (28, 28) uint8 from a .npy file, never unpickling; the header is checked before any data is
    read (the file is memory-mapped)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path} is not a readable .npy array ({e}).") from e
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (28, 28) or array.dtype != np.uint8:
        raise DataError(
            f"{path} holds a {array.dtype} array of shape {tuple(array.shape)}; predict takes uint8 arrays of "
            "shape (N, 28, 28) in Fashion-MNIST form (light object on black)."
        )
    if len(array) == 0:
        raise DataError(f"{path} holds no images (shape {tuple(array.shape)}).")
    return np.array(array)


def read_idx(path: Path, gzipped: bool) -> np.ndarray:
    """(N, 28, 28) uint8 from an idx image file, plain or .gz (fmnist.data.idx checks magic, sizes, 28x28)."""
    data = read_gz(path) if gzipped else path.read_bytes()
    return parse_idx(data, IMAGE_MAGIC, str(path)).numpy()


def read_items(path: Path, preprocess: str) -> list[Item]:
    """The images in one file, each as the 28x28 uint8 the model sees. Image files are preprocessed by
    `preprocess`; arrays (.npy, idx) are already in Fashion-MNIST form and pass unchanged."""
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty.")
    kind = sniff(path)
    if kind in IMAGE_FORMATS:
        image = open_image(path)
        try:
            return [Item(str(path), *prepare(image, preprocess))]
        except UserError as e:
            raise DataError(f"{path} {e}") from e
    if kind == "NPY":
        arrays = read_npy(path)
    elif kind in ("IDX", "GZIP"):  # a .gz must hold an idx image file (parse_idx checks the magic number)
        arrays = read_idx(path, gzipped=kind == "GZIP")
    else:
        what = f"a {kind} file" if kind else "of an unknown format"
        raise DataError(
            f"{path} is {what}; predict reads PNG, JPEG, WebP and BMP images, .npy arrays and idx(.gz) image files."
        )
    return [Item(f"{path}[{i}]", a) for i, a in enumerate(arrays)]
