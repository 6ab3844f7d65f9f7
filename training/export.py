"""Export a trained model to ONNX and a static int8 model, and prove the int8 one keeps accuracy as it is served.

`refund-train archive` runs this before it packs the .mar (the .mar carries the runtime model next to
model.pt). It writes into the model folder:

- `model.onnx`: the fp32 network (torch.onnx, a dynamic batch axis);
- `model.int8.onnx`: int8 weights (per output channel, 7-bit range) and uint8 activations but for
  the stem convolution, the activation ranges calibrated on validation photos through the serving preprocessing
  (handlers/presets.py), in QDQ form (ONNX Runtime's quantiser writes it); OpenVINO, which serves it, compiles
  it into its own integer kernels;
- `model.json["runtime"]`: what the handler runs (handlers/runtime.py: OpenVINO, ENGINE) and the temperature
  refitted on the int8 model's own logits as that engine computes them (quantisation moves them), or nothing
  where int8 loses more than TOLERANCE of test accuracy or macro-F1: then the handler runs PyTorch;
- `metrics.json["runtime"]` and the model card: int8 against PyTorch fp32 on the test split.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from common.classes import load_classes
from common.sorting import rule_of
from handlers.network import load_model
from handlers.presets import ClassificationPresetEval, PresetConfig
from handlers.runtime import ENGINES, TorchRunner
from training.calibrate import calibration_logits, fit_temperature
from training.dataset import EncodedImages
from training.evaluate import predict_logits, split_items
from training.metrics import classification_report
from training.model_card import rewrite_model_card
from training.thresholds import sorting_reports

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
# What serves the int8 model: 1.35x ONNX Runtime's speed on it here (AVX2, no VNNI; docs/performance.md).
ENGINE = "openvino"
TOLERANCE = 0.003  # the largest loss of test accuracy or macro-F1 (0.3 points) the int8 model may cost
# Activation ranges settle after a few hundred photos, spread over the validation split.
CALIBRATION_IMAGES = 512
BATCH = 64


def export_onnx(model: torch.nn.Module, preset: PresetConfig, path: Path) -> Path:
    """The fp32 network as ONNX (torch's dynamo exporter), any batch size."""
    # Traced in channels-last, the flatten before the classifier becomes a strided gather; ONNX
    # Runtime picks its own layouts, so the plain layout gives the plain graph.
    model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    example = torch.zeros(2, 3, preset.height, preset.width)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        model,
        (example,),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    program.save(str(path))
    return path


def calibration_photos(items: list[tuple[bytes, int]], count: int) -> list[tuple[bytes, int]]:
    """`count` photos spread evenly over the split (manifest order groups classes: every class is in)."""
    step = max(1, len(items) // count)
    return items[::step][:count]


class _Batches:
    """onnxruntime's CalibrationDataReader protocol: the calibration photos, preprocessed, batch by batch."""

    def __init__(self, items: list[tuple[bytes, int]], preset: PresetConfig, input_name: str) -> None:
        loader = DataLoader(EncodedImages(items, ClassificationPresetEval(preset)), batch_size=BATCH)
        self.batches = ({input_name: images.numpy()} for images, _ in loader)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def quantize_int8(fp32: Path, out: Path, items: list[tuple[bytes, int]], preset: PresetConfig) -> Path:
    """Static int8: per-channel weights, activation ranges from the calibration photos."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        # Shape inference and graph optimisation first, as onnxruntime's quantisation guide asks.
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        # The stem convolution stays fp32: it sees the raw pixels, and quantising it cost the most agreement
        # (returns photos: 99.0 % -> 100 % of top-1 answers equal to PyTorch's with it in fp32).
        stem = next(node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv")
        quantize_static(
            str(prepared),
            str(out),
            _Batches(items, preset, "images"),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            # 7-bit weights: AVX2 without VNNI multiplies u8 x s8 pairs into saturating 16-bit sums, which
            # full 8-bit weights overflow (measured: test accuracy 0.88 -> 0.55). VNNI CPUs lose nothing by it.
            reduce_range=True,
            # Ranges that ignore the rarest 0.001 % of activations: a finer step for the rest (macro-F1
            # -0.15 points against -0.33 with plain min-max, on the catalogue's test split).
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=[stem],
        )
    return out


def compare(reference: torch.Tensor, candidate: torch.Tensor) -> dict:
    """How far the candidate's answers are from the reference's: top-1 agreement, largest probability gap."""
    return {
        "top1_agreement": float((reference.argmax(1) == candidate.argmax(1)).float().mean()),
        "max_abs_probability_difference": float((reference.softmax(1) - candidate.softmax(1)).abs().max()),
    }


def sorted_figures(reports: dict) -> dict:
    """The shipped rule (per class, then the upper levels): the share it sorts without a person, how precisely."""
    levels = reports["levels"]
    return {"sorted_share": levels["sorted_share"], "sorted_precision": levels["sorted_precision"]}


def export(model_dir: Path, prepared: Path) -> dict:
    """Writes the ONNX models, scores int8 against PyTorch on the test split and records the runtime to use."""
    meta = json.loads((model_dir / "model.json").read_text())
    classes = load_classes(model_dir / "index_to_name.json")
    preset = PresetConfig.from_dict(meta["preset"])
    model = load_model(model_dir)
    fp32_path = export_onnx(model, preset, model_dir / ONNX_FILE)
    validation = split_items(model_dir, prepared, "val")
    int8_path = quantize_int8(
        fp32_path, model_dir / INT8_FILE, calibration_photos(validation, CALIBRATION_IMAGES), preset
    )
    int8 = ENGINES[ENGINE](int8_path, torch.get_num_threads())

    test_loader = DataLoader(
        EncodedImages(split_items(model_dir, prepared, "test"), ClassificationPresetEval(preset)), BATCH
    )
    reference, targets = predict_logits(TorchRunner(model), test_loader)
    quantised, _ = predict_logits(int8, test_loader)
    reports = {
        name: classification_report(targets.numpy(), logits.argmax(1).numpy(), classes)
        for name, logits in (("fp32", reference), ("int8", quantised))
    }
    # The temperature again, on the int8 logits of the photos (and source) the shipped one was fitted on.
    metrics = json.loads((model_dir / "metrics.json").read_text())
    source = metrics.get("calibration", {}).get("source", "catalogue")
    logits, labels, _, _ = calibration_logits(int8, prepared, classes, preset, source, 0)
    temperature = fit_temperature(logits, labels)
    rule_test = {
        name: sorted_figures(sorting_reports((logits / t).softmax(1).numpy(), targets.numpy(), classes, rule_of(meta)))
        for name, logits, t in (("fp32", reference, meta["temperature"]), ("int8", quantised, temperature))
    }
    loss = max(reports["fp32"][key] - reports["int8"][key] for key in ("accuracy", "macro_f1"))
    figures = {
        "engine": ENGINE,
        "precision": "int8",
        "shipped": loss <= TOLERANCE,  # else the handler runs PyTorch fp32
        "test": {
            name: {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "sorted": rule_test[name]}
            for name, report in reports.items()
        },
        "against_pytorch": compare(reference, quantised),
        "temperature": {"pytorch_fp32": meta["temperature"], f"{ENGINE}_int8": temperature, "source": source},
        "calibration_images": CALIBRATION_IMAGES,
    }
    meta.pop("runtime", None)
    if figures["shipped"]:
        meta["runtime"] = {"engine": ENGINE, "precision": "int8", "file": INT8_FILE, "temperature": temperature}
    (model_dir / "model.json").write_text(json.dumps(meta, indent=1))
    (model_dir / "metrics.json").write_text(json.dumps(metrics | {"runtime": figures}, indent=1))
    rewrite_model_card(model_dir)
    return figures
