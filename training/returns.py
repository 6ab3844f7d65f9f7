"""Reviewed returns as an evaluation set of their own: the test share of the photos that
`refund-train prepare --extra` took from `refund-batch export-labels`.

Catalogue shots are not what the returns desk photographs; these are. The model card reports the
accuracy and the auto-sort share at the model's review threshold on them, and the registry's
promotion gate refuses a candidate that is worse on them than production.

    refund-train returns --model var/model --prepared var/data  # print, and record in the card
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common.classes import load_classes
from training.catalog import PreparedSource
from training.dataset import load_split
from training.evaluate import predict, shipped_sorting
from training.metrics import auto_sort_report
from training.model_card import rewrite_model_card


def returns_items(model_dir: Path, prepared: Path) -> list[tuple[bytes, int]]:
    """(bytes, class index) of the --extra photos in the prepared test split."""
    dataset = json.loads((prepared / "dataset.json").read_text())
    classes = load_classes(model_dir / "index_to_name.json")
    if dataset["classes"] != classes:
        raise ValueError(f"{model_dir} was trained on other classes than {prepared} holds: not comparable")
    return load_split(prepared, "test", classes, PreparedSource(dataset), None, reviewed_returns=True)


def score_returns(model_dir: Path, prepared: Path) -> dict | None:
    """Accuracy and the auto-sort share and precision at the model's review threshold; None without returns."""
    items = returns_items(model_dir, prepared)
    if not items:
        return None
    logits, targets = predict(model_dir, items)
    model = json.loads((model_dir / "model.json").read_text())
    confidence, predicted = (logits / model["temperature"]).softmax(1).max(1)
    correct = (predicted == targets).numpy()
    auto = auto_sort_report(confidence.numpy(), correct, model["review_threshold"])
    return {
        "images": len(items),
        "accuracy": float(correct.mean()),
        "threshold": model["review_threshold"],
        "auto_sort_rate": auto["auto_sort_rate"],
        "auto_sort_precision": auto["auto_sort_precision"],
        "sorting": shipped_sorting(model_dir, logits, targets),
    }


def record_returns(model_dir: Path, prepared: Path) -> dict | None:
    """Scores the model on reviewed returns and adds the figures to metrics.json and the model card."""
    figures = score_returns(model_dir, prepared)
    if figures is None:
        return None
    metrics = json.loads((model_dir / "metrics.json").read_text())
    metrics["reviewed_returns"] = figures
    (model_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rewrite_model_card(model_dir)
    return figures


def main(argv: list[str] | None = None, prog: str | None = None) -> dict | None:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("var/model"), help="(default: var/model)")
    parser.add_argument("--prepared", type=Path, default=Path("var/data"), help="prepared with --extra")
    args = parser.parse_args(argv)
    figures = record_returns(args.model, args.prepared)
    if figures is None:
        print(f"{args.prepared} holds no reviewed returns in its test split (refund-train prepare --extra)")
    else:
        print(
            f"{args.model} on {figures['images']} reviewed returns: accuracy {figures['accuracy']:.3f}, auto-sorts "
            f"{figures['auto_sort_rate']:.0%} at threshold {figures['threshold']:.2f}; recorded in the model card"
        )
    return figures


if __name__ == "__main__":
    main()
