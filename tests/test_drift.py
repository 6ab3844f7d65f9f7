"""Drift warnings: a shifted category mix is warned about once a night is big enough to tell it from chance."""

from __future__ import annotations

import random
from collections import Counter

from batch_job.night.drift import drift_report, images_to_tell

CATEGORIES = [f"category-{i}" for i in range(40)]
PRIOR = {name: 1 / len(CATEGORIES) for name in CATEGORIES}


def night(images: int, weights: list[float], seed: int = 0) -> Counter:
    return Counter(random.Random(seed).choices(CATEGORIES, weights=weights, k=images))


def test_a_small_night_drawn_from_the_training_mix_is_not_called_drift():
    small = night(30, [1.0] * len(CATEGORIES))  # the demo's kind of night: a few photos, many categories
    report = drift_report(small, 0.8, PRIOR, [], threshold=0.25)
    assert report["psi_vs_training"] > 0.25  # sampling noise alone exceeds the threshold here...
    assert report["warnings"] == []  # ...so it is no sign of drift
    assert report["images_to_tell"] == images_to_tell(40, 0.25) > 30


def test_a_big_shifted_night_is_warned_about_and_a_big_unshifted_one_is_not():
    shifted = [10.0 if i < 5 else 1.0 for i in range(len(CATEGORIES))]
    big_shifted = drift_report(night(5000, shifted), 0.8, PRIOR, [], threshold=0.25)
    assert big_shifted["warnings"] and "differs from training" in big_shifted["warnings"][0]
    big_steady = drift_report(night(5000, [1.0] * len(CATEGORIES)), 0.8, PRIOR, [], threshold=0.25)
    assert big_steady["warnings"] == [] and big_steady["psi_vs_training"] < 0.05
