"""The config.properties that KServe's TorchServe runtime reads from <storageUri>/config/config.properties.

The runtime (the pytorch/torchserve-kfs image) downloads storageUri to /mnt/models, starts TorchServe with
`--ts-config /mnt/models/config/config.properties --model-store /mnt/models/model-store`, and runs a KServe
server on port 8080 that forwards each v1 request to the inference address below. Both take the model from
model_snapshot: its name (the KServe server's model) and its .mar, workers and batching (TorchServe loads it
at start with exactly these). `refund-train registry publish` writes this next to every version's .mar.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import yaml

from handlers.serve import DEFAULT_CONFIG, properties

MODEL_STORE = "/mnt/models/model-store"  # where KServe's storage initializer puts <storageUri>/model-store
# TorchServe workers per pod. model_snapshot must name a count, and KServe's runtime has no other setting
# for it (serving.workers is the Deployment's): the chart's default pod (serving.cpu 2) runs 2 workers of
# one torch thread each, as the handler gives each worker usable CPUs / TS_DEFAULT_WORKERS_PER_MODEL threads.
WORKERS = 2
# What differs from handlers/config.properties in KServe's pod; every other setting is the project's own.
KSERVE_SETTINGS = {
    # The runtime's KServe server owns 8080 (8081: its gRPC) and forwards to 8085 in the same container, so
    # inference and management stay on loopback (upstream's layout: both on one port).
    "inference_address": "http://127.0.0.1:8085",
    "management_address": "http://127.0.0.1:8085",
    # Prometheus scrapes the pod (the chart's PodMonitor, port 8082).
    "metrics_address": "http://0.0.0.0:8082",
    # The runtime sets TS_SERVICE_ENVELOPE=kserve; that envelope hands the handler the first request of a
    # batch only (a batch of several requests then fails). The handler reads v1 `instances` itself, and the
    # worker count comes from model_snapshot, so TorchServe reads no TS_* variable here.
    "enable_envvars_config": "false",
}


def mar_model(mar: Path) -> tuple[dict, dict]:
    """The .mar's manifest `model` entry and the model-config.yaml it was archived with (its batching)."""
    with zipfile.ZipFile(mar) as archive:
        model = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
        settings = yaml.safe_load(archive.read(model["configFile"]))
    return model, settings


def kserve_config(mar: Path, mar_name: str) -> str:
    """handlers/config.properties with KSERVE_SETTINGS, the model store and a model_snapshot of this .mar,
    which the model store holds as mar_name."""
    model, settings = mar_model(mar)
    snapshot = {
        "name": "startup.cfg",
        "modelCount": 1,
        "models": {
            model["modelName"]: {
                model["modelVersion"]: {
                    "defaultVersion": True,
                    "marName": mar_name,
                    "minWorkers": WORKERS,
                    "maxWorkers": WORKERS,
                    "batchSize": settings["batchSize"],
                    "maxBatchDelay": settings["maxBatchDelay"],
                    "responseTimeout": settings["responseTimeout"],
                }
            }
        },
    }
    values = properties(DEFAULT_CONFIG.read_text())
    values |= KSERVE_SETTINGS | {"model_store": MODEL_STORE, "model_snapshot": json.dumps(snapshot)}
    header = (
        f"# {model['modelName']} {model['modelVersion']} for KServe's TorchServe runtime, written by "
        f"refund-train registry from handlers/{DEFAULT_CONFIG.name} and the .mar's {model['configFile']}"
    )
    return "\n".join([header, *(f"{key}={value}" for key, value in values.items())]) + "\n"
