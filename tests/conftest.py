"""Fixtures: a generated Kaggle-layout dataset, a tiny trained model, its .mar and a real TorchServe."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_job.ledger import migrate
from batch_job.settings import Settings
from sqlalchemy import create_engine

from common.classes import load_classes
from handlers import serve
from tests.images import SHAPES, encode, product_image
from tests.ports import free_port, free_ports
from training import archive, prepare, train

PER_CLASS = 30
# The tiny training every model of the tests gets. 10 epochs at 1e-3 learn the three shapes whatever the seed
# (test accuracy 0.89 on 18 images for seeds 0, 1 and 2); 3 epochs at 3e-3 stayed at chance (0.33) for seeds 1 and 2.
TINY_EPOCHS = 10
TINY_TRAINING = ("--epochs", str(TINY_EPOCHS), "--batch-size", "16", "--workers", "0", "--lr", "1e-3")
LEARNED = 0.7  # an accuracy the tiny model reaches with margin; chance is 1/3, a broken pipeline stays near it
# Real PostgreSQL 15 and SeaweedFS (S3) servers, started once per session when a test asks.
pytest_plugins = ["tests.servers"]


@pytest.fixture(scope="session")
def kaggle_dataset(tmp_path_factory) -> Path:
    """styles.csv + images/ as Kaggle ships them, with the flaws real data has."""
    root = tmp_path_factory.mktemp("kaggle")
    images = root / "images"
    images.mkdir()
    lines = ["id,masterCategory,subCategory,articleType,baseColour,usage,productDisplayName"]
    image_id = 1000
    for category in SHAPES:
        for seed in range(PER_CLASS):
            image_id += 1
            (images / f"{image_id}.jpg").write_bytes(encode(product_image(category, seed)))
            lines.append(f"{image_id},Apparel,Shapes,{category},Red,Casual,A {category.lower()}, with a comma")
    lines.append("2001,Apparel,Shapes,Rare,Red,Casual,Too few of these")  # class below the minimum
    (images / "2001.jpg").write_bytes(encode(product_image("Discs", 99)))
    lines.append("2002,Apparel,Shapes,Discs,Red,Casual,Listed but no image")  # missing file
    lines.append("2003,Apparel,Shapes,Discs,Red,Casual,Corrupt file")
    (images / "2003.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    lines.append("2004")  # malformed row
    (root / "styles.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def prepared(kaggle_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare.prepare(kaggle_dataset, out, "articleType", min_images=10, val=0.2, test=0.2, seed=0)
    return out


@pytest.fixture(scope="session")
def trained_model(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train.main(["--prepared", str(prepared), "--out", str(out), *TINY_TRAINING])
    return out


@pytest.fixture(scope="session")
def model_store(trained_model, prepared, tmp_path_factory) -> Path:
    """The tiny model's .mar as `refund-train archive` makes it: with the int8 runtime model exported."""
    store = tmp_path_factory.mktemp("model-store")
    archive.archive(
        trained_model,
        store,
        "refund-classifier",
        archive.HANDLERS / "model-config.yaml",
        tmp_path_factory.mktemp("mar-build"),
        prepared,
    )
    return store


@pytest.fixture(scope="session")
def torchserve_run_dir(tmp_path_factory) -> Path:
    """The run folder of the `torchserve` fixture (its logs are under logs/)."""
    return tmp_path_factory.mktemp("torchserve")


@pytest.fixture(scope="session")
def torchserve(model_store, torchserve_run_dir) -> serve.Ports:
    """A real TorchServe on free ports, serving the tiny model's .mar."""
    ports = free_ports()
    serve.start(model_store, torchserve_run_dir, ports)
    yield ports
    serve.stop(torchserve_run_dir)


@pytest.fixture(params=["sqlite+folder", "postgresql+s3"])
def backend(request, tmp_path):
    """Settings for one test's own store and ledger, given TorchServe's ports (None: nothing listens).

    Every batch-job test runs twice: on the embedded defaults (SQLite, a folder) and on the
    production parts (PostgreSQL 15, an S3 server), each fresh for the test. The PostgreSQL database is migrated
    first, as the chart's hook does before any night: the apps only check a server database's schema.
    """
    if request.param == "sqlite+folder":
        store, database_url = str(tmp_path / "store"), f"sqlite:///{tmp_path / 'results.db'}"
    else:
        store, database_url = request.getfixturevalue("s3_env").url(), request.getfixturevalue("postgres_url")
        engine = create_engine(database_url)
        migrate.upgrade(engine)
        engine.dispose()

    def settings_for(ports: serve.Ports | None, **overrides) -> Settings:
        values = {
            "store": store,
            "database_url": database_url,
            "torchserve_url": ports.inference_url if ports else f"http://127.0.0.1:{free_port()}",
        }
        return Settings(**{**values, **overrides})

    return settings_for


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh results store: an SQLite file, then a database on the real PostgreSQL 15."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'results.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def classes(trained_model) -> list[str]:
    return load_classes(trained_model / "index_to_name.json")
