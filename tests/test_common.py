"""What training, serving and the nightly report read alike: styles.csv labels and a model's class names."""

from __future__ import annotations

import json

import pytest
from batch_job.commands.report import read_labels

from common.classes import load_classes


def test_classes_come_in_output_order_whatever_the_key_order(tmp_path):
    names = {str(index): f"class-{index}" for index in range(12)}
    shuffled = dict(sorted(names.items(), key=lambda item: item[0]))  # "10" and "11" before "2"
    (tmp_path / "index_to_name.json").write_text(json.dumps(shuffled))
    assert load_classes(tmp_path / "index_to_name.json") == [f"class-{index}" for index in range(12)]


def test_the_report_takes_labels_as_training_does(tmp_path):
    """A row without a label is no label (it used to count as a labelled item outside the taxonomy)."""
    styles = tmp_path / "styles.csv"
    rows = ["id,gender,articleType,productDisplayName", "1,Men,Shirts,A shirt, with a comma", "2,Men,,No label"]
    styles.write_text("\n".join([*rows, "3", " 4 ,Women, Tops ,A top"]) + "\n")
    assert read_labels(styles, "articleType") == {"1": "Shirts", "4": "Tops"}


def test_a_missing_label_column_is_named(tmp_path):
    styles = tmp_path / "styles.csv"
    styles.write_text("id,gender,articleType\n1,Men,Shirts\n")
    with pytest.raises(ValueError, match="no column 'masterCategory'; columns are"):
        read_labels(styles, "masterCategory")
