"""KServe mode's storageUri (a registry version folder): the config.properties `registry publish` writes for
KServe's TorchServe runtime, and a real TorchServe started from a download of that folder as the runtime starts it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import httpx
import obstore
import pytest
import yaml

from common.objectstore import open_store, read_object
from handlers import serve
from tests.images import encode, product_image
from tests.ports import free_ports
from training import kserve_config, registry


def properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {key: value for key, value in pairs}


def download(store: obstore.store.ObjectStore, prefix: str, destination: Path) -> Path:
    """Every object under prefix into destination, as KServe's storage initializer copies storageUri to /mnt/models."""
    for batch in obstore.list(store, prefix):
        for meta in batch:
            path = destination / meta["path"].removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(read_object(store, meta["path"]))
    return destination


@pytest.fixture
def storage_uri(tmp_path, trained_model, model_store) -> tuple[Path, str]:
    """A version published to a registry folder, downloaded from models/<version>/ (the storageUri)."""
    models = registry.Registry(open_store(str(tmp_path / "registry")))
    version = registry.publish(models, trained_model, model_store / registry.MAR_NAME)
    return download(models.store, models.key(version, ""), tmp_path / "mnt-models"), version


def test_publish_writes_kserves_config_naming_the_mar_with_the_model_configs_batching(storage_uri):
    folder, version = storage_uri
    config = properties((folder / registry.KSERVE_CONFIG_KEY).read_text())
    snapshot = json.loads(config["model_snapshot"])
    assert list(snapshot["models"]) == [serve.MODEL_NAME]
    assert list(snapshot["models"][serve.MODEL_NAME]) == [version]
    model = snapshot["models"][serve.MODEL_NAME][version]
    assert config["model_store"] == "/mnt/models/model-store"
    assert (folder / "model-store" / model["marName"]).is_file()
    batching = yaml.safe_load((serve.HANDLERS / "model-config.yaml").read_text())
    assert {key: model[key] for key in ("batchSize", "maxBatchDelay", "responseTimeout")} == {
        key: batching[key] for key in ("batchSize", "maxBatchDelay", "responseTimeout")
    }
    assert model["minWorkers"] == model["maxWorkers"] > 0
    # The runtime's KServe server listens on 8080 and forwards to TorchServe on 8085.
    assert config["inference_address"].endswith(":8085") and config["management_address"].startswith("http://127.")
    project = properties(serve.DEFAULT_CONFIG.read_text())
    assert {key: config[key] for key in project if key not in kserve_config.KSERVE_SETTINGS} == {
        key: value for key, value in project.items() if key not in kserve_config.KSERVE_SETTINGS
    }


def test_a_version_published_without_kserves_config_gets_it_once(tmp_path, trained_model, model_store, capsys):
    location = str(tmp_path / "registry")
    models = registry.Registry(open_store(location))
    version = registry.publish(models, trained_model, model_store / registry.MAR_NAME)
    key = models.key(version, registry.KSERVE_CONFIG_KEY)
    published = read_object(models.store, key)
    obstore.delete(models.store, key)  # as a version published before `publish` wrote it
    assert registry.main(["--registry", location, "kserve-config", version]) == 0
    assert read_object(models.store, key) == published
    assert registry.main(["--registry", location, "kserve-config", "latest"]) == 2
    assert "already exists" in capsys.readouterr().err


def kserve_request(image: bytes) -> dict:
    return {"instances": [{"data": base64.b64encode(image).decode()}]}


@pytest.mark.integration
def test_torchserve_started_as_kserves_runtime_serves_the_published_version(storage_uri, classes, tmp_path):
    folder, version = storage_uri
    run_dir = tmp_path / "run"
    ports = free_ports()
    ports = replace(ports, management=ports.inference)  # KServe's config: inference and management on one port
    # The runtime's paths and ports, moved to this test's folder and free loopback ports.
    generated = (folder / registry.KSERVE_CONFIG_KEY).read_text()
    assert f"model_store={kserve_config.MODEL_STORE}\n" in generated
    moved = run_dir / "kserve.properties"
    moved.parent.mkdir()
    moved.write_text(generated.replace(kserve_config.MODEL_STORE, str(folder / "model-store")))
    env = {**serve.torchserve_env(run_dir), "TS_SERVICE_ENVELOPE": "kserve"}  # the runtime sets it for v1
    command = [str(Path(sys.executable).parent / "torchserve"), "--start", "--ts-config"]
    command += [str(serve.write_config(run_dir, ports, moved)), "--log-config", str(serve.LOG_CONFIG)]
    command += ["--model-store", str(folder / "model-store")]  # the runtime's arguments: no --models
    with (run_dir / "logs" / "torchserve.out").open("ab") as out:
        subprocess.run(command, env=env, cwd=run_dir, stdout=out, stderr=subprocess.STDOUT, check=True)
    try:
        serve.wait_ready(ports, timeout=600)
        assert serve.served_version(ports) == version

        # What the runtime's KServe server forwards a v1 request to, several at once (batched by TorchServe).
        url = f"{ports.inference_url}/v1/models/{serve.MODEL_NAME}:predict"
        images = [encode(product_image(category, 300 + seed)) for seed in range(4) for category in classes]
        with ThreadPoolExecutor(len(images)) as pool:
            answers = list(pool.map(lambda image: httpx.post(url, json=kserve_request(image), timeout=60), images))
        assert [answer.status_code for answer in answers] == [200] * len(images), [a.text for a in answers]
        predictions = [answer.json()["predictions"] for answer in answers]
        assert all(len(items) == 1 and items[0]["category"] in classes for items in predictions)
    finally:
        serve.stop(run_dir)
