"""A plain `pip install` of the project (no extras) gives a working refund-batch, and the training and
serving commands say which extra they need instead of failing on an import.

Installs offline, from the wheels `make venv` keeps in the venv's wheelhouse/ (tests reach no network);
about a minute on 2 cores.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from tests.test_cli import listed_commands

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
COMMANDS = ["run", "ingest", "report", "migrate", "export-labels", "review", "review-passwd", "fetch-model"]


def copy_sources(out: Path) -> Path:
    """What the distribution is built from, so that the build writes nothing into the working tree."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {setuptools["package-dir"].get(name, name) for name in setuptools["packages"] if "." not in name}
    for folder in folders:
        shutil.copytree(REPO / folder, out / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, out / name)
    return out


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv with the project installed without extras."""
    if not WHEELHOUSE.is_dir():
        pytest.fail(f"no {WHEELHOUSE}: `make venv` downloads the base install's wheels there")
    root = tmp_path_factory.mktemp("plain-install")
    source = copy_sources(root / "src")
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True, timeout=120)
    # Only the wheelhouse: no index, and no pip configuration that could name one.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    pip = [root / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*pip, "--find-links", WHEELHOUSE, source], env=env, check=True, timeout=600)
    return root / "venv" / "bin"


def run(bin_dir: Path, *arguments: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_dir / arguments[0], *arguments[1:]], capture_output=True, text=True, timeout=60, **options
    )


def test_refund_batch_lists_its_commands_and_version(plain):
    helped = run(plain, "refund-batch", "--help")
    assert helped.returncode == 0, helped.stderr
    assert listed_commands(helped.stdout) == COMMANDS
    versioned = run(plain, "refund-batch", "--version")
    assert versioned.stdout == "refund-batch 0.1.0\n"


def test_refund_batch_ingests_into_a_folder_store(plain, tmp_path):
    Image.new("RGB", (60, 80), "red").save(tmp_path / "101.jpg")
    ingested = run(plain, "refund-batch", "ingest", str(tmp_path / "101.jpg"), "--store", "store", cwd=tmp_path)
    assert ingested.returncode == 0, ingested.stderr
    assert [path.name for path in (tmp_path / "store").rglob("*.jpg")] == ["101.jpg"]


@pytest.mark.parametrize(
    ("script", "command", "extra"), [("refund-train", "prepare", "train"), ("refund-serve", "stop", "serve")]
)
def test_the_commands_of_an_extra_name_it(plain, script, command, extra):
    # What the script is and which version it is answer on any install; its commands need the extra.
    assert run(plain, script, "--version").stdout == f"{script} 0.1.0\n"
    helped = run(plain, script, "--help")
    assert helped.returncode == 0 and command in helped.stdout
    refused = run(plain, script, command)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1
    assert refused.stderr.endswith(f"it needs the {extra} extra: pip install 'refund-sorter[{extra}]'\n")


def test_the_review_server_imports_on_the_base_install(plain):
    # `refund-batch review` imports the server only when it serves: --help above never loads uvicorn and the rest.
    imported = run(plain, "python", "-c", "import batch_job.review.serve")
    assert imported.returncode == 0, imported.stderr
