"""Sorting to the level that is certain: the class tree from styles.csv, the thresholds training chooses
per class and per level, and the rule the nightly job applies (common/sorting.py)."""

from __future__ import annotations

import numpy as np
import pytest

from common.sorting import LevelThresholds, Sorted, SortingRule, rule_of
from common.styles import read_class_tree
from training.calibrate import choose_source
from training.thresholds import choose_rule, sorting_report

CLASSES = ["Casual Shoes", "Sports Shoes", "Watches", "Tshirts"]
TREE = {
    "Casual Shoes": ["Footwear", "Shoes"],
    "Sports Shoes": ["Footwear", "Shoes"],
    "Watches": ["Accessories", "Watches"],
    "Tshirts": ["Apparel", "Topwear"],
}


def test_the_class_tree_comes_from_styles_csv_each_label_under_its_most_common_parents(tmp_path):
    rows = [
        "1,Footwear,Shoes,Casual Shoes,Casual",
        "2,Footwear,Shoes,Casual Shoes,Casual",
        "3,Footwear,Sandal,Casual Shoes,Casual",  # a mis-filed row does not move the class
        "4,Accessories,Watches,Watches,Casual",
        "5,Apparel,,Tshirts,Casual",  # incomplete rows are left out
    ]
    styles = tmp_path / "styles.csv"
    styles.write_text("id,masterCategory,subCategory,articleType,usage\n" + "\n".join(rows) + "\n")
    assert read_class_tree(styles, "articleType") == {
        "Casual Shoes": ["Footwear", "Shoes"],
        "Watches": ["Accessories", "Watches"],
    }
    assert read_class_tree(styles, "subCategory") == {
        "Shoes": ["Footwear"],
        "Sandal": ["Footwear"],
        "Watches": ["Accessories"],
    }
    assert read_class_tree(styles, "masterCategory") == {}  # nothing above the top
    assert read_class_tree(styles, "usage") == {}  # not a taxonomy column
    (tmp_path / "flat.csv").write_text("id,articleType\n1,Watches\n")
    assert read_class_tree(tmp_path / "flat.csv", "articleType") == {}


def one_hot_rows(rows: list[tuple[int, dict[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """(target, {class index: probability}) rows as a probabilities matrix and targets."""
    probabilities = np.zeros((len(rows), len(CLASSES)))
    for row, (_, values) in enumerate(rows):
        for column, value in values.items():
            probabilities[row, column] = value
    return probabilities, np.array([target for target, _ in rows])


def test_each_class_gets_the_lowest_threshold_at_which_its_sorted_items_reach_the_target():
    rows = []
    # Watches: always right, even at 0.6. Tshirts: right only from 0.9 up; below, half are Casual Shoes.
    rows += [(2, {2: 0.6 + 0.01 * i, 3: 0.4 - 0.01 * i}) for i in range(40)]
    rows += [(3, {3: 0.9 + 0.002 * i, 2: 0.1 - 0.002 * i}) for i in range(40)]
    rows += [(3 if i % 2 else 0, {3: 0.7, 0: 0.3}) for i in range(40)]
    rows += [(0, {0: 0.95, 1: 0.05}) for _ in range(5)]  # Casual Shoes: too rare for its own threshold
    probabilities, targets = one_hot_rows(rows)
    rule = choose_rule(probabilities, targets, CLASSES, {}, target_precision=0.98, min_support=30)
    article = rule.levels["article"]
    assert article.groups[("Watches",)] == pytest.approx(0.6)
    assert article.groups[("Tshirts",)] == pytest.approx(0.9)
    assert ("Casual Shoes",) not in article.groups and rule.class_threshold("Casual Shoes") == article.default
    # One threshold for all has to wait for the hard class: it sorts fewer items at the same precision.
    single = sorting_report(probabilities, targets, CLASSES, SortingRule.single(article.default), "article")
    per_class = sorting_report(probabilities, targets, CLASSES, rule, "article")
    assert per_class["sorted_precision"] >= 0.98
    assert per_class["sorted_share"] > single["sorted_share"]


def test_an_item_whose_article_type_is_in_doubt_is_sorted_to_the_subcategory_that_is_certain():
    rows = []
    # Casual vs Sports Shoes: a coin toss between the two, but always shoes.
    rows += [(i % 2, {0: 0.5, 1: 0.45, 3: 0.05}) for i in range(60)]
    rows += [(3, {3: 0.99, 0: 0.01}) for _ in range(40)]
    probabilities, targets = one_hot_rows(rows)
    rule = choose_rule(probabilities, targets, CLASSES, TREE, target_precision=0.98, min_support=30)
    shoe = {"Casual Shoes": 0.5, "Sports Shoes": 0.45, "Watches": 0.0, "Tshirts": 0.05}
    assert rule.decide(shoe, route_levels="master") == Sorted("sub", ("Footwear", "Shoes"), pytest.approx(0.95))
    assert rule.decide(shoe) is None  # article level only, the default: a person decides
    report = sorting_report(probabilities, targets, CLASSES, rule, "master")
    assert report["levels"]["article"]["share"] == pytest.approx(0.4)
    assert report["levels"]["sub"] == {"share": pytest.approx(0.6), "precision": 1.0}
    assert report["sorted_share"] == 1.0 and report["sorted_precision"] == 1.0


def test_a_sorted_item_is_wrong_when_its_true_class_is_not_under_the_path_it_went_to():
    rule = SortingRule({"article": LevelThresholds(0.99), "sub": LevelThresholds(0.9)}, TREE)
    probabilities, targets = one_hot_rows([(2, {0: 0.5, 1: 0.45, 2: 0.05})])  # a watch called shoes
    report = sorting_report(probabilities, targets, CLASSES, rule, "master")
    assert report["levels"]["sub"] == {"share": 1.0, "precision": 0.0}


def test_an_operators_threshold_replaces_the_article_thresholds_only():
    rule = SortingRule({"article": LevelThresholds(0.9, {("Watches",): 0.5}), "sub": LevelThresholds(0.9)}, TREE)
    watch = {"Watches": 0.6, "Casual Shoes": 0.4}
    assert rule.decide(watch) == Sorted("article", ("Watches",), 0.6)
    assert rule.decide(watch, article_threshold=0.7) is None  # Watches' own 0.5 is overridden
    shoe = {"Casual Shoes": 0.5, "Sports Shoes": 0.45, "Watches": 0.05}
    assert rule.decide(shoe, article_threshold=0.4) == Sorted("article", ("Casual Shoes",), 0.5)
    assert rule.decide(shoe, "master", article_threshold=0.99) == Sorted(
        "sub", ("Footwear", "Shoes"), pytest.approx(0.95)
    )


def test_the_rule_travels_through_model_json_and_old_models_keep_their_one_threshold():
    rule = SortingRule(
        {
            "article": LevelThresholds(0.8, {("Watches",): 0.4}),
            "sub": LevelThresholds(0.9, {("Footwear", "Shoes"): 0.7}),
        },
        TREE,
    )
    assert rule_of({"sorting": rule.to_dict(), "review_threshold": 0.8}) == rule
    old = rule_of({"review_threshold": 0.75})
    assert old.threshold == 0.75 and old.class_threshold("Watches") == 0.75 and set(old.levels) == {"article"}
    assert old.decide({"Casual Shoes": 0.5, "Sports Shoes": 0.45}) is None


def test_calibration_moves_to_reviewed_returns_only_once_every_class_has_enough():
    classes = ["A", "B"]
    few = [(b"", 0)] * 25 + [(b"", 1)] * 5
    enough = [(b"", 0)] * 25 + [(b"", 1)] * 20
    assert choose_source("auto", few, classes, minimum=20) == "proxy"
    assert choose_source("auto", enough, classes, minimum=20) == "returns"
    assert choose_source("catalogue", enough, classes, minimum=20) == "catalogue"
    with pytest.raises(ValueError, match="no reviewed returns"):
        choose_source("returns", [], classes, minimum=20)
