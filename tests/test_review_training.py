"""The loop back into training, on small generated data: reviewers' decisions -> export-labels ->
training.prepare --extra -> a small model -> its card and the promotion gate score reviewed returns."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import torch
from batch_job.__main__ import main as batch_main
from batch_job.ledger.results import Ledger
from batch_job.review.decisions import decide
from batch_job.settings import Settings

from common.objectstore import open_store
from tests.conftest import LEARNED, TINY_TRAINING
from tests.review_support import Doubtful, seed_night, utc
from training import archive, prepare, registry, train
from training.returns import score_returns

RETURNS_PER_CLASS = 20  # of Discs and Wedges; never of Boxes, the class the broken model below always answers


def reviewed_returns(tmp_path: Path, monkeypatch) -> Path:
    """A night's doubtful photos decided by a reviewer (one marked unusable), exported as a dataset."""
    settings = Settings(store=str(tmp_path / "store"), database_url=f"sqlite:///{tmp_path / 'r.db'}", route="move")
    items = [
        Doubtful(f"{category}-{n}.jpg", [(category, 0.45), ("Boxes", 0.3), ("Rare", 0.1)])
        for category in ("Discs", "Wedges")
        for n in range(RETURNS_PER_CLASS)
    ]
    ids = seed_night(settings, utc(2026, 12, 1), [*items, Doubtful("blurry.jpg", items[0].top3)], (60, 80))
    engine = Ledger(settings.database_url).engine
    for item, row_id in zip(items, ids[:-1], strict=True):
        assert decide(engine, row_id, "alice", item.top3[0][0]).won
    assert decide(engine, ids[-1], "alice", None).won  # unusable: never training data
    for name, value in {"STORE": settings.store, "DATABASE_URL": settings.database_url, "ROUTE": "move"}.items():
        monkeypatch.setenv(f"REFUND_{name}", value)
    out = tmp_path / "reviewed"
    assert batch_main(["export-labels", "--out", str(out)]) == 0
    return out


def test_reviewed_returns_flow_into_training_the_model_card_and_the_gate(kaggle_dataset, tmp_path, monkeypatch):
    exported = reviewed_returns(tmp_path, monkeypatch)
    with (exported / "styles.csv").open(newline="") as handle:
        labels = {row["id"]: row["articleType"] for row in csv.DictReader(handle)}
    assert len(labels) == 2 * RETURNS_PER_CLASS and set(labels.values()) == {"Discs", "Wedges"}

    plain, extended = tmp_path / "plain", tmp_path / "prepared"
    prepare.prepare(kaggle_dataset, plain, "articleType", min_images=10, val=0.2, test=0.2, seed=0)
    summary = prepare.prepare(
        kaggle_dataset, extended, "articleType", min_images=10, val=0.2, test=0.2, seed=0, extras=[exported]
    )
    [extra] = summary["extras"]
    in_test = extra["splits"]["test"]  # the hash split's share of them: 20 % on average
    assert extra["images"] == 2 * RETURNS_PER_CLASS and in_test >= 4
    manifest = (extended / "manifest.csv").read_text()
    # Adding extras moves no catalogue image between splits.
    assert set((plain / "manifest.csv").read_text().splitlines()) <= set(manifest.splitlines())
    assert manifest.count("extra1:r") == 2 * RETURNS_PER_CLASS

    production = tmp_path / "model"
    train.main(
        [
            *("--prepared", str(extended), "--out", str(production)),
            *TINY_TRAINING,
        ]
    )
    metrics = json.loads((production / "metrics.json").read_text())
    assert metrics["accuracy"] >= LEARNED  # the shapes were learned from catalogue and reviewed returns alike
    recorded = metrics["reviewed_returns"]
    assert recorded["images"] == in_test and recorded["accuracy"] >= 0.75
    card = (production / "model_card.md").read_text()
    assert f"on {in_test} reviewed returns" in card and f"accuracy **{recorded['accuracy']:.3f}**" in card

    # A candidate that answers Boxes whatever it sees: no reviewed return is a box.
    time.sleep(1.1)  # versions are UTC timestamps to the second
    candidate = tmp_path / "candidate"
    shutil.copytree(production, candidate)
    weights = torch.load(candidate / "model.pt", weights_only=True)
    weights["fc.weight"].zero_()
    weights["fc.bias"].copy_(torch.tensor([10.0, 0.0, 0.0]))  # classes sorted: Boxes first
    torch.save(weights, candidate / "model.pt")
    description = json.loads((candidate / "model.json").read_text())
    description["version"] = production.name + "-boxes"
    (candidate / "model.json").write_text(json.dumps(description))
    assert score_returns(candidate, extended)["accuracy"] == 0.0
    assert recorded["accuracy"] > 0.0  # the premise: production gets some reviewed returns right

    config = archive.HANDLERS / "model-config.yaml"
    mar = archive.archive(production, tmp_path / "mar", "refund-classifier", config, tmp_path / "b")
    candidate_mar = archive.archive(candidate, tmp_path / "mar-candidate", "refund-classifier", config, tmp_path / "c")
    models = registry.Registry(open_store(str(tmp_path / "registry")))
    first = registry.promote(models, registry.publish(models, production, mar), extended)
    assert first.promoted and first.candidate_scores["returns_images"] == in_test
    refused = registry.promote(models, registry.publish(models, candidate, candidate_mar), extended, min_gain=-1.0)
    assert not refused.promoted
    assert f"worse on {in_test} reviewed returns" in refused.reason and "accuracy 0.0000" in refused.reason
    assert models.state()["version"] == first.candidate
