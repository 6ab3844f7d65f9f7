"""`make sysdeps` takes promtool alone from Debian's prometheus package: installing the package would enable and
start prometheus.service on :9090 on a host with systemd. Read from make's own plan (--dry-run), so no apt runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_sysdeps_extracts_promtool_and_never_installs_the_prometheus_package():
    planned = subprocess.run(
        ["make", "--no-print-directory", "--dry-run", "sysdeps"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert planned.returncode == 0, planned.stderr
    commands = planned.stdout.replace("\\\n\t", "").splitlines()  # one line per shell command
    (promtool,) = [command for command in commands if command.startswith("command -v promtool >/dev/null || ")]
    assert "apt-get install" not in promtool and "dpkg -i" not in promtool
    assert "apt-get download -qq prometheus" in promtool
    assert 'install -m 755 "$tmp/deb/usr/bin/promtool" /usr/local/bin/promtool' in promtool
