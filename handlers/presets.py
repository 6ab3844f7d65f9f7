"""Image preprocessing, defined once for evaluation and serving; training builds on it.

The TorchServe handler and the training evaluation both call `ClassificationPresetEval`,
so the served model sees exactly what it was measured on (no train/serve skew). The
module is bundled into the .mar next to the handler; training's augmentation, which
serving never runs, is in `training/presets.py`.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

# Catalogue photos are shot on white: padding with white keeps big photos looking like them.
BACKGROUND = (255, 255, 255)
# Far above any camera photo (a 1600 px photo has 2 Mpx); stops decompression bombs.
MAX_PIXELS = 40_000_000
# 16-bit and 32-bit grey (PNG/TIFF scans) and float images: converted to 8-bit by _to_eight_bit.
HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
BLOCK_PIXELS = 1 << 20  # rows converted at a time: a few MB of temporaries whatever the image size


class InvalidImageError(ValueError):
    """The bytes are not a usable image. `status` is the HTTP code to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PresetConfig:
    """What the model expects as input; saved with the weights and shipped in the .mar."""

    height: int = 80
    width: int = 60
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PresetConfig:
        return cls(
            height=int(values["height"]),
            width=int(values["width"]),
            mean=tuple(values["mean"]),
            std=tuple(values["std"]),
        )

    @classmethod
    def load(cls, path: Path | str) -> PresetConfig:
        return cls.from_dict(json.loads(Path(path).read_text())["preset"])


def decode_image(data: bytes, min_size: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes to an upright RGB image, or raise InvalidImageError.

    `min_size` (width, height) lets the JPEG decoder downscale in the DCT domain
    (`draft`) while keeping at least twice the pixels per side that `fit_to_input`
    keeps, so a 1600 px photo decodes at 1/8 scale and the resized result is unchanged.
    """
    if not data:
        raise InvalidImageError("empty request body: no image bytes")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise InvalidImageError(
                f"image has {width}x{height} pixels, more than the {MAX_PIXELS} allowed",
                status=413,
            )
        if min_size is not None and image.format == "JPEG":
            image.draft("RGB", draft_size(image.size, min_size))
        image = ImageOps.exif_transpose(image)
        image.load()
        return _to_rgb(image)
    except InvalidImageError:
        raise
    except UnidentifiedImageError as exc:
        raise InvalidImageError("not an image: the bytes match no known image format", status=415) from exc
    except Exception as exc:  # PIL raises many types for bad bytes; all mean "not an image"
        raise InvalidImageError(f"cannot decode image: {exc}", status=415) from exc


def draft_size(size: tuple[int, int], fitted: tuple[int, int]) -> tuple[int, int]:
    """The smallest decoded size that holds twice the pixels per side `fit_to_input` keeps of an
    image of `size` fitted into `fitted` (both width, height), whichever way EXIF turns it upright."""
    width, height = size
    upright = min(fitted[0] / width, fitted[1] / height)
    turned = min(fitted[0] / height, fitted[1] / width)
    scale = min(1.0, 2 * max(upright, turned))
    return math.ceil(scale * width), math.ceil(scale * height)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB; transparency becomes the white background."""
    if image.mode in HIGH_DEPTH_MODES:
        image = _to_eight_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        canvas = Image.new("RGB", image.size, BACKGROUND)
        canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return canvas
    return image.convert("RGB") if image.mode != "RGB" else image


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """A grey image of any depth onto 0-255: a 16-bit range (any value above 255) is divided by
    257 (= 65535 / 255), anything else is taken as 8-bit; out-of-range values clip.

    Reads the image in strips of rows, in its own type: a 40 Mpx 16-bit image needs its 8-bit
    result and a few MB, not the gigabyte of float64 temporaries a whole-image formula takes."""
    width, height = image.size
    rows = max(1, BLOCK_PIXELS // max(1, width))
    strips = [(0, top, width, min(height, top + rows)) for top in range(0, height, rows)]
    # getextrema would do, but refuses I;16B
    high = max((np.asarray(image.crop(strip)).max(initial=0) for strip in strips), default=0)
    divisor = 257 if high > 255 else 1
    eight_bit = np.empty((height, width), dtype=np.uint8)
    for strip in strips:
        eight_bit[strip[1] : strip[3]] = np.clip(np.asarray(image.crop(strip)), 0, 255 * divisor) // divisor
    return Image.fromarray(eight_bit)


def fit_to_input(image: Image.Image, config: PresetConfig) -> Image.Image:
    """Pad to the model's aspect ratio with background and resize with antialiasing."""
    return ImageOps.pad(image, (config.width, config.height), method=Image.Resampling.BILINEAR, color=BACKGROUND)


def to_tensor(image: Image.Image, config: PresetConfig) -> torch.Tensor:
    """RGB PIL image -> normalised float CHW tensor."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    mean = torch.tensor(config.mean).view(3, 1, 1)
    std = torch.tensor(config.std).view(3, 1, 1)
    return (pixels.float() / 255.0 - mean) / std


class ClassificationPresetEval:
    """Bytes -> model input. Used by evaluation and by the TorchServe handler."""

    def __init__(self, config: PresetConfig) -> None:
        self.config = config

    def __call__(self, data: bytes) -> torch.Tensor:
        image = decode_image(data, min_size=(self.config.width, self.config.height))
        return to_tensor(fit_to_input(image, self.config), self.config)
