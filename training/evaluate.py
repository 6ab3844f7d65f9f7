"""Evaluate a trained model in-process, with the same preprocessing the handler uses.

    refund-train evaluate --model var/model --prepared var/data          # the test split
    refund-train evaluate --model var/model --photos ../shared/datasets/returns-photos-sample

The promotion gate (training.registry) scores candidate and production this way, on the
same split, so that "better" never compares numbers measured on different images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.classes import load_classes
from common.sorting import rule_of
from common.styles import read_styles
from handlers.network import load_model
from handlers.presets import ClassificationPresetEval, InvalidImageError, PresetConfig, decode_image
from handlers.runtime import Runner
from training.catalog import ImageSource, PreparedSource
from training.dataset import EncodedImages, load_split
from training.metrics import classification_report
from training.model_card import rewrite_model_card
from training.thresholds import sorting_reports


@torch.inference_mode()
def predict_logits(model: torch.nn.Module | Runner, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of every batch; `model` is a network or any runner of handlers/runtime.py."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    logits, targets = [], []
    for images, batch_targets in loader:
        logits.append(model(images.contiguous(memory_format=torch.channels_last)))
        targets.append(batch_targets)
    return torch.cat(logits), torch.cat(targets)


def split_items(model_dir: Path, prepared: Path, split: str) -> list[tuple[bytes, int]]:
    """A split of training.prepare's manifest; the model must know exactly the split's classes."""
    dataset = json.loads((prepared / "dataset.json").read_text())
    classes = load_classes(model_dir / "index_to_name.json")
    if dataset["classes"] != classes:
        raise ValueError(f"{model_dir} was trained on other classes than {prepared} holds: not comparable")
    return load_split(prepared, split, classes, PreparedSource(dataset), None)


def photo_items(model_dir: Path, photos: Path, label_column: str) -> tuple[list[tuple[bytes, int]], int]:
    """Labelled photos in the Kaggle layout whose label the model knows and which decode, and how
    many were left out."""
    index_of = {name: index for index, name in enumerate(load_classes(model_dir / "index_to_name.json"))}
    rows, _ = read_styles(photos / "styles.csv", label_column)
    source = ImageSource(photos)
    items = []
    for row in rows:
        data = source.read(row.image_id) if row.label in index_of else None
        if data is not None and _decodes(data):
            items.append((data, index_of[row.label]))
    return items, len(rows) - len(items)


def _decodes(data: bytes) -> bool:
    try:
        decode_image(data)
    except InvalidImageError:
        return False
    return True


def predict(model_dir: Path, items: list[tuple[bytes, int]], batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of the model in model_dir on (bytes, label) items, and the labels."""
    preset = ClassificationPresetEval(PresetConfig.load(model_dir / "model.json"))
    return predict_logits(load_model(model_dir), DataLoader(EncodedImages(items, preset), batch_size=batch_size))


def evaluate(model_dir: Path, items: list[tuple[bytes, int]], batch_size: int = 64) -> dict:
    """Accuracy, macro-F1 and per-class figures of the model in model_dir on (bytes, label) items."""
    logits, targets = predict(model_dir, items, batch_size)
    classes = load_classes(model_dir / "index_to_name.json")
    return classification_report(targets.numpy(), logits.argmax(1).numpy(), classes)


def shipped_sorting(model_dir: Path, logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """How the model's shipped temperature and sorting rule sort these items (training.thresholds)."""
    model_info = json.loads((model_dir / "model.json").read_text())
    probabilities = (logits / model_info["temperature"]).softmax(1).numpy()
    classes = load_classes(model_dir / "index_to_name.json")
    return sorting_reports(probabilities, targets.numpy(), classes, rule_of(model_info))


def record_photos(model_dir: Path, photos: Path, label_column: str) -> dict:
    """Scores the model on labelled photos (accuracy, and how its shipped rule sorts them) and adds the
    figures to its metrics.json and model card."""
    items, left_out = photo_items(model_dir, photos, label_column)
    logits, targets = predict(model_dir, items)
    classes = load_classes(model_dir / "index_to_name.json")
    report = classification_report(targets.numpy(), logits.argmax(1).numpy(), classes)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics["photos"] = {
        "source": str(photos),
        "images": len(items),
        "left_out": left_out,
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "sorting": shipped_sorting(model_dir, logits, targets),
    }
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rewrite_model_card(model_dir)
    return metrics["photos"]


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("var/model"), help="(default: var/model)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--prepared", type=Path, default=Path("var/data"), help="output of refund-train prepare")
    source.add_argument("--photos", type=Path, help="labelled photos instead: styles.csv + images/")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="(default: test)")
    parser.add_argument("--label-column", default="articleType", help="of --photos' styles.csv")
    parser.add_argument("--record", action="store_true", help="with --photos: add the figures to the model card")
    args = parser.parse_args(argv)
    if args.photos and args.record:
        recorded = record_photos(args.model, args.photos, args.label_column)
        print(
            f"{args.model} on {args.photos}: {recorded['images']} images, accuracy {recorded['accuracy']:.3f}, "
            f"macro-F1 {recorded['macro_f1']:.3f}; recorded in metrics.json and model_card.md"
        )
        return recorded
    if args.photos:
        items, left_out = photo_items(args.model, args.photos, args.label_column)
        what = f"{args.photos} ({left_out} photos of unknown categories or missing left out)"
    else:
        items, what = split_items(args.model, args.prepared, args.split), f"the {args.split} split of {args.prepared}"
    report = evaluate(args.model, items)
    print(
        f"{args.model} on {what}: {len(items)} images, accuracy {report['accuracy']:.3f}, "
        f"macro-F1 {report['macro_f1']:.3f}"
    )
    return report


if __name__ == "__main__":
    main()
