"""What runs the network: the exported ONNX model with the engine model.json names (OpenVINO, or ONNX
Runtime for models archived before 6 Dec 2026), else PyTorch.

A runner takes the preprocessed batch (float NCHW) and returns the logits, whichever runtime is
behind it, so the handler, the tests and the benchmark call every runtime the same way. The
temperature belongs to the runtime: quantisation moves the logits, so an int8 model ships its own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from handlers.network import load_model

logger = logging.getLogger(__name__)


class Runner(Protocol):
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class TorchRunner:
    """The PyTorch model, fp32, channels-last (what training evaluated)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.contiguous(memory_format=torch.channels_last))


class OnnxRunner:
    """An ONNX model in ONNX Runtime's CPU provider, on `threads` intra-op threads."""

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime  # the serve image carries it; without it load_runner falls back to PyTorch

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one batch at a time per worker: no parallel branches to run
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(None, {self.input: images.contiguous().numpy()})
        return torch.from_numpy(logits)


class OpenVinoRunner:
    """An ONNX model compiled by OpenVINO for the CPU, on `threads` threads. It runs the QDQ int8 model with
    its own integer kernels: 1.35x ONNX Runtime's speed on AVX2 without VNNI (docs/performance.md)."""

    def __init__(self, path: Path, threads: int, precision: str | None = None) -> None:
        import openvino  # the serve image carries it; without it load_runner falls back to PyTorch

        # No pinning: OpenVINO pins its threads to cores by default, and every TorchServe worker, a process
        # of its own, would pin to the same first core (measured: served 236 img/s pinned, 328 unpinned).
        settings = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if precision:  # what the layers left in float run in: OpenVINO's own choice is bf16 on CPUs with AMX
            settings["INFERENCE_PRECISION_HINT"] = precision
        compiled = openvino.Core().compile_model(str(path), "CPU", settings)
        self.request = compiled.create_infer_request()  # one per worker: a worker runs one batch at a time

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        # The request reuses its output buffer on the next call: the logits are copied out.
        return torch.from_numpy(self.request.infer({0: images.contiguous().numpy()})[0].copy())


ENGINES: dict[str, type[OnnxRunner | OpenVinoRunner]] = {"onnxruntime": OnnxRunner, "openvino": OpenVinoRunner}


@dataclass(frozen=True)
class Loaded:
    runner: Runner
    temperature: float
    description: str  # "openvino int8" or "pytorch fp32", for the log and the benchmark


def load_runner(model_dir: Path, threads: int, weights: str = "model.pt") -> Loaded:
    """The runtime model.json's "runtime" entry names, or PyTorch when it names none, its file is
    absent or its engine is not installed (one log line says which and why)."""
    meta = json.loads((model_dir / "model.json").read_text())
    if runtime := meta.get("runtime"):
        wanted = f"{runtime['engine']} {runtime['precision']}"
        path = model_dir / runtime["file"]
        try:
            if path.is_file():
                return Loaded(ENGINES[runtime["engine"]](path, threads), float(runtime["temperature"]), wanted)
            reason = f"{runtime['file']} is not in the model folder"
        except ImportError as exc:
            reason = f"{runtime['engine']} cannot be imported ({exc})"
        logger.warning("running PyTorch fp32 instead of %s: %s", wanted, reason)
    return Loaded(TorchRunner(load_model(model_dir, weights)), float(meta.get("temperature", 1.0)), "pytorch fp32")
