"""The nightly job against a real TorchServe, a real folder store and a real SQLite ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from batch_job import job
from batch_job.__main__ import main
from batch_job.ledger import FAILED, FINAL, PENDING, Ledger
from batch_job.settings import Settings

from tests.conftest import free_port
from tests.images import SHAPES, encode, product_image

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parent.parent


def fill_inbox(store: Path, count: int = 12) -> None:
    inbox = store / "inbox" / "2026-11-23"
    inbox.mkdir(parents=True)
    categories = list(SHAPES)
    for i in range(count):
        fmt = "PNG" if i % 4 == 0 else "JPEG"
        image = product_image(categories[i % 3], 200 + i, size=(300, 400))
        (inbox / f"{500 + i}.{fmt.lower()}").write_bytes(encode(image, fmt))
    (inbox / "999.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated upload")
    (inbox / ".DS_Store").write_bytes(b"finder noise")


def settings_for(tmp_path: Path, ports, **overrides) -> Settings:
    values = {
        "store": str(tmp_path / "store"),
        "database_url": f"sqlite:///{tmp_path / 'results.db'}",
        "torchserve_url": ports.inference_url if ports else f"http://127.0.0.1:{free_port()}",
    }
    return Settings(**{**values, **overrides})


def test_nightly_run_records_everything_once(torchserve, tmp_path, classes):
    fill_inbox(tmp_path / "store")
    settings = settings_for(tmp_path, torchserve)
    first = job.run(settings)
    assert (first.listed, first.new) == (13, 13)  # the hidden file is not a photo
    rows = Ledger(settings.database_url).results()
    assert len(rows) == 13
    failed = [row for row in rows if row.status == FAILED]
    assert [row.object_key for row in failed] == ["inbox/2026-11-23/999.jpg"]
    assert "415" in failed[0].error and "cannot decode" in failed[0].error
    for row in rows:
        assert row.status in FINAL and row.attempts == 1 and row.finished_at >= row.claimed_at
        assert row.size > 0 and row.last_modified is not None and row.identity
        if row.status != FAILED:
            assert row.category in classes and 0 < row.probability <= 1
            assert len(row.top3) == 3 and row.top3[0]["category"] == row.category
            assert row.model_name == "refund-classifier" and row.model_version

    second = job.run(settings)
    assert (second.listed, second.new, second.statuses) == (13, 0, {})
    assert Ledger(settings.database_url).count_rows() == 13


def test_a_replaced_photo_is_classified_again(torchserve, tmp_path):
    fill_inbox(tmp_path / "store", count=2)
    settings = settings_for(tmp_path, torchserve)
    job.run(settings)
    replaced = tmp_path / "store" / "inbox" / "2026-11-23" / "500.png"
    replaced.write_bytes(encode(product_image("Boxes", 300, size=(320, 400)), "PNG"))
    assert job.run(settings).new == 1


def test_torchserve_down_leaves_images_pending_for_the_next_run(torchserve, tmp_path):
    fill_inbox(tmp_path / "store", count=3)
    down = settings_for(tmp_path, None, retries=1)
    stats = job.run(down)
    assert stats.statuses == {PENDING: 4}
    rows = Ledger(down.database_url).results()
    assert all(row.status == PENDING and "unreachable" in row.error for row in rows)

    up = settings_for(tmp_path, torchserve)
    again = job.run(up)
    assert again.new == 4 and PENDING not in again.statuses
    rows = Ledger(up.database_url).results()
    assert len(rows) == 4 and all(row.status in FINAL and row.attempts == 2 for row in rows)


def test_cli_uses_env_defaults_and_prints_the_summary(torchserve, tmp_path):
    fill_inbox(tmp_path / "store", count=6)
    labels = tmp_path / "styles.csv"
    labels.write_text("id,articleType\n" + "".join(f"{500 + i},{list(SHAPES)[i % 3]}\n" for i in range(6)))
    env = {
        **os.environ,
        "REFUND_STORE": str(tmp_path / "store"),
        "REFUND_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "REFUND_TORCHSERVE_URL": torchserve.inference_url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "batch_job", "run"], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "listed 7, new 7" in done.stdout and "failed: 1" in done.stdout
    report = subprocess.run(
        [sys.executable, "-m", "batch_job", "report", "--labels", str(labels)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert "accuracy on 6 labelled images" in report.stdout


def test_exit_code_says_when_work_was_left_pending(tmp_path):
    fill_inbox(tmp_path / "store", count=1)
    arguments = [
        "run",
        "--store",
        str(tmp_path / "store"),
        "--database-url",
        f"sqlite:///{tmp_path / 'x.db'}",
        "--torchserve-url",
        f"http://127.0.0.1:{free_port()}",
        "--retries",
        "0",
    ]
    assert main(arguments) == 1
    assert Counter(row.status for row in Ledger(f"sqlite:///{tmp_path / 'x.db'}").results()) == {PENDING: 2}
