"""Classification metrics and the plots saved with every model."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np


def confusion_matrix(targets: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets, predictions), 1)
    return matrix


def classification_report(targets: np.ndarray, predictions: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support."""
    matrix = confusion_matrix(targets, predictions, len(classes))
    true_positives = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    support = matrix.sum(axis=1).astype(float)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives), where=predicted > 0)
    recall = np.divide(true_positives, support, out=np.zeros_like(true_positives), where=support > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    present = support > 0
    return {
        "accuracy": float(true_positives.sum() / max(1, len(targets))),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "samples": len(targets),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)
        },
        "confusion_matrix": matrix.tolist(),
    }


REVIEW_EVERYTHING = float(np.nextafter(1.0, 2.0))  # no probability reaches it


def choose_review_threshold(confidence: np.ndarray, correct: np.ndarray, target_precision: float) -> float:
    """The lowest confidence at which items at or above it are right at least `target_precision` of the time.

    Items below it go to a person. Just above 1.0 (review everything, even saturated probabilities of 1.0)
    when no threshold reaches the target.
    A threshold sorts every item tied with it (saturated probabilities tie at 1.0), so only the last
    item of each run of equal confidences can mark it.
    """
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    precision = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    last_of_tie = np.append(ranked[1:] < ranked[:-1], True)
    reaching = np.nonzero((precision >= target_precision) & last_of_tie)[0]
    return float(ranked[reaching[-1]]) if len(reaching) else REVIEW_EVERYTHING


def auto_sort_report(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict:
    """Share of items routed without a person at this threshold, and how often those are right."""
    auto = confidence >= threshold
    return {
        "threshold": threshold,
        "auto_sort_rate": float(auto.mean()) if len(auto) else 0.0,
        "auto_sort_precision": float(correct[auto].mean()) if auto.any() else None,
    }


def plot_confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Row-normalised, so small classes are as readable as big ones."""
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    size = max(6.0, 0.28 * len(classes))
    figure, axes = plt.subplots(figsize=(size + 2, size))
    image = axes.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    axes.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    axes.set_yticks(range(len(classes)), classes, fontsize=7)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title("Confusion matrix on the test split (row-normalised)")
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_training_curve(history: list[dict], path: Path) -> None:
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axes, score_axes) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axes.plot(epochs, [entry["train_loss"] for entry in history], marker="o", label="train loss")
    loss_axes.set_xlabel("epoch")
    loss_axes.legend()
    score_axes.plot(epochs, [entry["val_accuracy"] for entry in history], marker="o", label="val accuracy")
    score_axes.plot(epochs, [entry["val_macro_f1"] for entry in history], marker="o", label="val macro-F1")
    score_axes.set_xlabel("epoch")
    score_axes.set_ylim(0, 1)
    score_axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
