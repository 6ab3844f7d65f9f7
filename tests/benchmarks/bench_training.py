"""What a training step costs with each candidate change (`make bench-training`).

Times forward + backward + AdamW step of the training network on random batches at the model's input
size, and the forward pass alone in inference mode (what serving pays per image), for each variant:
the memory format, bf16 autocast on the CPU, `torch.compile` (inductor's C++ kernels: compiled once, the
first steps not timed), the ResNet stem without its max-pool (4x the feature map at every later stage, for
small inputs) and resnet34, the last two also with bf16 autocast, and the 3x3 stride-1 stem with bf16.
Rounds alternate the variants so that a drift of the machine hits all alike; prints images/s and the ratio
to today's recipe (resnet18, channels-last, fp32).

    python -m tests.benchmarks.bench_training [--batch-size 64] [--steps 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from handlers.network import build_model
from handlers.presets import PresetConfig
from training.train import autocast

BASELINE = "resnet18 channels-last fp32"


def unchanged(model: torch.nn.Module) -> torch.nn.Module:
    return model


# name -> (architecture, change to the network, memory format, bf16 autocast)
VARIANTS: dict[str, tuple[str, Callable[[torch.nn.Module], torch.nn.Module], torch.memory_format, bool]] = {
    "resnet18 contiguous fp32": ("resnet18", unchanged, torch.contiguous_format, False),
    BASELINE: ("resnet18", unchanged, torch.channels_last, False),
    "resnet18 channels-last bf16 autocast": ("resnet18", unchanged, torch.channels_last, True),
    "resnet18 channels-last torch.compile": ("resnet18", torch.compile, torch.channels_last, False),
    "resnet18 without max-pool": ("resnet18-no-maxpool", unchanged, torch.channels_last, False),
    "resnet18 without max-pool bf16": ("resnet18-no-maxpool", unchanged, torch.channels_last, True),
    "resnet18 3x3 stem bf16": ("resnet18-3x3-stem", unchanged, torch.channels_last, True),
    "resnet34 channels-last fp32": ("resnet34", unchanged, torch.channels_last, False),
    "resnet34 channels-last bf16": ("resnet34", unchanged, torch.channels_last, True),
}


def training_rate(model: torch.nn.Module, batch: torch.Tensor, steps: int, bf16: bool) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    targets = torch.zeros(batch.shape[0], dtype=torch.long)
    model.train()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(bf16):
            loss = criterion(model(batch), targets)
        loss.backward()
        optimizer.step()
    return steps * batch.shape[0] / (time.perf_counter() - started)


@torch.inference_mode()
def inference_rate(model: torch.nn.Module, batch: torch.Tensor, steps: int, bf16: bool) -> float:
    model.eval()
    for step in range(steps + 2):
        if step == 2:
            started = time.perf_counter()
        with autocast(bf16):
            model(batch)
    return steps * batch.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    preset = PresetConfig()
    batch = torch.randn(args.batch_size, 3, preset.height, preset.width)
    rates: dict[str, dict[str, list[float]]] = {name: {"train": [], "infer": []} for name in args.variants}
    for _ in range(args.rounds):
        for name in args.variants:
            arch, change, memory_format, bf16 = VARIANTS[name]
            torch.manual_seed(0)
            model = change(build_model(arch, args.classes)).to(memory_format=memory_format)
            inputs = batch.contiguous(memory_format=memory_format)
            rates[name]["train"].append(training_rate(model, inputs, args.steps, bf16))
            rates[name]["infer"].append(inference_rate(model, inputs, args.steps, bf16))
    print(f"{preset.width}x{preset.height}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    median = {name: {kind: statistics.median(rates[name][kind]) for kind in ("train", "infer")} for name in rates}
    base = median.get(BASELINE)
    for name, figures in median.items():
        relative = (
            f" ({figures['train'] / base['train']:.2f}x training, {base['infer'] / figures['infer']:.2f}x serving cost)"
            if base
            else ""
        )
        print(f"{name:38s} train {figures['train']:7.1f} img/s, infer {figures['infer']:7.1f} img/s{relative}")


if __name__ == "__main__":
    main()
