"""The weekly retraining (refund-train catalogue upload, refund-train retrain) on a local folder and on a
real S3 server, with the roll of the serving Deployment against an in-memory Kubernetes API (kmock)."""

from __future__ import annotations

import asyncio
import csv
import shutil
import zipfile
from pathlib import Path

import kmock as kmock_lib
import pytest
from batch_job.commands.export import COLUMNS
from kubernetes import client

from common.objectstore import list_objects, open_store, read_object
from common.registry import Registry
from tests.conftest import TINY_TRAINING
from tests.images import encode, product_image
from tests.test_scaler import DEPLOYMENTS, NAME, NAMESPACE, torchserve, use_kubeconfig
from training import registry, retrain
from training.__main__ import main

# The conftest dataset has 30 images a class: prepare's production minimum (100) would keep none.
TINY_PREPARE = "--min-images 10 --val-fraction 0.2 --test-fraction 0.2"
CATALOGUE_IMAGES = 90  # 3 classes of 30 usable images; the rare, missing and corrupt ones are left out
REVIEWED_ROWS = [("Discs", 201), ("Discs", 202), ("Boxes", 203), ("Boxes", 204), ("Wedges", 205), ("Wedges", 206)]


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_env").url("registry")


def exported(folder: Path, rows: list[tuple[str, int]]) -> Path:
    """What `refund-batch export-labels` writes: styles.csv with its COLUMNS, and images/r<id>.jpg."""
    (folder / "images").mkdir(parents=True)
    with (folder / "styles.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for category, result_id in rows:
            (folder / "images" / f"r{result_id}.jpg").write_bytes(encode(product_image(category, result_id)))
            row = [f"r{result_id}", category, category, "desk", "2026-12-01T10:00:00+00:00", f"inbox/{result_id}.jpg"]
            writer.writerow(row)
    return folder


def keys(location: str, prefix: str) -> list[str]:
    return sorted(stored.key for stored in list_objects(open_store(location), prefix))


def retrain_args(location: str, *arguments: str) -> list[str]:
    # One epoch: no assertion here depends on what the model learns (the first is promoted for want of a
    # production model, the second refused by --min-gain 1), and each retrain trains once.
    training = [*TINY_TRAINING, "--epochs", "1"]
    tiny = ["--prepare-args", TINY_PREPARE, f"--train-args={' '.join(training)}"]
    return ["retrain", "--registry", location, *tiny, *arguments]


def annotation(kmock: kmock_lib.KubernetesEmulator) -> str | None:
    template = kmock.objects[DEPLOYMENTS, NAMESPACE, NAME]["spec"]["template"]["metadata"]
    return template.get("annotations", {}).get(retrain.ANNOTATION)


@pytest.mark.asyncio
async def test_retrain_learns_from_an_export_promotes_and_rolls_then_a_refusal_changes_nothing(
    location, kaggle_dataset, kmock: kmock_lib.KubernetesEmulator, tmp_path, monkeypatch, capsys
) -> None:
    kmock.objects[DEPLOYMENTS, NAMESPACE, NAME] = torchserve(replicas=2, ready=2)
    use_kubeconfig(kmock, tmp_path, monkeypatch)
    roll = ["--roll-deployment", NAME, "--roll-namespace", NAMESPACE]
    assert main(["catalogue", "upload", "--data", str(kaggle_dataset), "--registry", location]) == 0
    export = exported(tmp_path / "export", REVIEWED_ROWS)

    assert await asyncio.to_thread(main, retrain_args(location, "--exported", str(export), *roll)) == 0

    out = capsys.readouterr().out
    models = Registry(open_store(location))
    first = models.state()["version"]
    assert first is not None and models.versions() == [first]
    assert (
        f"model {first} trained on {len(REVIEWED_ROWS)} reviewed returns ({CATALOGUE_IMAGES} catalogue images): "
        "promoted: no model in production yet" in out
    )
    for name in ("upload of the reviewed returns", "prepare", "train", "archive", "publish", "promote", "roll"):
        assert f"retrain: {name} done in " in out
    assert "epoch 1/1: loss" in out  # train's own progress lines
    (stamp,) = {key.split("/")[2] for key in keys(location, "datasets/reviewed/")}
    assert keys(location, f"datasets/reviewed/{stamp}/") == sorted(
        [f"datasets/reviewed/{stamp}/styles.csv"]
        + [f"datasets/reviewed/{stamp}/images/r{result_id}.jpg" for _, result_id in REVIEWED_ROWS]
    )
    assert registry.read_decision(models, first)["promoted"] is True
    assert annotation(kmock) == first
    assert len(kmock["patch", DEPLOYMENTS]) == 1

    # A week without new reviews, and a gate no model can pass: refused, published, production and pods unchanged.
    # export-labels exports every decision so far, so this week's export holds last week's rows again: the
    # training takes the newest export only, never the same photo twice.
    again = exported(tmp_path / "export-again", REVIEWED_ROWS)
    arguments = retrain_args(location, "--exported", str(again), "--min-gain", "1", *roll)
    assert await asyncio.to_thread(main, arguments) == 0

    out = capsys.readouterr().out
    (second,) = set(models.versions()) - {first}
    assert models.state()["version"] == first
    decision = registry.read_decision(models, second)
    assert decision["promoted"] is False
    assert f"{second} does not beat production {first}" in decision["reason"]
    assert f"model {second} trained on {len(REVIEWED_ROWS)} reviewed returns" in out
    assert f"refused: {decision['reason']}" in out
    (newest,) = {key.split("/")[2] for key in keys(location, "datasets/reviewed/")} - {stamp}
    assert f"the reviewed returns of datasets/reviewed/{newest}/, the newest export" in out

    # A week with no decision ever exported: nothing is uploaded.
    assert retrain.upload_export(open_store(location), exported(tmp_path / "empty-export", [])) is None
    assert {key.split("/")[2] for key in keys(location, "datasets/reviewed/")} == {stamp, newest}
    capsys.readouterr()
    assert annotation(kmock) == first
    assert len(kmock["patch", DEPLOYMENTS]) == 1  # no patch on refusal
    # The gate's decision in each version's model card, written once after the gate.
    cards = {
        version: read_object(models.store, models.key(version, "model_card.md")).decode() for version in (first, second)
    }
    assert "## Promotion gate\n\nPromoted by the weekly retraining" in cards[first]
    assert (
        "## Promotion gate\n\nRefused by the weekly retraining" in cards[second] and decision["reason"] in cards[second]
    )
    assert cards[first].startswith("# ")  # the card train wrote, with the section added
    # What the review page's nights view shows, newest first.
    shown = [(entry["version"], entry["promoted"], entry["reviewed_returns"]) for entry in models.retrainings(5)]
    assert shown == [(second, False, len(REVIEWED_ROWS)), (first, True, len(REVIEWED_ROWS))]

    assert main(["registry", "--registry", location, "list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith(first) and listing[0].endswith("promoted  <- production")
    assert listing[1].startswith(second) and listing[1].endswith("refused")


def test_without_a_catalogue_retrain_fails_clearly_after_saving_the_export(location, tmp_path, capsys):
    export = exported(tmp_path / "export", REVIEWED_ROWS[:2])

    assert main(retrain_args(location, "--exported", str(export))) == 2

    captured = capsys.readouterr()
    assert "no catalogue" in captured.err and "refund-train catalogue upload" in captured.err
    assert "retrain: download of the datasets failed after" in captured.out
    reviewed = keys(location, "datasets/reviewed/")
    assert len(reviewed) == 3 and reviewed[-1].endswith("/styles.csv")  # two images and the rows
    assert Registry(open_store(location)).versions() == []


def test_catalogue_upload_replaces_the_last_one_and_refuses_a_folder_without_styles(
    location, kaggle_dataset, tmp_path, capsys
):
    upload = ["catalogue", "upload", "--registry", location, "--data"]
    assert main([*upload, str(kaggle_dataset)]) == 0
    assert "datasets/catalogue/images/1001.jpg" in keys(location, "datasets/catalogue/")

    zipped = tmp_path / "zipped"
    zipped.mkdir()
    shutil.copy(kaggle_dataset / "styles.csv", zipped / "styles.csv")
    with zipfile.ZipFile(zipped / "images.zip", "w") as archive:
        archive.write(kaggle_dataset / "images" / "1001.jpg", "images/1001.jpg")
    assert main([*upload, str(zipped)]) == 0
    assert keys(location, "datasets/catalogue/") == ["datasets/catalogue/images.zip", "datasets/catalogue/styles.csv"]

    (tmp_path / "no-styles" / "images").mkdir(parents=True)
    assert main([*upload, str(tmp_path / "no-styles")]) == 2
    assert "has no styles.csv" in capsys.readouterr().err
    assert len(keys(location, "datasets/catalogue/")) == 2  # the last catalogue is still there


@pytest.mark.asyncio
async def test_a_refused_patch_says_which_rbac_is_missing(kmock: kmock_lib.KubernetesEmulator) -> None:
    kmock.objects[DEPLOYMENTS, NAMESPACE, NAME] = torchserve(replicas=1, ready=1)
    forbidden = kmock_lib.KubernetesError(status=403, reason="Forbidden", message="cannot patch deployments")
    kmock["patch", DEPLOYMENTS].override << forbidden
    api = client.AppsV1Api(client.ApiClient(client.Configuration(host=str(kmock.url).rstrip("/"))))
    with pytest.raises(retrain.RollError, match=rf"patch on deployments, resourceNames \[{NAME}\]"):
        await asyncio.to_thread(retrain.roll, api, NAMESPACE, NAME, "20261206.120000")


def test_decision_json_is_created_once(location):
    """The gate's first decision stays in the version's folder; later ones go to production.json only."""
    models = Registry(open_store(location))
    entry = {"candidate": "20261206.120000", "promoted": False, "reason": "first"}
    assert registry.record_decision(models, entry) is True
    assert registry.record_decision(models, {**entry, "promoted": True, "reason": "later"}) is False
    assert registry.read_decision(models, entry["candidate"]) == entry
