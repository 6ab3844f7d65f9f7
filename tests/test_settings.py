"""Settings from REFUND_* environment variables: a bad value is a usage error that names it, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def refund_batch(tmp_path: Path, *arguments: str, **env: str) -> subprocess.CompletedProcess:
    """The real CLI in its own process, on a store, database and (absent) TorchServe of its own."""
    environment = {
        **os.environ,
        "REFUND_STORE": str(tmp_path / "store"),
        "REFUND_DATABASE_URL": f"sqlite:///{tmp_path / 'results.db'}",
        "REFUND_TORCHSERVE_URL": f"http://127.0.0.1:{free_port()}",
        **env,
    }
    command = [sys.executable, "-m", "batch_job", *arguments]
    return subprocess.run(command, env=environment, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("command", "variable", "value", "says"),
    [
        ("run", "REFUND_CONCURRENCY", "abc", "argument --concurrency: invalid int value: 'abc'"),
        ("run", "REFUND_REQUEST_TIMEOUT", "1m", "argument --request-timeout: invalid float value: '1m'"),
        ("run", "REFUND_ROUTE", "moov", "argument --route: invalid choice: 'moov' (choose from none, copy, move)"),
        ("review", "REFUND_REVIEW_PORT", "http", "argument --port: invalid int value: 'http'"),
        ("review", "REFUND_MAX_IMAGE_BYTES", "16M", "argument --max-image-bytes: invalid int value: '16M'"),
    ],
)
def test_a_badly_typed_environment_value_is_a_one_line_usage_error(tmp_path, command, variable, value, says):
    failed = refund_batch(tmp_path, command, **{variable: value})
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.splitlines()[-1] == f"refund-batch {command}: error: {says} (from env {variable})"
    helped = refund_batch(tmp_path, command, "--help", **{variable: value})  # help still shows how to fix it
    assert helped.returncode == 0 and variable in helped.stdout


def test_the_flag_overrides_a_bad_environment_value(tmp_path):
    overridden = refund_batch(tmp_path, "run", "--concurrency", "8", REFUND_CONCURRENCY="abc")
    # Past the settings: the run fails only where it reaches for the (absent) TorchServe.
    assert overridden.returncode == 2, overridden.stderr
    assert "TorchServe unavailable" in overridden.stderr and "invalid" not in overridden.stderr


def test_a_command_ignores_the_environment_of_settings_it_does_not_take(tmp_path):
    migrated = refund_batch(tmp_path, "migrate", REFUND_CONCURRENCY="abc", REFUND_ROUTE="moov")
    assert migrated.returncode == 0, migrated.stderr
    assert "results store at revision" in migrated.stdout


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "no way to log in: set --users-file (REFUND_REVIEW_USERS_FILE) or --user-header"),
        ({"REFUND_REVIEW_USER_HEADER": "X-Forwarded-User"}, "--user-header needs --proxy-secret"),
        ({"REFUND_REVIEW_USERS_FILE": "{tmp}/absent"}, "No such file or directory"),
        (
            {"REFUND_REVIEW_USERS_FILE": "{tmp}/users", "REFUND_REVIEW_LOGIN_LIMIT_PER_NAME": "5/fortnight"},
            "--login-limit-per-name '5/fortnight': no granularity matched for fortnight (expected e.g. 5/minute)",
        ),
    ],
    ids=["no way to log in", "header without secret", "users file missing", "bad login limit"],
)
def test_review_settings_that_cannot_work_are_a_one_line_error(tmp_path, env, says):
    (tmp_path / "users").write_text("")  # a users file with no reviewer yet: fine
    failed = refund_batch(tmp_path, "review", **{name: value.format(tmp=tmp_path) for name, value in env.items()})
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith("refund-batch review: error: ") and says in failed.stderr
