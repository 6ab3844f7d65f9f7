"""The network alone in each candidate runtime (`make bench-runtimes`): what the handler could run.

The sample photos are preprocessed once (the serving preset); then each runtime runs them in batches on one
thread (a TorchServe worker's share): PyTorch fp32 (the fallback) and under bf16 autocast, ONNX Runtime fp32 and
int8, OpenVINO fp32, bf16 and int8 with its float layers in fp32 or in OpenVINO's own choice (the shipped
setting: bf16 on CPUs with AMX). Needs a model folder that `refund-train archive` exported (model.onnx,
model.int8.onnx). Rounds alternate the runtimes so that a drift of the machine hits all alike. Prints ms per
image (median of the rounds), the speed against PyTorch fp32, and how far each runtime's answers are from
PyTorch fp32's (top-1 agreement, largest probability gap).

    python -m tests.benchmarks.bench_runtimes [--model var/model] [--batch-size 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from handlers.network import load_model
from handlers.presets import ClassificationPresetEval, PresetConfig
from handlers.runtime import OnnxRunner, OpenVinoRunner, Runner, TorchRunner
from training.export import INT8_FILE, ONNX_FILE
from training.train import autocast

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = "pytorch fp32"


class Bf16Autocast:
    """The PyTorch model under bf16 autocast, logits back in fp32."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.torch = TorchRunner(model)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(bf16=True):
            return self.torch(images).float()


def candidates(model_dir: Path) -> dict[str, Callable[[], Runner]]:
    fp32, int8 = model_dir / ONNX_FILE, model_dir / INT8_FILE
    return {
        REFERENCE: lambda: TorchRunner(load_model(model_dir)),
        "pytorch bf16 autocast": lambda: Bf16Autocast(load_model(model_dir)),
        "onnxruntime fp32": lambda: OnnxRunner(fp32, 1),
        "onnxruntime int8": lambda: OnnxRunner(int8, 1),
        "openvino fp32": lambda: OpenVinoRunner(fp32, 1, "f32"),
        "openvino bf16": lambda: OpenVinoRunner(fp32, 1, "bf16"),
        "openvino int8, float layers fp32": lambda: OpenVinoRunner(int8, 1, "f32"),
        "openvino int8 (shipped)": lambda: OpenVinoRunner(int8, 1),
    }


def run_all(runner: Runner, batches: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
    """Seconds per image over all batches, and the logits."""
    started = time.perf_counter()
    logits = torch.cat([runner(batch) for batch in batches])
    return (time.perf_counter() - started) / len(logits), logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "var/model", help="an archived (exported) model folder")
    parser.add_argument("--sample", type=Path, default=ROOT.parent / "shared/datasets/returns-photos-sample")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    preset = ClassificationPresetEval(PresetConfig.load(args.model / "model.json"))
    photos = sorted((args.sample / "images").glob("*.jpg"))
    inputs = torch.stack([preset(path.read_bytes()) for path in photos])
    batches = list(inputs.split(args.batch_size))
    runners: dict[str, Runner] = {}
    for name, create in candidates(args.model).items():
        try:
            runners[name] = create()
            run_all(runners[name], batches[:2])  # warm-up: first-call allocations and kernel choice
        except Exception as error:  # a runtime this CPU or install lacks is reported, not fatal
            print(f"{name:34s} not available: {error}".splitlines()[0])
            runners.pop(name, None)
    times: dict[str, list[float]] = {name: [] for name in runners}
    logits: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, runner in runners.items():
            seconds, logits[name] = run_all(runner, batches)
            times[name].append(seconds)
    print(f"{len(inputs)} photos, batch {args.batch_size}, one thread, median of {args.rounds} rounds")
    reference, base = logits[REFERENCE].softmax(1), statistics.median(times[REFERENCE])
    for name, measured in times.items():
        probabilities = logits[name].softmax(1)
        agreement = (probabilities.argmax(1) == reference.argmax(1)).float().mean().item()
        gap = (probabilities - reference).abs().max().item()
        ms = 1000 * statistics.median(measured)
        print(
            f"{name:34s} {ms:6.2f} ms/img  {base / statistics.median(measured):5.2f}x  "
            f"top-1 as {REFERENCE} {agreement:7.2%}  largest probability gap {gap:.4f}"
        )


if __name__ == "__main__":
    main()
