"""The console scripts explain themselves: every command listed, each subcommand with only its own flags,
`--version` everywhere, and a missing model archive named rather than trained behind the user's back."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest
from batch_job.__main__ import main as batch_main
from batch_job.review.settings import ReviewSettings
from batch_job.settings import Settings

from handlers import serve
from training.__main__ import main as train_main

BIN = Path(sys.executable).parent
VERSION = importlib.metadata.version("refund-sorter")


def help_of(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def listed_commands(help_text: str) -> list[str]:
    """The names in the help's `commands:` section, in order."""
    section = help_text.split("\ncommands:\n", 1)[1]
    return re.findall(r"^ {4}([a-z][a-z-]*)", section, flags=re.M)


def listed_flags(help_text: str) -> set[str]:
    """The long options the help describes (one per line of its options section), --help left out."""
    return set(re.findall(r"^ {2}(?:-\w, )?(--[a-z][a-z-]*)", help_text, flags=re.M)) - {"--help"}


def flags(*names: str) -> set[str]:
    return {"--" + name.replace("_", "-") for name in names}


ROUTED = flags("store", "inbox_prefix", "database_url", "route")
BATCH_FLAGS = {
    "run": flags(*(field.name for field in fields(Settings))) | {"--lock-file"},
    "ingest": flags("store", "inbox_prefix", "date"),
    "report": flags("database_url", "migrate", "labels", "label_column", "classes"),
    "migrate": flags("database_url"),
    "export-labels": ROUTED | flags("migrate", "max_image_bytes", "out"),
    "review": ROUTED
    | flags("migrate", "runs_prefix", "max_image_bytes", *(field.name for field in fields(ReviewSettings))),
    "review-passwd": set(),
    "fetch-model": flags("registry", "out"),
}


def test_refund_batch_help_lists_every_command(capsys):
    assert listed_commands(help_of(batch_main, [], capsys)) == list(BATCH_FLAGS)


@pytest.mark.parametrize("command", BATCH_FLAGS)
def test_each_refund_batch_command_takes_only_its_own_flags(command, capsys):
    text = help_of(batch_main, [command], capsys)
    assert text.startswith(f"usage: refund-batch {command} ")
    assert listed_flags(text) == BATCH_FLAGS[command]


def test_refund_train_help_lists_its_commands_and_the_registry_its_own(capsys):
    assert listed_commands(help_of(train_main, [], capsys)) == [
        "prepare",
        "train",
        "evaluate",
        "calibrate",
        "returns",
        "archive",
        "registry",
        "catalogue",
        "retrain",
    ]
    registry_help = help_of(train_main, ["registry"], capsys)
    assert registry_help.startswith("usage: refund-train registry ")
    assert "{publish,promote,rollback,kserve-config,list}" in registry_help


def test_refund_train_archive_writes_to_out_like_every_command(capsys):
    text = help_of(train_main, ["archive"], capsys)
    assert text.startswith("usage: refund-train archive ")
    assert listed_flags(text) == {
        "--model",
        "--out",
        "--name",
        "--config-file",
        "--prepared",
        "--pytorch",
        "--build-dir",
    }


def test_refund_serve_help_lists_start_and_stop(capsys):
    assert listed_commands(help_of(serve.main, [], capsys)) == ["start", "stop"]
    assert listed_flags(help_of(serve.main, ["stop"], capsys)) == {"--run-dir"}


@pytest.mark.parametrize("script", ["refund-batch", "refund-train", "refund-serve"])
def test_every_console_script_prints_its_version(script):
    printed = subprocess.run([BIN / script, "--version"], capture_output=True, text=True, timeout=60)
    assert (printed.returncode, printed.stdout) == (0, f"{script} {VERSION}\n"), printed.stderr


def test_refund_serve_names_a_missing_archive_instead_of_starting(tmp_path):
    started = subprocess.run(
        [BIN / "refund-serve", "start", "--model-store", tmp_path / "empty", "--run-dir", tmp_path / "serve"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 1
    assert started.stderr == (
        f"refund-serve: no {tmp_path / 'empty' / 'refund-classifier.mar'}: "
        "archive a model first (make archive, or refund-train archive)\n"
    )
    assert not (tmp_path / "serve").exists()  # TorchServe was not started


@pytest.mark.integration
def test_the_served_version_is_the_archived_models(torchserve, model_store):
    with zipfile.ZipFile(model_store / "refund-classifier.mar") as mar:
        archived = json.loads(mar.read("model.json"))["version"]
    assert serve.served_version(torchserve) == archived
