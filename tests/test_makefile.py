"""`make archive MODEL_DIR=...` then `make serve` serves the model just archived: make never trains or
re-archives behind the user's back. Real make, the real Makefiles and console scripts, in a copy with its own var/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAKEFILES = ("Makefile", "k8s/check.mk", "k8s/cluster.mk", "tests/benchmarks/bench.mk")
MAR = Path("var/model-store/refund-classifier.mar")
LONG_AGO = 1_000_000_000  # 2001: older than any archive made today


@pytest.fixture
def project(tmp_path, trained_model) -> Path:
    """The Makefiles, a venv holding the real console scripts, two trained models and a prepared-data marker."""
    for name in MAKEFILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    (tmp_path / "pyproject.toml").touch()
    os.utime(tmp_path / "pyproject.toml", (LONG_AGO, LONG_AGO))  # the venv is up to date: make installs nothing
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / ".installed").touch()
    for script in ("refund-train", "refund-serve", "refund-batch"):
        (tmp_path / "venv" / "bin" / script).symlink_to(Path(sys.executable).parent / script)
    (tmp_path / "var" / "data").mkdir(parents=True)
    (tmp_path / "var" / "data" / "manifest.csv").touch()
    for folder, version in (("model", "20260101.000000"), ("model-full", "20260202.000000")):
        shutil.copytree(trained_model, tmp_path / "var" / folder)
        meta = json.loads((tmp_path / "var" / folder / "model.json").read_text())
        (tmp_path / "var" / folder / "model.json").write_text(json.dumps({**meta, "version": version}))
        for path in (tmp_path / "var" / folder).iterdir():
            os.utime(path, (LONG_AGO, LONG_AGO))  # trained long before any archive
    return tmp_path


def make(project: Path, *arguments: str) -> subprocess.CompletedProcess:
    # -o sysdeps: the apt checks are not what is tested here.
    command = ["make", "--no-print-directory", "-o", "sysdeps", "VENV=venv", *arguments]
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300)


def archived_version(project: Path) -> str:
    with zipfile.ZipFile(project / MAR) as mar:
        return json.loads(mar.read("model.json"))["version"]


def test_serve_with_nothing_archived_says_so_and_trains_nothing(project):
    shutil.rmtree(project / "var" / "model")
    served = make(project, "serve")
    assert served.returncode != 0
    assert f"refund-serve: no {MAR}: archive a model first" in served.stderr
    assert not (project / "var" / "model").exists() and not (project / MAR).exists()


def test_archive_packages_the_model_asked_for_and_serve_serves_it_without_training(project):
    assert make(project, "archive").returncode == 0
    assert archived_version(project) == "20260101.000000"
    # The full model is older than the .mar now in the store: it is archived all the same.
    archived = make(project, "archive", "MODEL_DIR=var/model-full")
    assert archived.returncode == 0, archived.stderr
    assert archived_version(project) == "20260202.000000"
    planned = make(project, "--dry-run", "serve")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines() == [
        f"venv/bin/refund-serve start --model-store {MAR.parent}/ --run-dir var/serve"
    ]


def test_archive_of_a_folder_without_a_model_fails_and_trains_nothing(project):
    archived = make(project, "archive", "MODEL_DIR=var/model-typo")
    assert archived.returncode != 0
    assert "no var/model-typo/model.pt: train first" in archived.stderr
    assert not (project / "var" / "model-typo").exists() and not (project / MAR).exists()


def test_benchmarks_leave_the_served_archive_alone(project):
    assert make(project, "archive", "MODEL_DIR=var/model-full").returncode == 0
    # The loadtest needs the served .mar and nothing else; the serving benchmark archives into its own store.
    for target, expected in (("loadtest", "tests.benchmarks.locustfile"), ("bench", "tests.benchmarks.bench_serving")):
        planned = make(project, "--dry-run", target)
        assert planned.returncode == 0, planned.stderr
        assert expected in planned.stdout
        assert f"--out {MAR.parent}" not in planned.stdout and "refund-train train" not in planned.stdout
    assert (
        "refund-train archive --model var/model --out var/bench/model-store"
        in make(project, "--dry-run", "bench").stdout
    )
    assert archived_version(project) == "20260202.000000"


def test_loadtest_with_nothing_archived_says_so(project):
    planned = make(project, "loadtest")
    assert planned.returncode != 0 and f"no {MAR}: archive a model first" in planned.stderr
