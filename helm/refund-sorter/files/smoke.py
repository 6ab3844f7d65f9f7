"""`helm test`: one photo through the release's own inference endpoint, as the release notes' `curl` sends it.

Exits 0 only on a prediction: TorchServe's /ping answers 200 while its workers are still loading the model, so a
ping proves the frontend runs, not that the model answers. In kserve mode the predictor's model readiness
(`GET /v1/models/<name>`), which KServe reports only once the model is loaded. The chart embeds this file in the
test pod; it runs on the batch image (httpx and Pillow).
"""

import io
import sys

import httpx
from PIL import Image


def a_photo() -> bytes:
    photo = io.BytesIO()
    Image.new("RGB", (60, 80), (150, 120, 90)).save(photo, "JPEG")
    return photo.getvalue()


def main(url: str, mode: str) -> int:
    if mode == "predict":
        answer = httpx.post(url, content=a_photo(), headers={"Content-Type": "image/jpeg"}, timeout=30)
    else:
        answer = httpx.get(url, timeout=10)
    print(url, answer.status_code, answer.text.strip()[:300])
    if answer.status_code != 200:
        return 1
    return 0 if mode != "predict" or "category" in answer.json() else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
