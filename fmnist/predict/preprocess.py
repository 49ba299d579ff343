"""Pure image -> 28x28 uint8 functions: turning a photo into what Fashion-MNIST images look like.

Xiao et al. 2017 (arXiv:1708.07747, section 2) made the data set from product photos on white backgrounds: trim the
edges close to the background colour, resize the longest edge to 28, extend the shortest edge to 28 and centre,
negate, 8-bit grayscale. `photo` follows that: grayscale, invert when the background (judged by the border pixels)
is light, subtract the background (a plane fitted to the border pixels: a real photo is lit unevenly, the data set's
studio shots were not), crop to the object's bounding box, pad to a square, resize to 28x28 with antialiasing, and
stretch the levels so the background is 0 like in the data set. Arrays in and out are (H, W) uint8, light object
on black.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from fmnist.utils.errors import DataError

SIZE = 28
MODES = ("auto", "photo", "none")  # cfg.preprocess
BACKGROUND_TOLERANCE = 0.05  # a pixel within 5 % of the intensity range of the background is background (Xiao et al.)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Any PIL image -> (H, W) uint8 luma. EXIF rotation is applied; transparency is composited onto white (the
    background of a product photo); 16-bit and float images are scaled to 8 bits."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        return np.clip(np.rint(array * 255.0 / top), 0, 255).astype(np.uint8)
    if image.mode == "P" or "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8).copy()


def border_pixels(gray: np.ndarray) -> np.ndarray:
    """The outermost rows and columns."""
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def background_is_light(gray: np.ndarray) -> bool:
    """True when the median border pixel is in the upper half of the range (a product photo on white)."""
    return float(np.median(border_pixels(gray))) > 127.5


def background_plane(gray: np.ndarray) -> np.ndarray:
    """The background level at every pixel: the plane a + b x + c y fitted (least squares) to the border pixels.
    One level would do for a studio shot; a phone shot of a garment on a table has a light gradient, and with one
    level the brighter half of the table counts as object and ruins the crop."""
    h, w = gray.shape
    ys, xs = np.mgrid[0:h, 0:w]
    edge = np.zeros((h, w), dtype=bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
    design = np.stack([np.ones(edge.sum()), xs[edge], ys[edge]], axis=1).astype(np.float64)
    levels = gray[edge].astype(np.float64)
    coefficients, *_ = np.linalg.lstsq(design, levels, rcond=None)
    # once more without the border pixels the object touches (a sleeve cut by the frame), if most are left
    keep = np.abs(design @ coefficients - levels) <= BACKGROUND_TOLERANCE * 255
    if keep.mean() >= 0.5:
        coefficients, *_ = np.linalg.lstsq(design[keep], levels[keep], rcond=None)
    return coefficients[0] + coefficients[1] * xs + coefficients[2] * ys


def bounding_box(
    gray: np.ndarray, background: float, tolerance: float = BACKGROUND_TOLERANCE
) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right), end-exclusive, of the pixels farther than `tolerance` x 255 from `background`;
    None when there are none."""
    mask = np.abs(gray.astype(np.int16) - background) > tolerance * 255
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not len(rows):
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def pad_to_square(gray: np.ndarray, value: int) -> np.ndarray:
    """Extend the shorter side with `value` on both sides (the object stays centred)."""
    h, w = gray.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.full((side, side), value, dtype=gray.dtype)
    out[top : top + h, left : left + w] = gray
    return out


def resize(gray: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Square (S, S) uint8 -> (size, size), Lanczos: antialiased when shrinking (Pillow widens the filter)."""
    return np.asarray(Image.fromarray(gray).resize((size, size), Image.Resampling.LANCZOS), dtype=np.uint8).copy()


def stretch_levels(gray: np.ndarray, background: float) -> np.ndarray:
    """Map the background level to 0 and the brightest pixel to 255 (Fashion-MNIST backgrounds are 0)."""
    top = float(gray.max())
    if top <= background:
        return np.zeros_like(gray)
    scaled = (gray.astype(np.float64) - background) * 255.0 / (top - background)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def photo_to_fmnist(gray: np.ndarray, size: int = SIZE) -> np.ndarray:
    """A grayscale photo (H, W) uint8 -> a Fashion-MNIST-style (size, size) uint8 image: light object on black,
    cropped to its bounding box, centred, longest edge `size`. DataError when the image shows no object."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"expected a (H, W) uint8 array, got {gray.shape} {gray.dtype}")
    if background_is_light(gray):
        gray = 255 - gray
    # flat-field: object minus background, so the background is 0 everywhere and the object is what stands out
    flat = np.clip(gray - background_plane(gray), 0, 255)
    box = bounding_box(flat, 0.0)
    if box is None:
        raise DataError(
            f"shows no object: every pixel is within {BACKGROUND_TOLERANCE:.0%} of the background level "
            f"{float(np.median(border_pixels(gray))):.0f}."
        )
    top, bottom, left, right = box
    square = pad_to_square(np.rint(flat[top:bottom, left:right]).astype(np.uint8), 0)
    return stretch_levels(resize(square, size), 0.0)


def unchanged(gray: np.ndarray, size: int = SIZE) -> np.ndarray:
    """`preprocess=none`: a (size, size) image passes as it is; any other size is an error."""
    if gray.shape != (size, size):
        h, w = gray.shape
        raise DataError(f"is {w}x{h}; preprocess=none takes {size}x{size} images only (or use preprocess=photo).")
    return gray


def looks_like_fmnist(gray: np.ndarray, size: int = SIZE) -> bool:
    """Already in the data set's form: size x size, and a dark background (the median border pixel within
    BACKGROUND_TOLERANCE of black; Fashion-MNIST's borders are 0). The photo steps would crop and re-stretch it
    again and cost accuracy (docs/predict.md)."""
    return gray.shape == (size, size) and float(np.median(border_pixels(gray))) <= BACKGROUND_TOLERANCE * 255


def resolve_mode(gray: np.ndarray, mode: str) -> str:
    """`auto` -> `none` for an image that looks_like_fmnist, else `photo`; other modes unchanged."""
    if mode not in MODES:
        raise ValueError(f"unknown preprocess mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "auto":
        return "none" if looks_like_fmnist(gray) else "photo"
    return mode


def prepare(image: Image.Image, mode: str) -> tuple[np.ndarray, str]:
    """A PIL image -> the (28, 28) uint8 array the model sees, by `mode` (one of MODES), and the mode applied."""
    gray = to_grayscale(image)
    applied = resolve_mode(gray, mode)
    return (photo_to_fmnist(gray) if applied == "photo" else unchanged(gray)), applied
