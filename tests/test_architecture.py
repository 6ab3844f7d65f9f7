"""The import direction of docs/development.md (import direction), as import-linter contracts in pyproject.toml.

common <- handlers <- training, common <- batch_job: training and the nightly job never import each
other, common imports none of them, and handlers (what the .mar carries) imports neither side.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_import_runs_against_the_direction():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout
