"""In-process evaluation: on a prepared split and on labelled photos, recorded in the model card."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import LEARNED
from training import evaluate


def test_promotion_needs_the_same_classes(trained_model, tmp_path):
    other = tmp_path / "prepared"
    other.mkdir()
    (other / "dataset.json").write_text(json.dumps({"classes": ["Tshirts", "Tops"], "data_root": str(tmp_path)}))
    with pytest.raises(ValueError, match="other classes"):
        evaluate.split_items(trained_model, other, "test")


def test_evaluate_on_labelled_photos_leaves_out_unknown_missing_and_corrupt_ones(trained_model, kaggle_dataset):
    items, left_out = evaluate.photo_items(trained_model, kaggle_dataset, "articleType")
    assert (len(items), left_out) == (90, 3)  # the "Rare" class, a missing and a corrupt image
    report = evaluate.main(["--model", str(trained_model), "--photos", str(kaggle_dataset)])
    assert sum(map(sum, report["confusion_matrix"])) == 90
    assert report["accuracy"] >= LEARNED  # labels matched to the right photos, preprocessed as in training
    assert min(report["per_class"][name]["recall"] for name in report["per_class"]) >= 0.5


def test_figures_on_labelled_photos_are_recorded_in_the_model_card(trained_model, kaggle_dataset, tmp_path):
    model = shutil.copytree(trained_model, tmp_path / "model")
    evaluate.main(["--model", str(model), "--photos", str(kaggle_dataset), "--record"])
    photos = json.loads((model / "metrics.json").read_text())["photos"]
    assert (photos["images"], photos["left_out"]) == (90, 3)
    assert photos["accuracy"] >= LEARNED
    card = (model / "model_card.md").read_text()
    assert f"on 90 labelled photos of other products (`{kaggle_dataset}`" in card
    assert f"accuracy **{photos['accuracy']:.3f}**" in card
