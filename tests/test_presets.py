"""The shared preprocessing: every kind of image becomes an upright RGB model input."""

from __future__ import annotations

import contextlib
import tracemalloc

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handlers.presets import (
    MAX_PIXELS,
    ClassificationPresetEval,
    InvalidImageError,
    PresetConfig,
    decode_image,
    fit_to_input,
    to_tensor,
)
from tests.images import encode, product_image
from training.presets import ClassificationPresetTrain, RandomBackdrop

CONFIG = PresetConfig()


def test_eval_preset_gives_normalised_chw_tensor():
    tensor = ClassificationPresetEval(CONFIG)(encode(product_image("Discs", 1)))
    assert tensor.shape == (3, CONFIG.height, CONFIG.width)
    assert tensor.dtype == torch.float32
    white = (1.0 - torch.tensor(CONFIG.mean)) / torch.tensor(CONFIG.std)
    assert torch.allclose(tensor[:, 0, 0], white, atol=0.05)  # the corner is background


def test_train_preset_matches_eval_shape_and_varies():
    data = encode(product_image("Boxes", 2))
    preset = ClassificationPresetTrain(CONFIG)
    torch.manual_seed(0)
    first, second = preset(data), preset(data)
    assert first.shape == (3, CONFIG.height, CONFIG.width)
    assert not torch.equal(first, second)


def test_random_backdrop_shades_the_white_background_and_keeps_the_product():
    image = Image.new("RGB", (60, 80), "white")
    image.paste((200, 30, 30), (20, 30, 40, 50))
    torch.manual_seed(0)
    pixels = np.asarray(RandomBackdrop(p=1.0, levels=(150, 200))(image)).astype(int)
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners <= 200 + 8 + 12).all() and (corners >= 150 - 8 - 12).all()
    assert (pixels[30:50, 20:40] == (200, 30, 30)).all()  # the product is untouched
    assert RandomBackdrop(p=0.0)(image) is image


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"), ("RGB", "WEBP"), ("RGB", "BMP"), ("RGB", "TIFF")],
)
def test_any_mode_and_format_becomes_rgb(mode, fmt):
    image = decode_image(encode(product_image("Wedges", 3).convert(mode), fmt))
    assert image.mode == "RGB"
    assert image.size == (60, 80)


def test_transparent_pixels_become_white_background():
    image = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    assert decode_image(encode(image, "PNG")).getpixel((5, 5)) == (255, 255, 255)


def test_sixteen_bit_png_keeps_its_contrast():
    ramp = (np.linspace(0, 65535, 60 * 80).reshape(80, 60)).astype(np.uint16)
    image = decode_image(encode(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(image)
    assert pixels.min() == 0 and pixels.max() == 255


def old_eight_bit(pixels: np.ndarray) -> np.ndarray:
    """The float64 formula high-depth images were converted by before: 0-65535 (or 0-255) onto 0-255."""
    pixels = pixels.astype(np.float64)
    peak = 65535.0 if pixels.max(initial=0) > 255 else 255.0
    return np.clip(pixels / peak * 255.0, 0, 255).astype(np.uint8)


EVERY_16_BIT_VALUE = np.resize(np.arange(65536, dtype=np.uint16), (240, 300))


@pytest.mark.parametrize(
    "pixels",
    [
        EVERY_16_BIT_VALUE,
        EVERY_16_BIT_VALUE.astype(">u2"),  # I;16B
        EVERY_16_BIT_VALUE.astype(np.int32) * 3 - 20_000,  # I: out of range both ways
        (EVERY_16_BIT_VALUE % 256).astype(np.int32),  # I holding 8-bit values
        EVERY_16_BIT_VALUE.astype(np.float32) / 300,  # F in 0-218.45: taken as 8-bit
        EVERY_16_BIT_VALUE.astype(np.float32) * 1.5,  # F above 16 bits
    ],
    ids=["I;16", "I;16B", "I", "I-8-bit", "F", "F-wide"],
)
def test_high_depth_images_convert_as_the_float_formula_did(pixels):
    image = decode_image(encode(Image.fromarray(pixels), "TIFF"))
    converted = np.asarray(image).astype(int)
    assert (converted[..., 0] == converted[..., 1]).all() and (converted[..., 0] == converted[..., 2]).all()
    assert np.abs(converted[..., 0] - old_eight_bit(pixels)).max() <= 1


def test_sixteen_bit_image_near_the_pixel_limit_converts_without_big_temporaries():
    """A 16-bit scan of almost MAX_PIXELS went through float64: about 1 GB of temporaries for one request."""
    width = 6_000
    height = MAX_PIXELS // width - 10
    pixels = np.resize(np.arange(65536, dtype=np.uint16), (height, width))
    data = encode(Image.fromarray(pixels), "PNG", compress_level=1)
    tracemalloc.start()
    try:
        image = decode_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # The 8-bit result (1 byte a pixel) and a strip at a time; the float64 formula took 958 MB here.
    assert peak < 2 * width * height, f"{peak / 1e6:.0f} MB traced for a {width * height / 1e6:.0f} Mpx image"
    assert image.size == (width, height)
    grey = np.asarray(image.getchannel("R"))
    assert np.abs(grey.astype(int) - (pixels // 257)).max() <= 1  # 0-65535 onto 0-255


def test_exif_rotated_photo_is_turned_upright():
    exif = Image.Exif()
    exif[0x0112] = 6  # camera held sideways: rotate 90 degrees clockwise to view
    data = encode(product_image("Boxes", 4), "JPEG", exif=exif)
    assert decode_image(data).size == (80, 60)


def test_large_jpeg_draft_decoding_sees_the_same_picture():
    photo = product_image("Discs", 5, size=(1200, 1600))
    data = encode(photo, "JPEG", quality=95)
    fast = to_tensor(fit_to_input(decode_image(data, min_size=(60, 80)), CONFIG), CONFIG)
    full = to_tensor(fit_to_input(decode_image(data), CONFIG), CONFIG)
    assert (fast - full).abs().mean() < 0.02


@pytest.mark.parametrize(
    ("stored", "orientation", "decoded"),
    [
        ((1200, 1600), 1, (150, 200)),  # the returns desk's photos: 1/8 scale
        ((1080, 1440), 1, (135, 180)),
        ((1600, 1200), 6, (150, 200)),  # shot sideways: EXIF turns it upright after decoding
        ((360, 480), 1, (180, 240)),
        ((100, 120), 1, (100, 120)),  # small already: decoded whole
    ],
)
def test_draft_decodes_at_the_smallest_scale_that_keeps_twice_the_fitted_pixels(stored, orientation, decoded):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(product_image("Discs", 7, size=stored), "JPEG", exif=exif)
    image = decode_image(data, min_size=(CONFIG.width, CONFIG.height))
    assert image.size == decoded
    fitted = min(CONFIG.width / image.width, CONFIG.height / image.height)
    assert fitted <= 0.5 or image.size == stored[:: 1 if orientation == 1 else -1]


def test_wide_image_is_padded_not_squashed():
    wide = Image.new("RGB", (300, 100), (0, 0, 0))
    fitted = fit_to_input(wide, CONFIG)
    assert fitted.size == (CONFIG.width, CONFIG.height)
    assert fitted.getpixel((30, 0)) == (255, 255, 255)  # padding above
    assert fitted.getpixel((30, 40)) == (0, 0, 0)  # the picture in the middle


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"hello, I am text", 415, "not an image"),
        (encode(product_image("Discs", 6))[:300], 415, "cannot decode"),
    ],
)
def test_bad_bytes_raise_the_projects_error(data, status, words):
    with pytest.raises(InvalidImageError, match=words) as raised:
        decode_image(data)
    assert raised.value.status == status


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    bomb = encode(Image.new("1", (side, side)), "PNG")
    assert len(bomb) < 1_000_000
    with pytest.raises(InvalidImageError, match="more than") as raised:
        decode_image(bomb)
    assert raised.value.status == 413


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("RGB", (60, 80), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data).getpixel((30, 40))[0] > 200


VALID = [
    encode(product_image("Discs", 7), "JPEG"),
    encode(product_image("Boxes", 8), "PNG"),
    encode(product_image("Wedges", 9), "GIF"),
    encode(product_image("Discs", 10), "WEBP"),
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes_raise_only_the_projects_error(data):
    with contextlib.suppress(InvalidImageError):
        ClassificationPresetEval(CONFIG)(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
    st.integers(0, 10_000),
)
def test_fuzz_mutated_images_raise_only_the_projects_error(original, flips, cut):
    data = bytearray(original)
    for position, value in flips:
        data[position % len(data)] = value
    try:
        tensor = ClassificationPresetEval(CONFIG)(bytes(data[: max(1, len(data) - cut % len(data))]))
    except InvalidImageError:
        return
    assert tensor.shape == (3, CONFIG.height, CONFIG.width) and torch.isfinite(tensor).all()
