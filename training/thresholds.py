"""Choosing the sorting rule (common/sorting.py) on held-out photos, and scoring a rule on labelled photos.

Level by level, deepest first: each predicted class gets the lowest threshold at which the items it
sorts are right at least `target_precision` of the time (classes predicted fewer than `min_support`
times share the level's one threshold); the items a level leaves to a person are what the next level's
thresholds are chosen on. Every sorted item is thereby right at its level at the target rate on the
photos the rule was chosen on.
"""

from __future__ import annotations

import numpy as np

from common.sorting import LEVELS, LevelThresholds, SortingRule
from training.metrics import choose_review_threshold


def group_matrix(classes: list[str], rule: SortingRule, level: str) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """The groups at `level` and a classes × groups 0/1 matrix (probabilities @ it sums each group)."""
    groups = sorted({rule.group(name, level) for name in classes} - {()})
    index = {group: column for column, group in enumerate(groups)}
    membership = np.zeros((len(classes), len(groups)))
    for row, name in enumerate(classes):
        if rule.group(name, level):
            membership[row, index[rule.group(name, level)]] = 1.0
    return groups, membership


def choose_level(
    confidence: np.ndarray, predicted: np.ndarray, correct: np.ndarray, names: list, target: float, min_support: int
) -> LevelThresholds:
    """One level's thresholds: per predicted group where it has the support, else the level's own."""
    default = choose_review_threshold(confidence, correct, target)
    groups = {}
    for column, name in enumerate(names):
        mine = predicted == column
        if mine.sum() >= min_support:
            groups[name] = choose_review_threshold(confidence[mine], correct[mine], target)
    return LevelThresholds(default, groups)


def choose_rule(
    probabilities: np.ndarray,
    targets: np.ndarray,
    classes: list[str],
    tree: dict[str, list[str]],
    target_precision: float,
    min_support: int,
) -> SortingRule:
    """The rule for these calibrated probabilities (items × classes) and true class indices."""
    rule = SortingRule({}, tree)
    levels: dict[str, LevelThresholds] = {}
    open_items = np.ones(len(targets), dtype=bool)
    for level in LEVELS:
        names, membership = (
            ([(name,) for name in classes], np.eye(len(classes)))
            if level == "article"
            else group_matrix(classes, rule, level)
        )
        if not names:
            break
        sums = probabilities @ membership
        predicted, confidence = sums.argmax(1), sums.max(1)
        truth = membership[targets].argmax(1)
        reached = membership[targets].any(1)
        correct = (predicted == truth) & reached
        chosen = choose_level(
            confidence[open_items], predicted[open_items], correct[open_items], names, target_precision, min_support
        )
        levels[level] = chosen
        thresholds = np.array([chosen.of(name) for name in names])
        open_items &= confidence < thresholds[predicted]
    return SortingRule(levels, tree)


def sorting_report(
    probabilities: np.ndarray, targets: np.ndarray, classes: list[str], rule: SortingRule, route_levels: str
) -> dict:
    """What `rule.decide` does with these items: the share sorted at each level and how often each is right
    (an item is right when its true class lies under the path it was sorted to)."""
    counts = {level: 0 for level in LEVELS}
    right = {level: 0 for level in LEVELS}
    for row, target in zip(probabilities, targets, strict=True):
        decision = rule.decide(dict(zip(classes, row.tolist(), strict=True)), route_levels)
        if decision is None:
            continue
        counts[decision.level] += 1
        truth = rule.group(classes[target], decision.level)
        right[decision.level] += truth == decision.path
    items = max(1, len(targets))
    sorted_items = sum(counts.values())
    return {
        "route_levels": route_levels,
        "items": len(targets),
        "sorted_share": sorted_items / items,
        "sorted_precision": sum(right.values()) / sorted_items if sorted_items else None,
        "levels": {level: _share(counts[level], right[level], items) for level in LEVELS},
    }


def _share(sorted_items: int, right: int, items: int) -> dict:
    return {"share": sorted_items / items, "precision": right / sorted_items if sorted_items else None}


def sorting_reports(probabilities: np.ndarray, targets: np.ndarray, classes: list[str], rule: SortingRule) -> dict:
    """The three ways to sort, side by side: one threshold, one per class, per class then the upper levels."""
    single = SortingRule.single(rule.threshold)
    return {
        "single_threshold": sorting_report(probabilities, targets, classes, single, "article"),
        "per_class": sorting_report(probabilities, targets, classes, rule, "article"),
        "levels": sorting_report(probabilities, targets, classes, rule, "master"),
    }
