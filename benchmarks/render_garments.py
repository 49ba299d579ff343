"""Photo-like garment pictures for trying `predict.py` on images that are not Fashion-MNIST tensors.

Draws dark garments (shirt, trousers, dress, pullover, sneaker, ankle boot, bag, sandal) off-centre on large,
light, slightly uneven backgrounds with a soft shadow, as a phone shot of a garment on a table might look. They are
drawn with Pillow, not taken from the data set, so the model has never seen them:

    python benchmarks/render_garments.py --out docs/demo_photos
    python predict.py images=docs/demo_photos save_inputs=true out=docs/demo_photos/predictions.csv
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

# outlines on a 100x100 grid (x, y), scaled and placed per picture; each is what the class looks like flat on a table
SHAPES: dict[str, list[list[tuple[float, float]]]] = {
    "tshirt": [[(30, 10), (42, 14), (58, 14), (70, 10), (95, 30), (85, 42), (74, 36), (74, 95), (26, 95), (26, 36),
                (15, 42), (5, 30)]],
    "trouser": [[(28, 5), (72, 5), (76, 95), (56, 95), (50, 35), (44, 95), (24, 95)]],
    "dress": [[(38, 5), (44, 5), (47, 12), (53, 12), (56, 5), (62, 5), (62, 30), (82, 95), (18, 95), (38, 30)]],
    "pullover": [[(32, 8), (42, 12), (58, 12), (68, 8), (88, 22), (98, 88), (86, 90), (74, 40), (74, 95), (26, 95),
                  (26, 40), (14, 90), (2, 88), (12, 22)]],
    "sneaker": [[(5, 55), (20, 45), (40, 42), (55, 30), (70, 30), (75, 40), (95, 58), (96, 70), (5, 70)]],
    "ankle_boot": [[(20, 10), (55, 10), (58, 50), (90, 65), (94, 85), (15, 85), (18, 50)]],
    "bag": [[(10, 35), (90, 35), (95, 92), (5, 92)],
            [(30, 35), (32, 15), (50, 8), (68, 15), (70, 35), (62, 35), (60, 20), (50, 15), (40, 20), (38, 35)]],
    "sandal": [[(5, 60), (95, 58), (96, 70), (5, 72)], [(25, 60), (35, 35), (45, 60)], [(60, 59), (70, 38), (80, 59)]],
}  # fmt: skip
COLOURS = [(25, 35, 80), (110, 20, 30), (20, 20, 20), (30, 70, 40), (90, 55, 30), (60, 60, 70)]


def render(name: str, rng: random.Random, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """One picture: an uneven light background, the garment at a random place and scale, a blurred shadow."""
    w, h = size
    top, bottom = rng.randint(215, 245), rng.randint(190, 225)  # light from above: a vertical gradient
    background = Image.linear_gradient("L").resize(size).point(lambda v: top + (bottom - top) * v // 255)
    picture = Image.merge("RGB", [background] * 3)
    scale = rng.uniform(0.45, 0.7) * min(w, h) / 100
    x0, y0 = rng.uniform(0, w - 100 * scale), rng.uniform(0, h - 100 * scale)  # anywhere, not centred
    polygons = [[(x0 + x * scale, y0 + y * scale) for x, y in part] for part in SHAPES[name]]
    shadow = Image.new("L", size, 0)
    for polygon in polygons:
        ImageDraw.Draw(shadow).polygon([(x + 6, y + 8) for x, y in polygon], fill=70)
    shadow = shadow.filter(ImageFilter.GaussianBlur(8))
    picture = Image.composite(Image.new("RGB", size, (120, 120, 120)), picture, shadow)
    colour = rng.choice(COLOURS)
    draw = ImageDraw.Draw(picture)
    for polygon in polygons:
        draw.polygon(polygon, fill=colour)
    return picture.filter(ImageFilter.GaussianBlur(1))  # a camera's softness: no pixel-sharp edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/demo_photos"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for name in SHAPES:
        path = args.out / f"{name}.jpg"
        render(name, rng).save(path, quality=85)
        print(path)


if __name__ == "__main__":
    main()
