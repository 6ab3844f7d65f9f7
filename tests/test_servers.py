"""The integration-test servers themselves: a real PostgreSQL and a real S3, started and stopped here."""

from __future__ import annotations

import dataclasses
import socket
from urllib.parse import urlsplit

import obstore
import pytest
import sqlalchemy as sa
from obstore.exceptions import BaseError
from obstore.store import from_url

from tests.ports import free_ports
from tests.servers import S3Server, postgres_server, s3_server  # the fixtures come from conftest's pytest_plugins


def listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((parts.hostname, parts.port)) == 0


def test_postgres_table_round_trip(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    metadata = sa.MetaData()
    results = sa.Table(
        "results",
        metadata,
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("top3", sa.JSON, nullable=False),
    )
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(results.insert(), [{"key": "inbox/a.jpg", "probability": 0.97, "top3": ["Shirts", "Tops"]}])
        with engine.connect() as conn:
            row = conn.execute(sa.select(results)).one()
            version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        assert (row.key, row.probability, row.top3) == ("inbox/a.jpg", 0.97, ["Shirts", "Tops"])
        assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        assert version.startswith("15.")
    finally:
        engine.dispose()


def test_postgres_url_is_a_fresh_database(postgres_url: str, postgres_instance: str) -> None:
    assert postgres_url != postgres_instance
    engine = sa.create_engine(postgres_url)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_postgres_stops_even_on_error() -> None:
    with pytest.raises(KeyError), postgres_server() as url:
        assert listening(url)
        raise KeyError("the test failed")
    assert not listening(url)


def test_s3_put_list_get_copy_delete(s3_bucket: S3Server) -> None:
    store = s3_bucket.store()
    keys = [f"inbox/2026-01-0{day}/{n}.jpg" for day in (1, 2) for n in range(3)]
    for key in keys:
        obstore.put(store, key, key.encode())

    assert sorted(meta["path"] for meta in obstore.list(store, prefix="inbox/").collect()) == keys
    # offset= is S3's start-after: only keys after the watermark come back.
    after = obstore.list(store, prefix="inbox/", offset="inbox/2026-01-02/0.jpg").collect()
    assert sorted(meta["path"] for meta in after) == keys[4:]
    assert obstore.list_with_delimiter(store, prefix="inbox/")["common_prefixes"] == [
        "inbox/2026-01-01",
        "inbox/2026-01-02",
    ]
    assert bytes(obstore.get(store, keys[0]).bytes()) == keys[0].encode()

    obstore.copy(store, keys[0], "sorted/Shirts/0.jpg")
    assert bytes(obstore.get(store, "sorted/Shirts/0.jpg").bytes()) == keys[0].encode()
    obstore.delete(store, keys[0])
    with pytest.raises(FileNotFoundError):
        obstore.get(store, keys[0])


def test_s3_checks_credentials(s3_bucket: S3Server) -> None:
    wrong = dataclasses.replace(s3_bucket, secret_key="not-the-secret").store()
    with pytest.raises(BaseError):
        obstore.put(wrong, "inbox/x.jpg", b"x")


def test_from_url_reaches_the_server_through_aws_env(s3_env: S3Server) -> None:
    """How the batch job opens its store: a URL, with endpoint and credentials from AWS_* variables."""
    store = from_url(s3_env.url("runs"))
    obstore.put(store, "r1/summary.json", b"{}")
    assert [meta["path"] for meta in obstore.list(s3_env.store()).collect()] == ["runs/r1/summary.json"]


def test_s3_stops_even_on_error() -> None:
    with pytest.raises(KeyError), s3_server() as server:
        assert listening(server.endpoint)
        raise KeyError("the test failed")
    assert not listening(server.endpoint)


def test_s3_takes_a_write_in_more_fresh_buckets_than_a_test_run_makes() -> None:
    """Each bucket gets a volume of its own, and the server has (free disk / volume size) of them: at
    SeaweedFS's default 1 GiB volumes a full test run on a machine with tens of GB free ran out, and
    every later PUT answered 500. A server of its own, so the session's keeps its volumes."""
    with s3_server() as server:
        for index in range(150):
            bucket = server.create_bucket(f"many-{index:03d}")
            obstore.put(bucket.store(retry_config={"max_retries": 0}), "photo.jpg", b"\xff\xd8" + b"0" * 1000)


def test_the_five_ports_for_one_torchserve_are_distinct() -> None:
    """Picked one at a time, the kernel handed out one port twice in about 1,700 calls, and TorchServe's
    frontend could not bind its management API (CI, 7 December 2026)."""
    repeats = [ports for ports in (dataclasses.astuple(free_ports()) for _ in range(20_000)) if len(set(ports)) < 5]
    assert repeats == []
