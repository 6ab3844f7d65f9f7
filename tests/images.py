"""Small generated product photos, so tests need no real data."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

# Three visually distinct "product categories" a tiny model can tell apart.
SHAPES = {"Discs": "ellipse", "Boxes": "rectangle", "Wedges": "polygon"}


def product_image(category: str, seed: int, size: tuple[int, int] = (60, 80)) -> Image.Image:
    """A coloured shape on white, like a catalogue photo, with some random jitter."""
    rng = random.Random(f"{category}:{seed}")
    width, height = size
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    margin = rng.uniform(0.1, 0.2)
    box = [width * margin, height * margin, width * (1 - margin), height * (1 - margin)]
    colour = tuple(rng.randint(0, 200) for _ in range(3))
    shape = SHAPES[category]
    if shape == "ellipse":
        draw.ellipse(box, fill=colour)
    elif shape == "rectangle":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) / 2, box[1])], fill=colour)
    return image


def encode(image: Image.Image, fmt: str = "JPEG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
