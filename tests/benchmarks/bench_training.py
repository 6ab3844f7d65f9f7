"""What channels-last buys the training step (`make bench-training`).

Times forward + backward + AdamW step of the training network on random batches at the
model's input size, in the default (contiguous) and in the channels-last memory format,
alternating rounds so that a drift of the machine hits both alike, and prints images/s.

    python -m tests.benchmarks.bench_training [--arch resnet18] [--batch-size 64] [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from handlers.network import ARCHITECTURES, build_model
from handlers.presets import PresetConfig


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    criterion = torch.nn.CrossEntropyLoss()
    targets = torch.zeros(batch.shape[0], dtype=torch.long)
    model.train()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        criterion(model(batch), targets).backward()
        optimizer.step()
    return steps * batch.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=ARCHITECTURES, default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    preset = PresetConfig()
    batch = torch.randn(args.batch_size, 3, preset.height, preset.width)
    formats = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    rates: dict[str, list[float]] = {name: [] for name in formats}
    for _ in range(args.rounds):
        for name, memory_format in formats.items():
            torch.manual_seed(0)
            model = build_model(args.arch, args.classes).to(memory_format=memory_format)
            rates[name].append(images_per_second(model, batch.contiguous(memory_format=memory_format), args.steps))
    print(f"{args.arch}, {preset.width}x{preset.height}, batch {args.batch_size}, {torch.get_num_threads()} threads")
    for name, values in rates.items():
        print(f"{name:14s} {statistics.median(values):7.1f} img/s (rounds: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = statistics.median(rates["channels_last"]) / statistics.median(rates["contiguous"])
    print(f"channels_last/contiguous={ratio:.2f}")


if __name__ == "__main__":
    main()
