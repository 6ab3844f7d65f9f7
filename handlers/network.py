"""The classifier network: built the same way by training, and loaded from a model folder by the
TorchServe handler, evaluation, the tests and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torchvision import models

from common.classes import load_classes

# "-no-maxpool": the stem without its max-pool, for small inputs: at 60x80 the standard stem leaves a 3x2 map
# (height x width) at the last stage, this one 5x4 (4x the compute at every stage, the same state-dict keys).
NO_MAXPOOL = "-no-maxpool"
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet18" + NO_MAXPOOL)


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision ResNet with a fresh head; weights come from training, never a download."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    model = getattr(models, arch.removesuffix(NO_MAXPOOL))(weights=None, num_classes=num_classes)
    if arch.endswith(NO_MAXPOOL):
        model.maxpool = torch.nn.Identity()
    return model


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """A saved state dict, as plain tensors only (weights_only: a weights file runs no code)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(model_dir: Path, weights: str = "model.pt") -> torch.nn.Module:
    """The trained network in a model folder (training's output, or the unpacked .mar), ready to infer:
    model.json names the architecture, index_to_name.json the classes, `weights` holds the state dict.
    Channels-last is what the handler and evaluation feed it, and measurably faster on CPU."""
    arch = json.loads((model_dir / "model.json").read_text())["arch"]
    model = build_model(arch, len(load_classes(model_dir / "index_to_name.json")))
    model.load_state_dict(read_weights(model_dir / weights))
    return model.eval().to(memory_format=torch.channels_last)
