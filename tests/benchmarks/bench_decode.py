"""What turning a returned-item photo into the model's input costs, per way of decoding (`make bench-decode`).

For every JPEG in the sample: bytes -> upright RGB -> padded and resized to the model's input, on one
thread (a TorchServe worker's share). Variants: Pillow's full decode; Pillow's `draft` (libjpeg-turbo's DCT
scaling) as it was (a square of twice the input's longer side: 1/4 scale for most photos) and at the scale
the handler uses now (`handlers.presets.decode_image`); simplejpeg (libjpeg-turbo directly, into numpy) at
that scale, with exact and with fast DCT/upsampling. The resize alone is timed too: it is what Pillow-SIMD
would speed up. Rounds alternate the variants so a drift of the machine hits all alike. Prints ms per photo
(median of the rounds) and how far each result is from the full decode's (mean and max absolute difference
of the model's 0-255 input pixels).

    python -m tests.benchmarks.bench_decode [--sample DIR] [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from handlers.presets import PresetConfig, decode_image, draft_size, fit_to_input

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = "pillow draft (shipped)"


def pillow_full(data: bytes, config: PresetConfig) -> Image.Image:
    return fit_to_input(decode_image(data), config)


def pillow_square(data: bytes, config: PresetConfig) -> Image.Image:
    """The handler's draft before 6 Dec 2026: at least a square of twice the input's longer side (1/4 here)."""
    image = Image.open(io.BytesIO(data))
    side = 2 * max(config.width, config.height)
    image.draft("RGB", (side, side))
    return fit_to_input(ImageOps.exif_transpose(image).convert("RGB"), config)


def pillow_shipped(data: bytes, config: PresetConfig) -> Image.Image:
    return fit_to_input(decode_image(data, min_size=(config.width, config.height)), config)


def simplejpeg_at(fast: bool) -> Callable[[bytes, PresetConfig], Image.Image]:
    def decode(data: bytes, config: PresetConfig) -> Image.Image:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        least = draft_size((width, height), (config.width, config.height))
        pixels = simplejpeg.decode_jpeg(data, fastdct=fast, fastupsample=fast, min_width=least[0], min_height=least[1])
        return fit_to_input(Image.fromarray(pixels), config)  # the sample has no EXIF rotation

    return decode


VARIANTS: dict[str, Callable[[bytes, PresetConfig], Image.Image]] = {
    "pillow full decode": pillow_full,
    "pillow draft, square (before)": pillow_square,
    SHIPPED: pillow_shipped,
    "simplejpeg, same scale": simplejpeg_at(fast=False),
    "simplejpeg, fast dct+upsample": simplejpeg_at(fast=True),
}


def timed(photos: list[bytes], work: Callable[[bytes], object]) -> float:
    """Milliseconds per photo for one pass."""
    started = time.perf_counter()
    for data in photos:
        work(data)
    return 1000 * (time.perf_counter() - started) / len(photos)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=ROOT.parent / "shared" / "datasets" / "returns-photos-sample")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    config = PresetConfig()
    files = sorted(path for path in (args.sample / "images").iterdir() if path.suffix.lower() in (".jpg", ".jpeg"))
    photos = [path.read_bytes() for path in files]
    sizes = sorted({Image.open(io.BytesIO(data)).size for data in photos}, reverse=True)
    print(f"{len(photos)} JPEG photos from {args.sample}, sizes {sizes}; model input {config.width}x{config.height}")

    reference = [np.asarray(pillow_full(data, config), dtype=np.int16) for data in photos]
    drafted = [decode_image(data, min_size=(config.width, config.height)) for data in photos]
    times: dict[str, list[float]] = {name: [] for name in [*VARIANTS, "resize alone (shipped)"]}
    for _ in range(args.rounds):
        for name, variant in VARIANTS.items():
            times[name].append(timed(photos, lambda data, variant=variant: variant(data, config)))
        started = time.perf_counter()
        for image in drafted:
            fit_to_input(image, config)
        times["resize alone (shipped)"].append(1000 * (time.perf_counter() - started) / len(drafted))

    shipped = statistics.median(times[SHIPPED])
    print(f"\n{'variant':32} {'ms/photo':>9} {'vs shipped':>10} {'mean |diff|':>11} {'max |diff|':>10}")
    for name, runs in times.items():
        ms = statistics.median(runs)
        difference = ""
        if name in VARIANTS:
            diffs = [
                np.abs(np.asarray(VARIANTS[name](data, config), dtype=np.int16) - ref)
                for data, ref in zip(photos, reference, strict=True)
            ]
            difference = f"{np.mean([d.mean() for d in diffs]):11.2f} {max(int(d.max()) for d in diffs):10d}"
        print(f"{name:32} {ms:9.2f} {shipped / ms:9.2f}x {difference}")


if __name__ == "__main__":
    main()
