"""The model registry and its promotion gate, on a local folder and on a real S3 server."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import threading
import time
from pathlib import Path

import batch_job.__main__
import pytest

from training import archive, evaluate, registry, train


@pytest.fixture(scope="session")
def worse_model(prepared, tmp_path_factory) -> tuple[Path, Path]:
    """A model barely trained (one step, tiny learning rate) and its .mar: clearly worse than trained_model."""
    time.sleep(1.1)  # versions are UTC timestamps to the second; this one must differ from trained_model's
    out = tmp_path_factory.mktemp("worse-model")
    arguments = ["--prepared", str(prepared), "--out", str(out), "--epochs", "1", "--max-per-class", "2"]
    train.main([*arguments, "--batch-size", "16", "--workers", "0", "--lr", "1e-7"])
    store = tmp_path_factory.mktemp("worse-model-store")
    config = archive.HANDLERS / "model-config.yaml"
    archive.archive(out, store, "refund-classifier", config, tmp_path_factory.mktemp("worse-mar-build"))
    return out, store / registry.MAR_NAME


@pytest.fixture(params=["folder", "s3"])
def location(request, tmp_path) -> str:
    if request.param == "folder":
        return str(tmp_path / "registry")
    return request.getfixturevalue("s3_env").url("registry")


def version_of(model_dir: Path) -> str:
    return json.loads((model_dir / "model.json").read_text())["version"]


def cli(location: str, *arguments: str) -> int:
    return registry.main(["--registry", location, *arguments])


def fetch_model(location: str, version: str, out: Path) -> int:
    """The serving pods' init container: the batch image's command, which has the registry code and no torch."""
    return batch_job.__main__.main(["fetch-model", version, "--registry", location, "--out", str(out)])


def test_the_gate_refuses_a_worse_model_promotes_a_better_one_and_rolls_back(
    location, trained_model, model_store, worse_model, prepared, tmp_path, capsys
):
    worse_dir, worse_mar = worse_model
    better, worse = version_of(trained_model), version_of(worse_dir)
    scores = {
        version: evaluate.evaluate(model_dir, evaluate.split_items(model_dir, prepared, "test"))["macro_f1"]
        for version, model_dir in ((better, trained_model), (worse, worse_dir))
    }
    assert scores[better] > scores[worse], scores  # the premise of this test

    assert cli(location, "publish", "--model", str(worse_dir), "--mar", str(worse_mar)) == 0
    assert cli(location, "promote", "--prepared", str(prepared)) == 0  # latest; nothing in production yet
    assert "promoted: no model in production yet" in capsys.readouterr().out
    mar = model_store / registry.MAR_NAME
    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(mar)) == 0
    assert cli(location, "promote", better, "--prepared", str(prepared)) == 0
    out = capsys.readouterr().out
    assert f"promoted: {better} beats production {worse}" in out
    assert f"macro_f1 {scores[better]:.4f} vs {scores[worse]:.4f}" in out

    # The worse model again: refused, with the figures, and production stays.
    assert cli(location, "promote", worse, "--prepared", str(prepared)) == 1
    assert f"refused: {worse} does not beat production {better}" in capsys.readouterr().out
    store = registry.Registry(registry.open_store(location))
    assert store.state()["version"] == better
    assert [entry["promoted"] for entry in store.state()["history"]] == [True, True, False]

    assert fetch_model(location, "production", tmp_path / "serve") == 0
    assert (tmp_path / "serve" / registry.MAR_NAME).read_bytes() == mar.read_bytes()
    assert cli(location, "rollback") == 0
    assert f"production is {worse} again (was {better})" in capsys.readouterr().out
    assert fetch_model(location, "production", tmp_path / "serve") == 0
    assert (tmp_path / "serve" / registry.MAR_NAME).read_bytes() == worse_mar.read_bytes()
    assert cli(location, "rollback") == 2
    assert "nothing to roll back to" in capsys.readouterr().err

    assert cli(location, "list") == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listing] == sorted([better, worse])
    assert [line.endswith("<- production") for line in listing] == [False, True]  # worse is older


def test_publish_refuses_an_incomplete_model_a_mar_of_another_version_and_a_second_upload_of_a_version(
    location, trained_model, model_store, worse_model, tmp_path, capsys
):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(trained_model, incomplete)
    (incomplete / "model.pt").unlink()
    mar = model_store / registry.MAR_NAME
    assert cli(location, "publish", "--model", str(incomplete), "--mar", str(mar)) == 2
    error = capsys.readouterr().err
    assert "missing" in error and "model.pt" in error
    assert cli(location, "promote", "--prepared", "var/data") == 2
    assert "holds no model" in capsys.readouterr().err
    other_model, other_mar = worse_model
    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(other_mar)) == 2
    assert f"holds version {version_of(other_model)}, " in capsys.readouterr().err

    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(mar)) == 0
    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(mar)) == 2
    assert "already published" in capsys.readouterr().err
    assert fetch_model(location, "no-such-version", tmp_path / "serve") == 2
    assert "no version 'no-such-version'" in capsys.readouterr().err
    assert fetch_model(location, "production", tmp_path / "serve") == 2


def resplit(prepared: Path, out: Path, edit) -> Path:
    """A copy of the prepared dataset with its manifest rows or dataset.json changed by `edit`."""
    shutil.copytree(prepared, out)
    lines = (out / "manifest.csv").read_text().splitlines()
    dataset = json.loads((out / "dataset.json").read_text())
    lines = edit(lines, dataset)
    (out / "manifest.csv").write_text("\n".join(lines) + "\n")
    (out / "dataset.json").write_text(json.dumps(dataset))
    return out


def test_the_gate_refuses_a_test_split_other_than_the_candidates_and_other_classes_with_exit_2(
    location, trained_model, model_store, prepared, tmp_path, capsys
):
    mar = model_store / registry.MAR_NAME
    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(mar)) == 0

    def test_rows_become_training_rows(lines, dataset):
        moved = [line for line in lines if line.endswith(",test")][:4]
        return [line.replace(",test", ",train") if line in moved else line for line in lines]

    other_split = resplit(prepared, tmp_path / "other-split", test_rows_become_training_rows)
    assert cli(location, "promote", "--prepared", str(other_split)) == 2
    assert "is not the one the candidate was evaluated on" in capsys.readouterr().err

    def other_classes(lines, dataset):
        dataset["classes"] = [*dataset["classes"][:-1], "Cones"]
        return lines

    renamed = resplit(prepared, tmp_path / "other-classes", other_classes)
    assert cli(location, "promote", "--prepared", str(renamed)) == 2
    assert "other classes" in capsys.readouterr().err
    assert registry.Registry(registry.open_store(location)).state()["version"] is None  # nothing decided


def test_two_promotions_at_once_cannot_lose_one(location, trained_model, model_store, worse_model, prepared, capsys):
    """Both read production.json; the one that writes second finds it changed and writes nothing."""
    worse_dir, worse_mar = worse_model
    assert cli(location, "publish", "--model", str(worse_dir), "--mar", str(worse_mar)) == 0
    assert cli(location, "publish", "--model", str(trained_model), "--mar", str(model_store / registry.MAR_NAME)) == 0
    store = registry.Registry(registry.open_store(location))
    slow_state, slow_read_at = store.read_state()  # a promotion that is still scoring its models

    assert cli(location, "promote", version_of(worse_dir), "--prepared", str(prepared)) == 0  # the fast one
    slow_state["version"] = version_of(trained_model)
    with pytest.raises(registry.RegistryError, match="production changed while this command ran"):
        store.save_state(slow_state, slow_read_at)
    assert store.state()["version"] == version_of(worse_dir)  # the fast promotion is kept

    fresh_state, fresh_read_at = store.read_state()
    assert cli(location, "promote", version_of(trained_model), "--prepared", str(prepared)) == 0
    with pytest.raises(registry.RegistryError):  # an update against a stale ETag, not only a create
        store.save_state(fresh_state, fresh_read_at)
    history = store.state()["history"]
    assert [entry["candidate"] for entry in history] == [version_of(worse_dir), version_of(trained_model)]


def test_two_uploads_of_one_version_at_once_publish_it_once(location, trained_model, model_store):
    mar = model_store / registry.MAR_NAME
    barrier = threading.Barrier(2)

    def publish() -> int:
        barrier.wait()
        return cli(location, "publish", "--model", str(trained_model), "--mar", str(mar))

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(lambda _: publish(), range(2)))
    assert codes == [0, 2]
    store = registry.Registry(registry.open_store(location))
    assert store.versions() == [version_of(trained_model)]
