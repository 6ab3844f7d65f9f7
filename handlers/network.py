"""The classifier network: built the same way by training, and loaded from a model folder by the
TorchServe handler, evaluation, the tests and the benchmarks."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torchvision import models

from common.classes import load_classes

# Stems for small inputs: at 60x80 the standard stem (7x7 stride-2 conv, then a max-pool) leaves a 3x2 map
# (height x width) at the last stage.
# "-no-maxpool": without its max-pool, 5x4 (4x the compute at every stage, the same state-dict keys and shapes).
NO_MAXPOOL = "-no-maxpool"
# "-3x3-stem": a 3x3 stride-1 conv at full resolution before the max-pool instead of the 7x7 stride-2 conv, so the
# first features see every pixel; the later stages work on no-maxpool's maps (conv1's weight is 3x3, not 7x7).
SMALL_STEM = "-3x3-stem"
ARCHITECTURES = ("resnet18", "resnet34", "resnet50", "resnet18" + NO_MAXPOOL, "resnet18" + SMALL_STEM)


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision ResNet with a fresh head; weights come from training, never a download."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    model = getattr(models, arch.split("-", 1)[0])(weights=None, num_classes=num_classes)
    if arch.endswith(NO_MAXPOOL):
        model.maxpool = torch.nn.Identity()
    if arch.endswith(SMALL_STEM):
        model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
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
