"""The classifier network, built the same way by training and by the TorchServe handler."""

from __future__ import annotations

import torch
from torchvision import models

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")


def build_model(arch: str, num_classes: int) -> torch.nn.Module:
    """A torchvision ResNet with a fresh head; weights come from training, never a download."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    return getattr(models, arch)(weights=None, num_classes=num_classes)
