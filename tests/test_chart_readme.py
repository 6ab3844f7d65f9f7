"""helm/refund-sorter/README.md's values table is what k8s/chart_readme.py makes of values.schema.json and
values.yaml, and every key of the schema has a description."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = ROOT / "k8s" / "chart_readme.py"
CHART = ROOT / "helm" / "refund-sorter"


def generate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60
    )


def test_the_shipped_table_is_up_to_date_and_every_key_described():
    result = generate("--check")
    assert result.returncode == 0, result.stderr
    readme = (CHART / "README.md").read_text()
    assert '| `serving.kserve.storageUri` | string | `""` | A registry version folder' in readme
    assert "| `networkPolicy.inferenceFrom[].podSelector` | object |" in readme
    assert '| `batch.resources.limits.cpu` | string or number | `"1"` |' in readme


def test_check_fails_on_a_stale_table_and_on_a_key_without_description(tmp_path):
    chart = tmp_path / "chart"
    chart.mkdir()
    for name in ("values.schema.json", "values.yaml", "README.md"):
        shutil.copy(CHART / name, chart / name)
    schema = json.loads((chart / "values.schema.json").read_text())
    replicas = schema["properties"]["serving"]["properties"]["replicas"]

    replicas["description"] = "Pods, changed."
    (chart / "values.schema.json").write_text(json.dumps(schema))
    stale = generate("--check", "--chart", str(chart))
    assert stale.returncode == 1 and "values table is out of date" in stale.stderr
    assert generate("--chart", str(chart)).returncode == 0
    assert "| `serving.replicas` | integer | `2` | Pods, changed. |" in (chart / "README.md").read_text()
    assert generate("--check", "--chart", str(chart)).returncode == 0

    del replicas["description"]
    (chart / "values.schema.json").write_text(json.dumps(schema))
    undescribed = generate("--check", "--chart", str(chart))
    assert undescribed.returncode == 1 and "no description for serving.replicas" in undescribed.stderr
