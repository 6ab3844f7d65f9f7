"""Sorting to the level that is certain, end to end: a model.json whose `sorting` rule the TorchServe handler
describes, the nightly job deciding with it (article type, else subcategory, else master category, else
review), the level in the results store, the store's folders, the summary, the report and the night's metrics;
`--route-levels article`; a model trained before rules existed. Real TorchServe, both backends."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import obstore
import pytest
from batch_job.ledger.results import Ledger
from batch_job.ledger.schema import NEEDS_REVIEW, OK
from batch_job.night.client import Prediction, TorchServeClient
from batch_job.night.nightly import nightly
from batch_job.settings import Settings

from common.objectstore import open_store
from common.sorting import LevelThresholds, SortingRule
from handlers import serve
from tests.images import SHAPES, encode, product_image
from tests.ports import free_ports
from tests.test_batch_job import DAY, cli
from training import archive

pytestmark = pytest.mark.integration
# A class tree over the tiny model's shapes, one class per subcategory, and thresholds that make the outcome
# follow the top class alone: a disc is sorted as itself (its class threshold 0), a box only as its subcategory
# Flat › Square (threshold 0; its class needs more than certainty), a wedge nowhere (every threshold above 1).
TREE = {"Discs": ["Flat", "Round"], "Boxes": ["Flat", "Square"], "Wedges": ["Pointed", "Triangles"]}
NEVER = 1.01
RULE = SortingRule(
    {
        "article": LevelThresholds(NEVER, {("Discs",): 0.0}),
        "sub": LevelThresholds(NEVER, {("Flat", "Square"): 0.0}),
        "master": LevelThresholds(NEVER),
    },
    TREE,
)
# The photo of each top class, named for where the rule sends it.
PHOTOS = {"Discs": "article.jpg", "Boxes": "sub.jpg", "Wedges": "review.jpg"}


def served_copy(trained_model: Path, folder: Path, change) -> Path:
    """The tiny model with its model.json changed by `change`, archived as refund-classifier.mar; the store."""
    model = folder / "model"
    shutil.copytree(trained_model, model)
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps(change(meta)))
    archive.archive(model, folder / "store", "refund-classifier", archive.HANDLERS / "model-config.yaml", folder / "b")
    return folder / "store"


@pytest.fixture(scope="module")
def levels_torchserve(trained_model, tmp_path_factory) -> serve.Ports:
    """TorchServe serving the tiny model with RULE in its model.json."""
    store = served_copy(
        trained_model, tmp_path_factory.mktemp("levels"), lambda meta: {**meta, "sorting": RULE.to_dict()}
    )
    run_dir = tmp_path_factory.mktemp("levels-ts")
    ports = serve.start(store, run_dir, free_ports())
    yield ports
    serve.stop(run_dir)


def classify(ports: serve.Ports, photo: bytes) -> Prediction:
    client = TorchServeClient(ports.inference_url, "refund-classifier", 1, 60.0, 0)
    try:
        answer = client.classify(photo)
    finally:
        client.close()
    assert isinstance(answer, Prediction), answer
    return answer


def photo_per_top_class(ports: serve.Ports) -> dict[str, tuple[bytes, Prediction]]:
    """For each class, a photo the served model ranks it first for (the tiny model learnt the shapes: the first
    few seeds of each shape give every class)."""
    found: dict[str, tuple[bytes, Prediction]] = {}
    for seed in range(8):
        for shape in SHAPES:
            photo = encode(product_image(shape, seed))
            answer = classify(ports, photo)
            found.setdefault(answer.category, (photo, answer))
    assert set(found) == set(SHAPES), f"the tiny model ranked first only {sorted(found)}"
    return found


def put(settings: Settings, photos: dict[str, tuple[bytes, Prediction]]) -> None:
    store = open_store(settings.store)
    for category, (photo, _) in photos.items():
        obstore.put(store, f"inbox/{DAY}/{PHOTOS[category]}", photo)


def stored(settings: Settings, prefix: str) -> list[str]:
    return sorted(meta["path"] for page in obstore.list(open_store(settings.store), prefix=prefix) for meta in page)


def by_name(settings: Settings) -> dict:
    return {row.object_key.rsplit("/", 1)[1]: row for row in Ledger(settings.database_url).results()}


def test_a_night_sorts_each_photo_to_the_level_that_is_certain(backend, levels_torchserve):
    photos = photo_per_top_class(levels_torchserve)
    settings = backend(levels_torchserve, route="copy", route_levels="master")
    put(settings, photos)

    night = nightly(settings)

    assert night.stats.model.rule == RULE  # what the handler describes is the model.json's rule
    rows = by_name(settings)
    article, sub, review = rows["article.jpg"], rows["sub.jpg"], rows["review.jpg"]
    assert (article.status, article.sort_level, article.sorted_as) == (OK, "article", "Discs")
    assert (sub.status, sub.category, sub.sort_level, sub.sorted_as) == (OK, "Boxes", "sub", "Flat/Square")
    assert (review.status, review.sort_level, review.sorted_as) == (NEEDS_REVIEW, None, None)
    # What the review page offers first: the likeliest subcategory, summed over its classes, and its top-3 classes.
    wedges = photos["Wedges"][1]
    assert review.offered == {
        "level": "sub",
        "path": ["Pointed", "Triangles"],
        "probability": pytest.approx(wedges.probabilities["Wedges"]),
        "categories": ["Wedges"],
    }
    assert article.offered is None and sub.offered is None
    assert stored(settings, "sorted/") == [f"sorted/Discs/{DAY}/article.jpg", f"sorted/Flat/Square/{DAY}/sub.jpg"]
    assert stored(settings, "review/") == [f"review/{DAY}/review.jpg"]

    third = pytest.approx(1 / 3)
    assert night.summary["route_levels"] == "master"
    assert night.summary["sorted_by_level"] == {
        "article": {"items": 1, "share": third},
        "sub": {"items": 1, "share": third},
        "master": {"items": 0, "share": 0.0},
        "review": {"items": 1, "share": third},
    }
    html = bytes(obstore.get(open_store(settings.store), f"{night.folder}/report.html").bytes()).decode()
    levels = html.split('<table id="levels">')[1].split("</table>")[0]
    cells = re.findall(r"<tr><td>([^<]*)</td><td class=\"n\">(\d+)</td><td class=\"n\">([^<]*)</td></tr>", levels)
    assert [(name.split(" (")[0], items, share) for name, items, share in cells] == [
        ("article type", "1", "33%"),
        ("subcategory", "1", "33%"),
        ("master category", "0", "0%"),
        ("review", "1", "33%"),
    ]
    manifest = bytes(obstore.get(open_store(settings.store), f"{night.folder}/manifest.jsonl").bytes()).decode()
    assert {json.loads(line)["sorted_as"] for line in manifest.splitlines()} == {"Discs", "Flat/Square", None}


def test_route_levels_article_sends_what_only_a_subcategory_is_certain_of_to_review(backend, levels_torchserve):
    photos = photo_per_top_class(levels_torchserve)
    settings = backend(levels_torchserve, route="move", route_levels="article")
    put(settings, photos)

    done = cli(settings)  # the setting as the CronJob gives it: REFUND_ROUTE_LEVELS=article

    assert done.returncode == 0, done.stderr
    rows = by_name(settings)
    assert (rows["article.jpg"].status, rows["article.jpg"].sort_level) == (OK, "article")
    sub = rows["sub.jpg"]
    assert (sub.status, sub.sort_level) == (NEEDS_REVIEW, None)
    assert sub.offered["path"] == ["Flat", "Square"] and sub.offered["categories"] == ["Boxes"]
    assert rows["review.jpg"].status == NEEDS_REVIEW
    assert stored(settings, "sorted/") == [f"sorted/Discs/{DAY}/article.jpg"]
    assert stored(settings, "review/") == [f"review/{DAY}/review.jpg", f"review/{DAY}/sub.jpg"]


def test_a_model_without_a_sorting_rule_sorts_with_its_one_threshold_as_before(
    backend, levels_torchserve, trained_model, tmp_path
):
    photos = {seed: encode(product_image(list(SHAPES)[seed % 3], 300 + seed)) for seed in range(6)}
    # A threshold in the widest gap between the photos' probabilities (the weights are the same), so that both
    # outcomes happen and no rounding decides one.
    probabilities = sorted(classify(levels_torchserve, photo).probability for photo in photos.values())
    gap, below = max((probabilities[i + 1] - probabilities[i], i) for i in range(len(probabilities) - 1))
    threshold = probabilities[below] + gap / 2
    assert gap > 1e-3, probabilities

    def before_rules(meta: dict) -> dict:
        return {**{key: value for key, value in meta.items() if key != "sorting"}, "review_threshold": threshold}

    run_dir = tmp_path / "ts"
    ports = serve.start(served_copy(trained_model, tmp_path, before_rules), run_dir, free_ports())
    try:
        settings = backend(ports, route="copy")
        store = open_store(settings.store)
        for seed, photo in photos.items():
            obstore.put(store, f"inbox/{DAY}/{seed}.jpg", photo)
        night = nightly(settings)
    finally:
        serve.stop(run_dir)

    assert night.stats.model.rule == SortingRule.single(threshold)
    rows = Ledger(settings.database_url).results()
    assert sorted(row.status for row in rows) == [NEEDS_REVIEW] * (below + 1) + [OK] * (len(photos) - below - 1)
    for row in rows:
        assert row.status == (OK if row.probability >= threshold else NEEDS_REVIEW)
        assert (row.sort_level, row.sorted_as) == (("article", row.category) if row.status == OK else (None, None))
        assert row.offered is None  # no class tree: nothing above the article type to offer
    assert stored(settings, "sorted/") == sorted(
        f"sorted/{row.category}/{row.object_key.removeprefix('inbox/')}" for row in rows if row.status == OK
    )
    assert night.summary["review_threshold"] == threshold and not night.summary["per_class_thresholds"]
    levels = night.summary["sorted_by_level"]
    assert [levels[level]["items"] for level in ("article", "sub", "master", "review")] == [5 - below, 0, 0, below + 1]
