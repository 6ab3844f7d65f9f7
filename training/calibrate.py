"""Calibration and the sorting rule, fitted where the model works: on photos of returns.

    refund-train calibrate --model var/model --prepared var/data                    # source auto
    refund-train calibrate --model var/model --prepared var/data --source catalogue

The temperature and every threshold of the sorting rule (common/sorting.py) are fitted on the
validation split, from one of these sources:

- `returns`: the desk's reviewed returns in the validation split (`prepare --extra`), the photos
  the model is for. `auto` takes them when every class has at least `--min-returns-per-class`.
- `proxy`: until then, the catalogue's validation photos passed through training's augmentation
  (other backdrops, crops, colour shifts), a stand-in for photos taken at a returns desk, on
  which a model fitted on clean catalogue shots would be overconfident.
- `catalogue`: the catalogue's validation photos as they are.

Training runs this at its end; run it alone to refit a trained model (e.g. once reviewed returns
have accumulated), which rewrites model.json, metrics.json and the model card. The source used is
recorded in both.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from common.classes import load_classes
from common.sorting import SortingRule
from handlers.network import load_model
from handlers.presets import ClassificationPresetEval, PresetConfig
from training.catalog import PreparedSource
from training.dataset import EncodedImages, load_split
from training.evaluate import predict_logits, record_photos, split_items
from training.metrics import auto_sort_report
from training.model_card import rewrite_model_card
from training.presets import ClassificationPresetTrain
from training.returns import record_returns
from training.thresholds import choose_rule, sorting_reports

SOURCES = ("auto", "returns", "proxy", "catalogue")
PROXY_SEED = 0  # the proxy's augmentation is drawn the same way every time: refits are comparable


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): one scalar that makes softmax probabilities honest."""
    logits, targets = logits.clone(), targets.clone()  # leave inference mode for autograd
    log_temperature = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_temperature], lr=0.1, max_iter=100)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_temperature.exp(), targets)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_temperature.detach().exp())


def expected_calibration_error(probabilities: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in itertools.pairwise(edges):
        in_bin = (confidence > low) & (confidence <= high)
        if in_bin.any():
            error += in_bin.float().mean().item() * abs(
                confidence[in_bin].mean().item() - correct[in_bin].mean().item()
            )
    return error


def validation_items(prepared: Path, classes: list[str], reviewed_returns: bool) -> list[tuple[bytes, int]]:
    """The validation split's reviewed returns (--extra photos), or its catalogue photos."""
    source = PreparedSource(json.loads((prepared / "dataset.json").read_text()))
    return load_split(prepared, "val", classes, source, None, reviewed_returns)


def choose_source(requested: str, returns: list[tuple[bytes, int]], classes: list[str], minimum: int) -> str:
    """`auto`: reviewed returns once every class has `minimum` of them, else the proxy."""
    if requested == "returns" and not returns:
        raise ValueError("--source returns: the validation split holds no reviewed returns (prepare --extra)")
    if requested != "auto":
        return requested
    per_class = Counter(label for _, label in returns)
    return "returns" if all(per_class[index] >= minimum for index in range(len(classes))) else "proxy"


@torch.inference_mode()
def calibration_logits(
    model: torch.nn.Module, prepared: Path, classes: list[str], preset: PresetConfig, source: str, minimum: int
) -> tuple[torch.Tensor, torch.Tensor, str, int]:
    """Logits and labels of the calibration photos, the source they came from and how many reviewed
    returns the validation split holds."""
    returns = validation_items(prepared, classes, reviewed_returns=True)
    used = choose_source(source, returns, classes, minimum)
    items = returns if used == "returns" else validation_items(prepared, classes, reviewed_returns=False)
    transform = ClassificationPresetTrain(preset) if used == "proxy" else ClassificationPresetEval(preset)
    with torch.random.fork_rng():
        torch.manual_seed(PROXY_SEED)
        logits, targets = predict_logits(model, DataLoader(EncodedImages(items, transform), batch_size=64))
    return logits, targets, used, len(returns)


def fit(
    calibration: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    classes: list[str],
    tree: dict[str, list[str]],
    target_precision: float,
    min_support: int,
) -> tuple[float, SortingRule, dict]:
    """The temperature and the sorting rule fitted on the calibration logits, and the test split's figures."""
    temperature = fit_temperature(*calibration)
    calibrated = (calibration[0] / temperature).softmax(1).numpy()
    rule = choose_rule(calibrated, calibration[1].numpy(), classes, tree, target_precision, min_support)
    test_logits, test_targets = test
    test_probabilities = (test_logits / temperature).softmax(1)
    confidence, predicted = test_probabilities.max(1)
    figures = {
        "calibration": {
            "temperature": temperature,
            "test_ece_before": expected_calibration_error(test_logits.softmax(1), test_targets),
            "test_ece_after": expected_calibration_error(test_probabilities, test_targets),
        },
        "auto_sort": {
            "target_precision": target_precision,
            "threshold": rule.threshold,
            "test": auto_sort_report(confidence.numpy(), (predicted == test_targets).numpy(), rule.threshold),
        },
        "sorting": {
            "target_precision": target_precision,
            "min_support": min_support,
            "test": sorting_reports(test_probabilities.numpy(), test_targets.numpy(), classes, rule),
        },
    }
    return temperature, rule, figures


def calibrate(
    model: torch.nn.Module,
    prepared: Path,
    classes: list[str],
    preset: PresetConfig,
    test: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
) -> tuple[SortingRule, dict]:
    """Fits on the source `args.source` names; the figures say which source it was."""
    dataset = json.loads((prepared / "dataset.json").read_text())
    logits, targets, used, returns = calibration_logits(
        model, prepared, classes, preset, args.source, args.min_returns_per_class
    )
    _, rule, figures = fit(
        (logits, targets), test, classes, dataset.get("class_tree", {}), args.review_precision, args.min_support
    )
    figures["calibration"] |= {"source": used, "images": len(targets), "reviewed_returns_in_val": returns}
    return rule, figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The calibration settings, shared by `train` and `calibrate`."""
    parser.add_argument(
        "--review-precision",
        type=float,
        default=0.98,
        help="items sorted without a person must be this precise on the calibration photos (default: 0.98)",
    )
    parser.add_argument(
        "--source", choices=SOURCES, default="auto", help="what the calibration is fitted on (default: auto)"
    )
    parser.add_argument(
        "--min-returns-per-class",
        type=int,
        default=20,
        help="reviewed returns every class needs in the validation split before auto fits on them (default: 20)",
    )
    parser.add_argument(
        "--min-support",
        type=int,
        default=400,
        help="calibration photos a class (or group) must be predicted for to get its own threshold (default: 400)",
    )


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("var/model"), help="(default: var/model)")
    parser.add_argument("--prepared", type=Path, default=Path("var/data"), help="(default: var/data)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    model_info = json.loads((args.model / "model.json").read_text())
    classes = load_classes(args.model / "index_to_name.json")
    preset = PresetConfig.from_dict(model_info["preset"])
    model = load_model(args.model)
    test = predict_logits(
        model,
        DataLoader(
            EncodedImages(split_items(args.model, args.prepared, "test"), ClassificationPresetEval(preset)),
            batch_size=64,
        ),
    )
    rule, figures = calibrate(model, args.prepared, classes, preset, test, args)
    temperature = figures["calibration"]["temperature"]
    model_info |= {"temperature": temperature, "review_threshold": rule.threshold, "sorting": rule.to_dict()}
    (args.model / "model.json").write_text(json.dumps(model_info, indent=1))
    metrics = json.loads((args.model / "metrics.json").read_text()) | figures
    (args.model / "metrics.json").write_text(json.dumps(metrics, indent=1))
    rewrite_model_card(args.model)
    # Figures measured at the old thresholds would now describe a rule the model no longer ships.
    if "photos" in metrics:
        label_column = json.loads((args.prepared / "dataset.json").read_text())["label_column"]
        record_photos(args.model, Path(metrics["photos"]["source"]), label_column)
    record_returns(args.model, args.prepared)
    levels = figures["sorting"]["test"]["levels"]
    print(
        f"{args.model}: fitted on {figures['calibration']['source']} ({figures['calibration']['images']} photos), "
        f"temperature {temperature:.2f}; on test it sorts {levels['sorted_share']:.1%} at precision "
        f"{levels['sorted_precision'] or 0:.3f}; rewrote model.json, metrics.json and the model card"
    )
    return figures


if __name__ == "__main__":
    main()
