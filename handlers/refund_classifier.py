"""TorchServe handler: image bytes in, category probabilities out.

TorchServe loads this module from the .mar and requires it to define exactly one class,
so helpers are functions. Each request in a batch gets its own status: a bad image is
answered with a 4xx for that request alone and its neighbours are still classified.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import torch
from ts.metrics.dimension import Dimension
from ts.torch_handler.base_handler import BaseHandler

from common.classes import load_classes
from handlers.presets import ClassificationPresetEval, InvalidImageError, PresetConfig
from handlers.runtime import load_runner

logger = logging.getLogger(__name__)

TOP_K = 3
# Per request: where each of its images went (a row of the batch, or why it was refused),
# and whether the request sent a list of images; None for a describe request.
Slots = tuple[list[int | InvalidImageError], bool] | None


def usable_cpus() -> int:
    """CPUs this process may use, honouring a cgroup quota (a Kubernetes CPU limit)."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


def torch_threads(handler_config: dict) -> int:
    """Threads per worker: explicit setting, else the usable CPUs shared among the workers.

    Torch's default (every worker using every core) oversubscribes the CPU and was measured
    3-5x slower than workers x threads = cores. The worker count is the frontend's: the
    TS_DEFAULT_WORKERS_PER_MODEL variable (config.properties enables TorchServe's env config)
    where set, else TorchServe's default of one worker per usable CPU.
    """
    if handler_config.get("torch_threads"):
        return int(handler_config["torch_threads"])
    cpus = usable_cpus()
    workers = int(os.environ.get("TS_DEFAULT_WORKERS_PER_MODEL") or cpus)
    return max(1, cpus // max(1, workers))


def decode_base64(text: object) -> bytes:
    if not isinstance(text, str):
        raise InvalidImageError("expected a base64 string for the image")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidImageError(f"invalid base64 image data: {exc}") from exc


def instance_bytes(instance: object) -> bytes | InvalidImageError:
    """One KServe v1 instance: {"data": b64}, {"b64": b64}, {"data": {"b64": b64}} or a bare b64 string."""
    try:
        if isinstance(instance, dict):
            value = next((instance[key] for key in ("data", "b64", "image") if key in instance), None)
            if isinstance(value, dict):
                value = value.get("b64")
            return decode_base64(value)
        return decode_base64(instance)
    except InvalidImageError as exc:
        return exc


def request_images(row: dict) -> tuple[list[bytes | InvalidImageError], bool]:
    """The images one request carries, and whether it sent a list (KServe v1 `instances`).

    Accepts raw image bytes, a multipart upload (any field), {"image": b64} and
    {"instances": [{"data": b64}, ...]}. TorchServe has already parsed JSON bodies sent
    as application/json; JSON sent as bytes is parsed here.
    """
    body = row.get("data") if row.get("data") is not None else row.get("body")
    if body is None:
        body = next((value for value in row.values() if isinstance(value, (bytes, bytearray))), None)
    if isinstance(body, (bytes, bytearray)) and body[:1] == b"{":
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    if isinstance(body, (bytes, bytearray)):
        return [bytes(body)], False
    if isinstance(body, dict) and "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise InvalidImageError('"instances" must be a non-empty list of {"data": "<base64>"}')
        return [instance_bytes(instance) for instance in instances], True
    if isinstance(body, dict) and any(key in body for key in ("image", "data", "b64")):
        return [instance_bytes(body)], False
    if isinstance(body, str):
        return [instance_bytes(body)], False
    raise InvalidImageError(
        'no image in the request: send image bytes, a form upload, {"image": "<base64>"} '
        'or {"instances": [{"data": "<base64>"}]}'
    )


def asks_description(headers: dict[str, str]) -> bool:
    """The `describe: True` header, whatever the case of its name: HTTP header names are case-insensitive, the
    frontend passes them on as sent, and the kubelet's probe sends `Describe`."""
    return any(name.lower() == "describe" and value == "True" for name, value in headers.items())


def error_body(error: InvalidImageError) -> dict:
    return {"error": str(error), "code": error.status}


class RefundClassifier(BaseHandler):
    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        threads = torch_threads(yaml_config.get("handler", {}))
        torch.set_num_threads(threads)

        self.manifest = context.manifest
        meta = json.loads((model_dir / "model.json").read_text())
        self.classes = load_classes(model_dir / "index_to_name.json")
        self.review_threshold = meta.get("review_threshold")
        self.sorting = meta.get("sorting")
        self.class_prior = meta.get("class_prior", {})
        self.preset = ClassificationPresetEval(PresetConfig.from_dict(meta["preset"]))

        self.device = torch.device("cpu")
        loaded = load_runner(model_dir, threads, self.manifest["model"]["serializedFile"])
        # BaseHandler.inference calls self.model(batch): a runner is called the same way, whatever runs it.
        self.model, self.temperature, self.runtime = loaded.runner, loaded.temperature, loaded.description
        self.model_info = {
            "name": self.manifest["model"]["modelName"],
            "version": self.manifest["model"].get("modelVersion", ""),
        }
        self.initialized = True
        logger.info(
            "loaded %s with %d classes on %s, %d threads", self.model_info, len(self.classes), self.runtime, threads
        )

    def preprocess(self, data: list[dict]) -> tuple[torch.Tensor | None, list[Slots]]:
        """Decode every image; a bad one is remembered in its slot instead of raising."""
        started = time.perf_counter()
        tensors, requests = [], []
        for index, row in enumerate(data):
            # TorchServe's own describe check reads only the batch's first request; batched
            # requests must each be answered for what they asked.
            if asks_description(self.context.get_all_request_header(index)):
                requests.append(None)
                continue
            try:
                images, many = request_images(row)
            except InvalidImageError as exc:
                requests.append(([exc], False))
                continue
            slots: list[int | InvalidImageError] = []
            for image in images:
                try:
                    if isinstance(image, InvalidImageError):
                        raise image
                    tensors.append(self.preset(image))
                    slots.append(len(tensors) - 1)
                except InvalidImageError as exc:
                    slots.append(exc)
            requests.append((slots, many))
        self.context.metrics.add_time(
            "PreprocessTimePerImage", 1000 * (time.perf_counter() - started) / max(1, len(tensors))
        )
        batch = torch.stack(tensors) if tensors else None  # the runner lays it out as its runtime wants
        return batch, requests

    def answer(self, probabilities: list[float]) -> dict:
        ranked = sorted(zip(self.classes, probabilities, strict=True), key=lambda pair: pair[1], reverse=True)
        return {
            "category": ranked[0][0],
            "probability": ranked[0][1],
            "top_k": [{"category": name, "probability": p} for name, p in ranked[:TOP_K]],
            "probabilities": dict(ranked),
            "model": self.model_info,
        }

    def postprocess(self, logits: torch.Tensor | None, requests: list[Slots]) -> list[dict]:
        """One response per request: a prediction, {"predictions": [...]} for a list, or an error."""
        rows = torch.softmax(logits / self.temperature, dim=1).tolist() if logits is not None else []
        self.count_predictions(logits)
        responses = []
        for index, request in enumerate(requests):
            if request is None:
                responses.append(self.describe_handle())
                continue
            slots, many = request
            answers = [
                error_body(slot) if isinstance(slot, InvalidImageError) else self.answer(rows[slot]) for slot in slots
            ]
            if many:
                responses.append({"predictions": answers})
                continue
            if isinstance(slots[0], InvalidImageError):
                self.context.set_response_status(slots[0].status, str(slots[0]), index)
            responses.append(answers[0])
        return responses

    def count_predictions(self, logits: torch.Tensor | None) -> None:
        """PredictionsPerCategory, one metric line per category in the batch, not per image: the frontend parses
        every line the worker prints."""
        if logits is None:
            return
        for index, count in Counter(logits.argmax(dim=1).tolist()).items():
            self.context.metrics.add_counter(
                "PredictionsPerCategory", count, dimensions=[Dimension("Category", self.classes[index])]
            )

    def describe_handle(self) -> dict:
        """What clients need to know about the served model (TorchServe's `describe: True` header)."""
        return {
            "model": self.model_info,
            "classes": self.classes,
            "review_threshold": self.review_threshold,
            "sorting": self.sorting,
            "class_prior": self.class_prior,
        }

    def handle(self, data: list[dict], context) -> list[bytes]:
        """Answers as compact JSON bytes: TorchServe would encode a dict with json.dumps(indent=2), twice the time.
        orjson would save ~45 us more an answer, under 1 % of an image's cost: not worth a dependency."""
        self.context = context
        batch, requests = self.preprocess(data)
        logits = self.inference(batch) if batch is not None else None
        responses = self.postprocess(logits, requests)
        for index in range(len(responses)):
            context.set_response_content_type(index, "application/json")
        return [json.dumps(response, separators=(",", ":")).encode() for response in responses]
