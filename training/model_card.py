"""A markdown model card written next to every trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

KNOWN_CONFUSIONS = 10


def top_confusions(matrix: np.ndarray, classes: list[str], count: int) -> list[tuple[str, str, int, float]]:
    """(true, predicted, items, share of the true class) for the most frequent mistakes."""
    off_diagonal = matrix.copy()
    np.fill_diagonal(off_diagonal, 0)
    rows = matrix.sum(axis=1)
    order = np.dstack(np.unravel_index(np.argsort(-off_diagonal, axis=None), matrix.shape))[0][:count]
    return [
        (classes[t], classes[p], int(off_diagonal[t, p]), off_diagonal[t, p] / max(1, rows[t]))
        for t, p in order
        if off_diagonal[t, p] > 0
    ]


def _photos_lines(metrics: dict) -> list[str]:
    """Figures on labelled photos outside the catalogue (training.evaluate --photos --record)."""
    if "photos" not in metrics:
        return []
    photos = metrics["photos"]
    gap = photos["accuracy"] - metrics["accuracy"]
    return [
        f"- on {photos['images']} labelled photos of other products (`{photos['source']}`, {photos['left_out']} "
        f"of unknown categories left out): accuracy **{photos['accuracy']:.3f}** ({gap:+.3f} against the test "
        f"split), macro-F1 {photos['macro_f1']:.3f}"
    ]


def _returns_lines(metrics: dict) -> list[str]:
    """Figures on reviewed returns photos (training.returns), the photos the model is meant for."""
    if "reviewed_returns" not in metrics:
        return []
    returns = metrics["reviewed_returns"]
    precision = returns["auto_sort_precision"]
    return [
        f"- on {returns['images']} reviewed returns (the returns desk's decisions, test share of `--extra`): "
        f"accuracy **{returns['accuracy']:.3f}**; at the review threshold {returns['threshold']:.3f} it auto-sorts "
        f"**{returns['auto_sort_rate']:.1%}** of them"
        + (f" at precision {precision:.3f}" if precision is not None else "")
    ]


def _runtime_lines(metrics: dict) -> list[str]:
    """Which runtime serves the model and what it costs against PyTorch fp32 (training/export.py).
    The figures above are PyTorch fp32's."""
    if "runtime" not in metrics:
        return ["- served by: PyTorch fp32 (no runtime model exported); every figure here is PyTorch fp32's"]
    runtime = metrics["runtime"]
    fp32, int8 = runtime["test"]["fp32"], runtime["test"]["int8"]
    agreement = runtime["against_pytorch"]
    temperature = runtime["temperature"]
    served = f"{runtime['engine']} {runtime['precision']}" if runtime["shipped"] else "PyTorch fp32"
    return [
        f"- served by: **{served}**; the figures above are PyTorch fp32's. On the test split "
        f"{runtime['engine']} {runtime['precision']} has accuracy {int8['accuracy']:.4f} "
        f"(fp32 {fp32['accuracy']:.4f}), macro-F1 "
        f"{int8['macro_f1']:.4f} (fp32 {fp32['macro_f1']:.4f}), the same top-1 for "
        f"{agreement['top1_agreement']:.2%} of the images, probabilities at most "
        f"{agreement['max_abs_probability_difference']:.3f} apart; its temperature "
        f"{temperature[runtime['engine'] + '_int8']:.3f} (fp32 {temperature['pytorch_fp32']:.3f}) refitted on its own "
        "logits; the shipped rule sorts "
        f"{_sorted_text(int8['sorted'])} of test with it (fp32 {_sorted_text(fp32['sorted'])})"
    ]


def _sorted_text(report: dict) -> str:
    precision = report["sorted_precision"]
    return f"{report['sorted_share']:.1%}" + (f" at precision {precision:.3f}" if precision is not None else "")


def _sorting_lines(metrics: dict, meta: dict) -> list[str]:
    """How the shipped rule sorts (common/sorting.py): one threshold, per class, per class then the upper
    levels, on each set of photos the model was scored on; and where the thresholds came from."""
    if "sorting" not in metrics:
        return []
    calibration = metrics["calibration"]
    sets = [("test split", metrics["sorting"]["test"])]
    sets += [(f"photos `{metrics['photos']['source']}`", metrics["photos"]["sorting"])] if "photos" in metrics else []
    if "sorting" in metrics.get("reviewed_returns", {}):
        sets += [("reviewed returns", metrics["reviewed_returns"]["sorting"])]
    lines = [
        "",
        "## Sorting without a person",
        f"- temperature and thresholds fitted on **{calibration.get('source', 'catalogue')}** validation photos "
        f"({calibration.get('images', '?')} images; {calibration.get('reviewed_returns_in_val', 0)} reviewed returns "
        f"in the validation split) for >= {metrics['sorting']['target_precision']:.0%} precision at each level; "
        f"classes and groups predicted fewer than {metrics['sorting']['min_support']} times share their level's "
        "threshold",
    ]
    levels = meta.get("sorting", {}).get("levels", {})
    lines += [
        f"- {level} level: default threshold {values['default']:.3f}, {len(values['groups'])} with their own"
        for level, values in levels.items()
    ]
    lines += ["", "| photos | one threshold | per class | per class, then subcategory and master category |"]
    lines += ["|---|---|---|---|"]
    for name, reports in sets:
        level_shares = ", ".join(
            f"{level} {figures['share']:.1%}" for level, figures in reports["levels"]["levels"].items()
        )
        lines.append(
            f"| {name} | {_sorted_text(reports['single_threshold'])} | {_sorted_text(reports['per_class'])} | "
            f"{_sorted_text(reports['levels'])} ({level_shares}) |"
        )
    return lines


def rewrite_model_card(model_dir: Path) -> None:
    """The card again from the files beside it, e.g. after metrics.json gained figures."""
    args = json.loads((model_dir / "args.json").read_text())
    write_model_card(
        model_dir / "model_card.md",
        json.loads((Path(args["prepared"]) / "dataset.json").read_text()),
        json.loads((model_dir / "metrics.json").read_text()),
        json.loads((model_dir / "model.json").read_text()),
        json.loads((model_dir / "history.json").read_text()),
        args,
    )


def write_model_card(path: Path, dataset: dict, metrics: dict, meta: dict, history: list[dict], args: dict) -> None:
    classes = list(metrics["per_class"])
    calibration, auto = metrics["calibration"], metrics["auto_sort"]["test"]
    lines = [
        f"# Model card: refund-classifier {meta['version']}",
        "",
        f"A {meta['arch']} trained from scratch on {dataset['label_column']} labels of the Fashion Product "
        f"Images catalogue, {meta['preset']['width']}x{meta['preset']['height']} input, to route returned items.",
        "",
        "## Data",
        f"- source: `{dataset['data_root']}`; {len(classes)} classes with >= {dataset['min_images']} images",
        f"- split (by id hash, seed {dataset['seed']}): " + ", ".join(f"{k} {v}" for k, v in dataset["splits"].items()),
        f"- epochs run: {len(history)}",
        f"- left out: {len(dataset['dropped_classes'])} classes under the minimum, "
        f"{len(dataset['missing_images'])} missing and {len(dataset['corrupt_images'])} corrupt images",
        "",
        "## Results on the test split",
        f"- accuracy **{metrics['accuracy']:.3f}**, macro-F1 **{metrics['macro_f1']:.3f}** "
        f"({metrics['samples']} images)",
        f"- calibration: temperature {calibration['temperature']:.2f}, expected calibration error "
        f"{calibration['test_ece_before']:.3f} before, {calibration['test_ece_after']:.3f} after",
        f"- review threshold {auto['threshold']:.3f} (chosen on validation for >= "
        f"{metrics['auto_sort']['target_precision']:.0%} precision): auto-sorts {auto['auto_sort_rate']:.1%} of test "
        f"at precision {auto['auto_sort_precision'] or 0:.3f}",
        f"- training time {metrics['training_seconds'] / 60:.1f} min on the CPU",
        *_runtime_lines(metrics),
        *_photos_lines(metrics),
        *_returns_lines(metrics),
        *_sorting_lines(metrics, meta),
        "",
        "![confusion matrix](confusion_matrix.png) ![training curve](training_curve.png)",
        "",
        "| class | precision | recall | F1 | test images |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
        for name, m in sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"])
    ]
    lines += [
        "",
        "## Known confusions",
        "",
        "| true | predicted as | items | share of the class |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {true} | {predicted} | {items} | {share:.1%} |"
        for true, predicted, items, share in top_confusions(
            np.array(metrics["confusion_matrix"]), classes, KNOWN_CONFUSIONS
        )
    ]
    lines += [
        "",
        "## Limits",
        "- Trained on catalogue photos (plain background, centred product); photos of returns taken "
        "differently (hands, clutter, packaging) are out of distribution: watch the nightly drift report.",
        f"- Knows only these {len(classes)} categories; anything else is forced into one of them, "
        "usually with low confidence, and goes to review.",
        "- Look-alike categories (see the confusions above) are where auto-sorting is least reliable.",
        "",
        "## Training arguments",
        "",
        "```",
        *(f"{key}: {value}" for key, value in sorted(args.items())),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
