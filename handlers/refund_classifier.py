"""TorchServe handler: image bytes in, category probabilities out.

TorchServe loads this module from the .mar and requires it to define exactly one class,
so helpers are functions. Each request in a batch gets its own status: a bad image is
answered with a 4xx for that request alone and its neighbours are still classified.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from ts.torch_handler.base_handler import BaseHandler

from handlers.network import build_model
from handlers.presets import ClassificationPresetEval, InvalidImageError, PresetConfig

logger = logging.getLogger(__name__)

TOP_K = 3


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


def torch_threads(handler_config: dict, workers: int) -> int:
    """Threads per worker: explicit setting, else the usable CPUs shared among workers.

    TorchServe's default (every worker using every core) oversubscribes the CPU and was
    measured 3-5x slower than workers x threads = cores.
    """
    if handler_config.get("torch_threads"):
        return int(handler_config["torch_threads"])
    return max(1, usable_cpus() // max(1, workers))


def request_bytes(row: dict) -> bytes:
    """The raw image bytes of one request: the body, or the first file of a form upload."""
    for value in (row.get("data"), row.get("body"), *row.values()):
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
    raise InvalidImageError("request carries no image bytes")


class RefundClassifier(BaseHandler):
    def initialize(self, context) -> None:
        model_dir = Path(context.system_properties["model_dir"])
        yaml_config = getattr(context, "model_yaml_config", None) or {}
        threads = torch_threads(yaml_config.get("handler", {}), int(yaml_config.get("maxWorkers", 1)))
        torch.set_num_threads(threads)

        self.manifest = context.manifest
        meta = json.loads((model_dir / "model.json").read_text())
        index_to_name = json.loads((model_dir / "index_to_name.json").read_text())
        self.classes = [index_to_name[str(i)] for i in range(len(index_to_name))]
        self.temperature = float(meta.get("temperature", 1.0))
        self.preset = ClassificationPresetEval(PresetConfig.from_dict(meta["preset"]))

        weights = model_dir / self.manifest["model"]["serializedFile"]
        self.device = torch.device("cpu")
        self.model = build_model(meta["arch"], len(self.classes))
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval().to(memory_format=torch.channels_last)
        self.model_info = {
            "name": self.manifest["model"]["modelName"],
            "version": self.manifest["model"].get("modelVersion", ""),
        }
        self.initialized = True
        logger.info("loaded %s with %d classes, %d torch threads", self.model_info, len(self.classes), threads)

    def preprocess(self, data: list[dict]) -> tuple[torch.Tensor | None, list[InvalidImageError | None]]:
        """Decode every request; a bad one is remembered by index instead of raising."""
        tensors, errors = [], []
        for row in data:
            try:
                tensors.append(self.preset(request_bytes(row)))
                errors.append(None)
            except InvalidImageError as exc:
                errors.append(exc)
        batch = torch.stack(tensors).contiguous(memory_format=torch.channels_last) if tensors else None
        return batch, errors

    def postprocess(self, logits: torch.Tensor | None, errors: list[InvalidImageError | None]) -> list[dict]:
        probabilities = iter(torch.softmax(logits / self.temperature, dim=1).tolist() if logits is not None else [])
        responses = []
        for index, error in enumerate(errors):
            if error is not None:
                self.context.set_response_status(error.status, str(error), index)
                responses.append({"error": str(error), "code": error.status})
                continue
            ranked = sorted(zip(self.classes, next(probabilities), strict=True), key=lambda pair: pair[1], reverse=True)
            responses.append(
                {
                    "category": ranked[0][0],
                    "probability": ranked[0][1],
                    "top_k": [{"category": name, "probability": p} for name, p in ranked[:TOP_K]],
                    "probabilities": dict(ranked),
                    "model": self.model_info,
                }
            )
        return responses

    def handle(self, data: list[dict], context) -> list[dict]:
        self.context = context
        batch, errors = self.preprocess(data)
        logits = self.inference(batch) if batch is not None else None
        return self.postprocess(logits, errors)
