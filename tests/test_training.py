"""Dataset preparation, splitting, metrics and the artefacts training leaves behind."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from batch_job.night.drift import drift_report
from torch.utils.data import DataLoader, TensorDataset

from common.styles import read_styles
from tests.conftest import LEARNED, TINY_EPOCHS
from tests.images import encode, product_image
from training import train
from training.calibrate import expected_calibration_error, fit_temperature
from training.catalog import ImageSource
from training.metrics import choose_review_threshold, classification_report
from training.prepare import assign_splits, prepare

REPO = Path(__file__).resolve().parent.parent


def test_styles_with_unquoted_commas_are_read_by_position(kaggle_dataset):
    rows, malformed = read_styles(kaggle_dataset / "styles.csv", "articleType")
    assert malformed == 1
    assert {row.label for row in rows} == {"Discs", "Boxes", "Wedges", "Rare"}


def test_images_are_read_from_a_zip_as_from_a_folder(kaggle_dataset, tmp_path):
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        for path in (kaggle_dataset / "images").iterdir():
            archive.write(path, f"images/{path.name}")
    from_zip, from_folder = ImageSource(tmp_path), ImageSource(kaggle_dataset)
    assert from_zip.read("1001") == from_folder.read("1001")
    assert from_zip.read("2002") is None


def test_prepare_reports_what_it_leaves_out(prepared):
    summary = json.loads((prepared / "dataset.json").read_text())
    assert summary["classes"] == ["Boxes", "Discs", "Wedges"]
    assert summary["dropped_classes"] == {"Rare": 1}
    assert summary["missing_images"] == ["2002"]
    assert list(summary["corrupt_images"]) == ["2003"]
    with (prepared / "manifest.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    per_split = Counter(row["split"] for row in rows)
    assert sum(per_split.values()) == 90 and set(per_split) == {"train", "val", "test"}


def test_splits_divide_each_class_in_proportion_and_never_move_an_image_as_a_class_grows():
    catalogue = {"A": [f"a{i}" for i in range(3000)], "B": [f"b{i}" for i in range(2000)]}
    splits = assign_splits(catalogue, 0.1, 0.2, seed=0)
    for label, ids in catalogue.items():
        shares = Counter(splits[image_id] for image_id in ids)
        assert abs(shares["test"] / len(ids) - 0.2) < 0.03 and abs(shares["val"] / len(ids) - 0.1) < 0.03, label
    grown = {"A": catalogue["A"] + [f"r{i}" for i in range(1500)], "B": catalogue["B"]}
    after = assign_splits(grown, 0.1, 0.2, seed=0)
    assert {image_id: after[image_id] for image_id in splits} == splits


def test_split_is_deterministic_and_independent_of_order(kaggle_dataset, tmp_path):
    ids = {"A": [str(i) for i in range(50)], "B": [str(i) for i in range(50, 80)]}
    shuffled = {label: list(reversed(values)) for label, values in ids.items()}
    assert assign_splits(ids, 0.1, 0.1, seed=7) == assign_splits(shuffled, 0.1, 0.1, seed=7)
    assert assign_splits(ids, 0.1, 0.1, seed=7) != assign_splits(ids, 0.1, 0.1, seed=8)
    first = prepare(kaggle_dataset, tmp_path / "a", "articleType", 10, 0.2, 0.2, 0)
    second = prepare(kaggle_dataset, tmp_path / "b", "articleType", 10, 0.2, 0.2, 0)
    assert first["splits"] == second["splits"]
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()


def test_a_threshold_never_splits_items_of_equal_confidence():
    """A threshold sorts every item tied with it; counting only some of the tie promised a precision the
    sorted items do not have (here 50 of 59 right, not 98 %)."""
    confidence = np.array([0.99] * 49 + [0.5] * 10)
    correct = np.array([True] * 49 + [True] + [False] * 9)
    assert choose_review_threshold(confidence, correct, 0.98) == 0.99


def test_a_target_no_threshold_reaches_sends_even_saturated_probabilities_to_a_person():
    confidence, correct = np.array([1.0, 1.0, 0.9]), np.array([True, False, True])
    threshold = choose_review_threshold(confidence, correct, 0.98)
    assert not (confidence >= threshold).any()


def test_classification_report_on_known_predictions():
    targets = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 1, 0])
    report = classification_report(targets, predictions, ["a", "b", "c"])
    assert report["accuracy"] == 4 / 6
    assert report["per_class"]["a"]["precision"] == 2 / 3
    assert report["per_class"]["a"]["recall"] == 2 / 3
    assert report["per_class"]["b"]["precision"] == 2 / 3
    assert report["per_class"]["c"]["f1"] == 0.0
    assert abs(report["macro_f1"] - (2 / 3 + 0.8 + 0) / 3) < 1e-9
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_temperature_scaling_repairs_overconfidence():
    torch.manual_seed(0)
    targets = torch.randint(0, 5, (2000,))
    logits = torch.randn(2000, 5)
    logits[torch.arange(2000), targets] += 1.0  # right about half the time...
    logits *= 6  # ...but sure of itself
    temperature = fit_temperature(logits, targets)
    assert temperature > 2
    before = expected_calibration_error(logits.softmax(1), targets)
    after = expected_calibration_error((logits / temperature).softmax(1), targets)
    assert after < before / 3


def test_training_saves_weights_labels_metrics_and_plots(trained_model, prepared):
    for name in (
        "model.pt",
        "index_to_name.json",
        "model.json",
        "metrics.json",
        "history.json",
        "args.json",
        "confusion_matrix.png",
        "training_curve.png",
    ):
        assert (trained_model / name).stat().st_size > 0, name
    metrics = json.loads((trained_model / "metrics.json").read_text())
    assert metrics["samples"] == json.loads((prepared / "dataset.json").read_text())["splits"]["test"]
    assert metrics["accuracy"] >= LEARNED and metrics["macro_f1"] >= LEARNED  # it learned the shapes
    assert set(metrics["per_class"]) == {"Boxes", "Discs", "Wedges"}
    assert metrics["calibration"]["temperature"] > 0
    meta = json.loads((trained_model / "model.json").read_text())
    assert meta["arch"] == "resnet18" and meta["preset"]["height"] == 80
    assert len(json.loads((trained_model / "history.json").read_text())) == TINY_EPOCHS


def test_model_card_names_data_metrics_and_confusions(trained_model):
    card = (trained_model / "model_card.md").read_text()
    for words in (
        "# Model card",
        "## Data",
        "accuracy",
        "calibration",
        "review threshold",
        "## Known confusions",
        "## Limits",
        "| Discs |",
        "confusion_matrix.png",
    ):
        assert words in card, words


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_killed_training_resumes_from_its_checkpoint(prepared, tmp_path, optimizer):
    command = [
        sys.executable,
        "-m",
        "training.train",
        "--prepared",
        str(prepared),
        "--out",
        str(tmp_path),
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--epochs",
        "8",
        "--opt",
        optimizer,
    ]
    victim = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    victim.kill()
    victim.wait()
    assert not (tmp_path / "metrics.json").exists(), "training finished before it could be interrupted"
    resumed = subprocess.run([*command, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    assert [entry["epoch"] for entry in json.loads((tmp_path / "history.json").read_text())] == list(range(1, 9))


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_runs_the_network_in_bf16_and_keeps_the_weights_fp32(bf16):
    """--bf16: the forward pass under autocast (the head answers in bf16), the weights the optimizer updates
    and saves stay fp32."""
    torch.manual_seed(0)
    model = train.create_model("resnet18", 3, None)
    answered = []
    model.fc.register_forward_hook(lambda _, __, out: answered.append(out.dtype))
    before = model.conv1.weight.detach().clone()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    batches = DataLoader(TensorDataset(torch.randn(8, 3, 80, 60), torch.arange(8) % 3), batch_size=4)
    loss = train.train_one_epoch(
        model, torch.nn.CrossEntropyLoss(), optimizer, scheduler, batches, "epoch 1/1", 0, bf16=bf16
    )
    assert answered == [torch.bfloat16 if bf16 else torch.float32] * 2
    assert np.isfinite(loss)
    assert all(weights.dtype == torch.float32 for weights in model.state_dict().values() if weights.is_floating_point())
    assert not torch.equal(model.conv1.weight, before)


def test_progress_reaches_a_log_file_while_the_epoch_runs(prepared, tmp_path):
    """Without a terminal (CI, `make demo > log`, a Kubernetes Job): a line every N batches with images/s and
    the ETA, each written at once, not held in a buffer until the run ends."""
    command = [sys.executable, "-m", "training.train", "--prepared", str(prepared), "--out", str(tmp_path)]
    command += ["--batch-size", "8", "--workers", "0", "--epochs", "4", "--log-every", "1"]
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # Python's default
    with subprocess.Popen(
        command, cwd=REPO, env=buffered, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as run:
        try:
            first = next(line for line in run.stdout if "img/s" in line)
            epoch_over = (tmp_path / "checkpoint.pt").exists()
        finally:
            run.kill()
    assert re.fullmatch(r"epoch 1/4 batch 1/\d+: loss [\d.]+, \d+ img/s, ETA \d+s\n", first), first
    assert not epoch_over, "the progress line came only after the first epoch had ended"


def test_training_stops_early_without_progress(prepared, tmp_path):
    arguments = ["--prepared", str(prepared), "--out", str(tmp_path), "--batch-size", "16", "--workers", "0"]
    train.main([*arguments, "--epochs", "30", "--patience", "2", "--lr", "1e-12"])  # the weights barely move
    history = json.loads((tmp_path / "history.json").read_text())
    best = max(history, key=lambda entry: entry["val_macro_f1"])["epoch"]
    assert len(history) < 30 and history[-1]["epoch"] == best + 2


def test_the_shipped_class_prior_is_the_whole_training_split_not_the_capped_one(tmp_path):
    """--max-per-class evens out the classes the model trains on; the prior the drift check compares
    nights with must still be the catalogue's mix, or a night drawn from that very mix is called drift."""
    sizes = {"Discs": 50, "Boxes": 15, "Wedges": 10}
    (tmp_path / "catalogue" / "images").mkdir(parents=True)
    lines = ["id,masterCategory,subCategory,articleType,baseColour,usage,productDisplayName"]
    for category, size in sizes.items():
        for seed in range(size):
            image_id = f"{category}{seed}"
            (tmp_path / "catalogue" / "images" / f"{image_id}.jpg").write_bytes(encode(product_image(category, seed)))
            lines.append(f"{image_id},Apparel,Shapes,{category},Red,Casual,A {category.lower()}")
    (tmp_path / "catalogue" / "styles.csv").write_text("\n".join(lines) + "\n")
    prepare(tmp_path / "catalogue", tmp_path / "prepared", "articleType", 5, 0.2, 0.2, 0)
    with (tmp_path / "prepared" / "manifest.csv").open() as handle:
        train_counts = Counter(row["label"] for row in csv.DictReader(handle) if row["split"] == "train")
    assert train_counts == {"Discs": 26, "Boxes": 7, "Wedges": 8}  # the hash split of these ids

    arguments = ["--prepared", str(tmp_path / "prepared"), "--out", str(tmp_path / "model"), "--epochs", "1"]
    metrics = train.main([*arguments, "--max-per-class", "4", "--batch-size", "16", "--workers", "0"])
    test_size = (
        sum(sizes.values())
        - train_counts.total()
        - json.loads((tmp_path / "prepared" / "dataset.json").read_text())["splits"]["val"]
    )
    assert metrics["samples"] == test_size  # validation and test are whole; only training is capped
    prior = json.loads((tmp_path / "model" / "model.json").read_text())["class_prior"]
    assert prior == pytest.approx({label: count / train_counts.total() for label, count in train_counts.items()})

    night = Counter({label: 10 * count for label, count in train_counts.items()})  # the catalogue's mix
    report = drift_report(night, 0.9, prior, [], threshold=0.25)
    assert report["psi_vs_training"] < 0.01 and report["warnings"] == []
