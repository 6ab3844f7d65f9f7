"""The exported runtime (training/export.py, handlers/runtime.py): ONNX fp32 equals PyTorch, int8 agrees
with it as OpenVINO runs it, and the handler falls back to PyTorch where the runtime model or its engine is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from handlers.network import build_model, load_model
from handlers.presets import ClassificationPresetEval, PresetConfig
from handlers.runtime import ENGINES, OnnxRunner, OpenVinoRunner, TorchRunner
from tests.conftest import LEARNED, TINY_TRAINING
from tests.images import SHAPES, encode, product_image
from training import archive, export, train
from training.evaluate import split_items

ROOT = Path(__file__).resolve().parent.parent
# A model trained on the real catalogue and the returns desk's photos; the agreement on real photos is
# measured where they are (tiny shape models say nothing about a real network's quantisation).
REAL_MODEL = Path(os.environ.get("REFUND_TEST_MODEL", ROOT / "var/model"))
RETURNS_PHOTOS = Path(os.environ.get("REFUND_TEST_PHOTOS", ROOT.parent / "shared/datasets/returns-photos-sample"))
AGREEMENT = 0.99
MAX_PROBABILITY_GAP = 0.15  # int8 moves a probability by a few points at most; measured 0.04 on the returns photos


def photos_batch(model_dir: Path, photos: list[bytes]) -> torch.Tensor:
    preset = ClassificationPresetEval(PresetConfig.load(model_dir / "model.json"))
    return torch.stack([preset(photo) for photo in photos])


@pytest.fixture(scope="module")
def exported(model_store, trained_model) -> Path:
    """The tiny model after `archive` exported it (the model_store fixture archives with the prepared split)."""
    return trained_model


def generated_photos() -> list[bytes]:
    return [encode(product_image(name, seed, size=(300, 400))) for name in SHAPES for seed in range(200, 220)]


# OpenVINO runs float layers in bf16 on CPUs with AMX unless told otherwise: fp32 must be asked for.
FP32_ENGINES = {
    "onnxruntime": lambda path: OnnxRunner(path, 1),
    "openvino": lambda path: OpenVinoRunner(path, 1, "f32"),
}


@pytest.mark.parametrize("engine", FP32_ENGINES)
def test_onnx_fp32_equals_pytorch(exported, engine):
    batch = photos_batch(exported, generated_photos())
    expected = TorchRunner(load_model(exported))(batch)
    runner = FP32_ENGINES[engine](exported / export.ONNX_FILE)
    for size in (1, 7, len(batch)):  # the batch axis is dynamic
        got = runner(batch[:size])
        assert (got - expected[:size]).abs().max() < 1e-4


def test_int8_agrees_with_pytorch_and_is_what_the_mar_runs(exported, model_store, prepared):
    meta = json.loads((exported / "model.json").read_text())
    assert meta["runtime"] == {
        "engine": "openvino",
        "precision": "int8",
        "file": export.INT8_FILE,
        "temperature": meta["runtime"]["temperature"],
    }
    with zipfile.ZipFile(model_store / "refund-classifier.mar") as mar:
        assert export.INT8_FILE in mar.namelist()
        assert json.loads(mar.read("model.json"))["runtime"] == meta["runtime"]
    items = split_items(exported, prepared, "test") + [(photo, 0) for photo in generated_photos()]
    batch = photos_batch(exported, [data for data, _ in items])
    figures = export.compare(
        TorchRunner(load_model(exported))(batch), ENGINES[export.ENGINE](exported / export.INT8_FILE, 1)(batch)
    )
    assert figures["top1_agreement"] >= AGREEMENT, figures
    assert figures["max_abs_probability_difference"] < MAX_PROBABILITY_GAP, figures
    recorded = json.loads((exported / "metrics.json").read_text())["runtime"]
    assert recorded["precision"] == "int8"
    assert recorded["test"]["fp32"]["accuracy"] - recorded["test"]["int8"]["accuracy"] <= export.TOLERANCE
    assert "openvino int8" in (exported / "model_card.md").read_text()


@pytest.mark.skipif(
    not (REAL_MODEL / "model.pt").is_file() or not (RETURNS_PHOTOS / "images").is_dir(),
    reason=f"needs a real trained model ({REAL_MODEL}; REFUND_TEST_MODEL) and the returns photos ({RETURNS_PHOTOS})",
)
def test_int8_agrees_with_pytorch_on_real_returns_photos(tmp_path):
    """Quantised as archive does (calibrated on validation photos), on the returns desk's photos."""
    meta = json.loads((REAL_MODEL / "model.json").read_text())
    preset = PresetConfig.from_dict(meta["preset"])
    model = load_model(REAL_MODEL)
    prepared = Path(json.loads((REAL_MODEL / "args.json").read_text())["prepared"])
    prepared = prepared if prepared.is_absolute() else ROOT / prepared
    calibration = export.calibration_photos(split_items(REAL_MODEL, prepared, "val"), export.CALIBRATION_IMAGES)
    fp32 = export.export_onnx(model, preset, tmp_path / export.ONNX_FILE)
    int8 = export.quantize_int8(fp32, tmp_path / export.INT8_FILE, calibration, preset)
    batch = photos_batch(REAL_MODEL, [path.read_bytes() for path in sorted((RETURNS_PHOTOS / "images").glob("*.jpg"))])
    figures = export.compare(TorchRunner(model)(batch), ENGINES[export.ENGINE](int8, 1)(batch))
    print(f"{len(batch)} returns photos: {figures}")
    assert len(batch) >= 100
    assert figures["top1_agreement"] >= AGREEMENT, figures
    assert figures["max_abs_probability_difference"] < MAX_PROBABILITY_GAP, figures


# The handler as TorchServe loads it: from the unpacked .mar, in a fresh interpreter, so that
# `openvino` can be made unimportable; prints which runtime it runs and the logits of a batch.
HANDLER_RUN = """
import json, sys, logging
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="LOG %(message)s")
if sys.argv[1] == "block":
    sys.modules["openvino"] = None
import torch
from ts.context import Context
from refund_classifier import RefundClassifier
manifest = json.load(open("MAR-INF/MANIFEST.json"))
handler = RefundClassifier()
handler.initialize(Context("refund-classifier", ".", manifest, 16, None, "0.12.0"))
images = torch.load("batch.pt")
print(json.dumps({"runtime": handler.runtime, "temperature": handler.temperature,
                  "logits": handler.inference(images).tolist()}))
"""


def run_handler(
    mar: Path, where: Path, block: bool = False, drop: str | None = None, engine: str | None = None
) -> tuple[dict, str]:
    with zipfile.ZipFile(mar) as archive:
        archive.extractall(where)
    if drop:
        (where / drop).unlink()
    if engine:  # as an older archive names it
        meta = json.loads((where / "model.json").read_text())
        meta["runtime"]["engine"] = engine
        (where / "model.json").write_text(json.dumps(meta))
    torch.save(photos_batch(where, generated_photos()[:8]), where / "batch.pt")
    done = subprocess.run(
        [sys.executable, "-c", HANDLER_RUN, "block" if block else "-"],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    *logs, answer = done.stdout.strip().splitlines()
    return json.loads(answer), "\n".join(logs)


@pytest.mark.parametrize("engine", [None, "onnxruntime"])  # onnxruntime: a model archived before 6 Dec 2026
def test_the_handler_runs_the_int8_model_the_mar_carries(model_store, exported, tmp_path, engine):
    answer, _ = run_handler(model_store / "refund-classifier.mar", tmp_path, engine=engine)
    meta = json.loads((exported / "model.json").read_text())
    engine = engine or export.ENGINE
    assert answer["runtime"] == f"{engine} int8"
    assert answer["temperature"] == meta["runtime"]["temperature"]
    expected = ENGINES[engine](exported / export.INT8_FILE, 1)(torch.load(tmp_path / "batch.pt"))
    assert (torch.tensor(answer["logits"]) - expected).abs().max() < 1e-4


@pytest.mark.parametrize(
    ("block", "drop", "why"),
    [
        (True, None, "openvino cannot be imported"),
        (False, export.INT8_FILE, f"{export.INT8_FILE} is not in the model folder"),
    ],
)
def test_the_handler_falls_back_to_pytorch(model_store, exported, tmp_path, block, drop, why):
    answer, logs = run_handler(model_store / "refund-classifier.mar", tmp_path, block=block, drop=drop)
    meta = json.loads((exported / "model.json").read_text())
    assert answer["runtime"] == "pytorch fp32"
    assert answer["temperature"] == meta["temperature"]  # PyTorch's own, not the int8 model's
    assert f"running PyTorch fp32 instead of openvino int8: {why}" in logs
    expected = TorchRunner(load_model(exported))(torch.load(tmp_path / "batch.pt"))
    assert (torch.tensor(answer["logits"]) - expected).abs().max() < 1e-4


def test_an_archive_without_the_export_ships_no_runtime_entry(exported, tmp_path):
    """`archive --pytorch` of a model an earlier archive exported: the .mar's model.json names no runtime (the
    handler runs PyTorch without a fallback warning) and the model folder keeps its entry for the next archive."""
    mar = archive.archive(
        exported, tmp_path / "store", "refund-classifier", archive.HANDLERS / "model-config.yaml", tmp_path / "b"
    )
    with zipfile.ZipFile(mar) as packed:
        assert "runtime" not in json.loads(packed.read("model.json"))
        assert export.INT8_FILE not in packed.namelist()
    assert "runtime" in json.loads((exported / "model.json").read_text())
    answer, logs = run_handler(mar, tmp_path / "unpacked")
    assert answer["runtime"] == "pytorch fp32" and "instead of" not in logs


def test_the_small_input_stems_give_the_last_stage_a_four_times_larger_map():
    plain = build_model("resnet18", 3)
    no_maxpool, small_stem = build_model("resnet18-no-maxpool", 3), build_model("resnet18-3x3-stem", 3)
    assert plain.state_dict().keys() == no_maxpool.state_dict().keys()  # a weights file fits either
    assert small_stem.conv1.kernel_size == (3, 3) and small_stem.conv1.stride == (1, 1)
    batch = torch.zeros(1, 3, 80, 60)
    last_stage = {}
    for name, model in (("plain", plain), ("no_maxpool", no_maxpool), ("small_stem", small_stem)):
        model.layer4.register_forward_hook(lambda _, __, out, name=name: last_stage.update({name: out.shape[-2:]}))
        model.eval()(batch)
    assert last_stage == {"plain": (3, 2), "no_maxpool": (5, 4), "small_stem": (5, 4)}


def test_a_model_without_the_stems_max_pool_is_exported_and_served_in_int8(prepared, tmp_path):
    """--arch travels in model.json: export, archive and the handler build the network training built."""
    model_dir = tmp_path / "model"
    arguments = ["--prepared", str(prepared), "--out", str(model_dir), "--arch", "resnet18-no-maxpool"]
    assert train.main([*arguments, *TINY_TRAINING])["accuracy"] >= LEARNED
    mar = archive.archive(
        model_dir,
        tmp_path / "store",
        "refund-classifier",
        archive.HANDLERS / "model-config.yaml",
        tmp_path / "b",
        prepared,
    )
    answer, _ = run_handler(mar, tmp_path / "unpacked")
    assert answer["runtime"] == f"{export.ENGINE} int8"
    expected = ENGINES[export.ENGINE](model_dir / export.INT8_FILE, 1)(torch.load(tmp_path / "unpacked" / "batch.pt"))
    assert (torch.tensor(answer["logits"]) - expected).abs().max() < 1e-4
    assert isinstance(load_model(tmp_path / "unpacked").maxpool, torch.nn.Identity)
