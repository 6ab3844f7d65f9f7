"""Small JPEG previews of photos, for the nightly report and the review page."""

from __future__ import annotations

import io

from PIL import Image


def make_thumbnail(data: bytes, size: tuple[int, int]) -> bytes:
    """A JPEG no larger than size; raises PIL's errors for data that is not an image."""
    image = Image.open(io.BytesIO(data))
    image.draft("RGB", size)  # JPEG decodes straight to a reduced scale: far less work
    image = image.convert("RGB")
    image.thumbnail(size)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()
