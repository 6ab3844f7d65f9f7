"""The .mar served by a real TorchServe, over real HTTP."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from handlers.presets import ClassificationPresetEval, PresetConfig
from handlers.runtime import load_runner
from handlers.serve import launch, stop, worker_pids
from tests.images import SHAPES, encode, product_image
from tests.ports import free_ports

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]


def predict(ports, data: bytes, content_type: str = "application/octet-stream") -> httpx.Response:
    return httpx.post(
        f"{ports.inference_url}/predictions/refund-classifier",
        content=data,
        headers={"Content-Type": content_type},
        timeout=60,
    )


@pytest.mark.parametrize(("fmt", "content_type"), [("JPEG", "image/jpeg"), ("PNG", "image/png")])
def test_image_bytes_in_probabilities_out(torchserve, classes, trained_model, fmt, content_type):
    answer = predict(torchserve, encode(product_image("Discs", 101), fmt), content_type)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert body["category"] in classes
    assert list(body["probabilities"]) == sorted(body["probabilities"], key=body["probabilities"].get, reverse=True)
    assert set(body["probabilities"]) == set(classes)
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["probability"] == body["probabilities"][body["category"]]
    assert [entry["category"] for entry in body["top_k"]] == list(body["probabilities"])[:3]
    version = json.loads((trained_model / "model.json").read_text())["version"]
    assert body["model"] == {"name": "refund-classifier", "version": version}


def test_served_probabilities_equal_in_process_evaluation(torchserve, trained_model, classes):
    """No train/serve skew: TorchServe answers what the evaluation code computes with the runtime the
    .mar carries (the int8 model archive exported, and its temperature)."""
    meta = json.loads((trained_model / "model.json").read_text())
    loaded = load_runner(trained_model, threads=1)
    assert loaded.description == "openvino int8"
    preset = ClassificationPresetEval(PresetConfig.from_dict(meta["preset"]))
    photo = encode(product_image("Wedges", 102, size=(600, 800)), "JPEG")
    expected = torch.softmax(loaded.runner(preset(photo)[None]) / loaded.temperature, dim=1)[0]
    served = predict(torchserve, photo, "image/jpeg").json()["probabilities"]
    for index, name in enumerate(classes):
        assert abs(served[name] - expected[index].item()) < 1e-4


def test_the_mar_runs_on_what_it_carries_and_carries_no_training_code(model_store, tmp_path):
    """The serve image has the .mar and no project install: every module the handler imports comes from it."""
    with zipfile.ZipFile(model_store / "refund-classifier.mar") as mar:
        mar.extractall(tmp_path)
    ours = ("handlers", "common", "training", "batch_job")
    code = (
        "import json, sys, refund_classifier; "
        f"print(json.dumps({{n: m.__file__ for n, m in sys.modules.items() if n.split('.')[0] in {ours}}}))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert {name.split(".")[0] for name in loaded} == {"handlers", "common"}
    assert all(Path(path).is_relative_to(tmp_path) for path in loaded.values()), loaded
    assert not (tmp_path / "training").exists()
    assert "RandomBackdrop" not in (tmp_path / "handlers" / "presets.py").read_text()


def test_multipart_upload_is_accepted(torchserve, classes):
    answer = httpx.post(
        f"{torchserve.inference_url}/predictions/refund-classifier",
        files={"data": ("photo.jpg", encode(product_image("Boxes", 103)), "image/jpeg")},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["category"] in classes


@pytest.mark.parametrize(
    ("data", "status"),
    [(b"", 400), (b"this is not an image", 415), (encode(product_image("Discs", 104))[:400], 415)],
)
def test_bad_input_gets_a_clear_4xx_and_the_worker_survives(torchserve, data, status):
    before = worker_pids(torchserve)
    answer = predict(torchserve, data)
    assert answer.status_code == status
    assert answer.json()["error"]
    assert predict(torchserve, encode(product_image("Discs", 105))).status_code == 200
    assert worker_pids(torchserve) == before  # the same workers, none restarted


def test_a_bad_image_in_a_batch_fails_alone(torchserve):
    good = encode(product_image("Boxes", 106))
    payloads = [good if i % 3 else b"garbage bytes" for i in range(30)]
    with ThreadPoolExecutor(len(payloads)) as pool:
        answers = list(pool.map(lambda data: predict(torchserve, data), payloads))
    assert [answer.status_code for answer in answers] == [200 if i % 3 else 415 for i in range(30)]
    assert len({answer.json()["category"] for answer in answers if answer.status_code == 200}) == 1


def test_management_api_cannot_register_models(torchserve):
    answer = httpx.post(
        f"{torchserve.management_url}/models", params={"url": "http://example.invalid/x.mar"}, timeout=10
    )
    assert answer.status_code == 405


@pytest.mark.parametrize("fmt", ["WEBP", "BMP", "GIF", "TIFF"])
def test_other_image_formats_are_accepted(torchserve, classes, fmt):
    answer = predict(torchserve, encode(product_image("Discs", 110), fmt))
    assert answer.status_code == 200, answer.text
    assert answer.json()["category"] in classes


def test_base64_json_image_is_accepted(torchserve, classes):
    image = base64.b64encode(encode(product_image("Boxes", 111))).decode()
    answer = httpx.post(f"{torchserve.inference_url}/predictions/refund-classifier", json={"image": image}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["category"] in classes


def test_kserve_v1_instances_answer_each_image(torchserve, classes):
    good = base64.b64encode(encode(product_image("Wedges", 112))).decode()
    body = {
        "instances": [
            {"data": good},
            {"data": "%%% not base64"},
            {"b64": good},
            {"data": base64.b64encode(b"plain text").decode()},
        ]
    }
    answer = httpx.post(f"{torchserve.inference_url}/predictions/refund-classifier", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert [("category" in item, item.get("code")) for item in predictions] == [
        (True, None),
        (False, 400),
        (True, None),
        (False, 415),
    ]
    assert predictions[0] == predictions[2]


@pytest.mark.parametrize(
    ("body", "status"),
    [({"image": "%%% not base64"}, 400), ({"something": "else"}, 400), ({"instances": []}, 400)],
)
def test_malformed_json_requests_get_400(torchserve, body, status):
    answer = httpx.post(f"{torchserve.inference_url}/predictions/refund-classifier", json=body, timeout=60)
    assert answer.status_code == status
    assert answer.json()["error"]


def test_oversized_and_bomb_payloads_get_413_without_worker_restarts(torchserve):
    before = worker_pids(torchserve)
    assert predict(torchserve, b"\xff" * (17 * 1024 * 1024)).status_code == 413
    bomb = encode(Image.new("1", (7000, 7000)), "PNG")
    answer = predict(torchserve, bomb, "image/png")
    assert answer.status_code == 413 and "more than" in answer.json()["error"]
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = encode(product_image("Boxes", 113).convert("CMYK"), "JPEG", exif=exif)
    assert predict(torchserve, rotated, "image/jpeg").status_code == 200
    assert worker_pids(torchserve) == before


def test_handler_metrics_are_exported(torchserve):
    predict(torchserve, encode(product_image("Discs", 114)))
    text = httpx.get(f"{torchserve.metrics_url}/metrics", timeout=10).text
    assert "PredictionsPerCategory" in text and 'Category="' in text
    assert "PreprocessTimePerImage" in text
    assert "ts_inference_requests_total" in text


def predictions_per_category(ports) -> Counter:
    text = httpx.get(f"{ports.metrics_url}/metrics", timeout=10).text
    return Counter(
        {
            sample.labels["Category"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("PredictionsPerCategory")
        }
    )


def test_images_are_counted_per_category_without_a_log_line_each(torchserve, torchserve_run_dir):
    """A night sends tens of thousands of photos: an INFO line per request and per printed metric filled
    TorchServe's 50 MB log in minutes and cost its frontend CPU. Lines per batch remain; the counter still
    counts every image."""
    log = torchserve_run_dir / "logs" / "ts_log.log"
    lines_before = len(log.read_text().splitlines())
    counted_before = predictions_per_category(torchserve)
    photos = [base64.b64encode(encode(product_image(shape, seed))).decode() for shape in SHAPES for seed in (1, 2, 3)]
    requests, answered = 5, Counter()
    for _ in range(requests):
        answer = httpx.post(
            f"{torchserve.inference_url}/predictions/refund-classifier",
            json={"instances": [{"b64": photo} for photo in photos]},
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        answered.update(item["category"] for item in answer.json()["predictions"])
    assert predictions_per_category(torchserve) - counted_before == answered
    images = requests * len(photos)
    assert len(log.read_text().splitlines()) - lines_before < images / 2


@pytest.mark.parametrize("name", ["describe", "Describe", "DESCRIBE"])
def test_the_describe_header_is_read_whatever_the_case_of_its_name(torchserve, classes, name):
    answer = httpx.get(f"{torchserve.inference_url}/predictions/refund-classifier", headers={name: "True"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["classes"] == classes


def startup_probe() -> dict:
    """The TorchServe container's startup probe as the manifests ship it (the k8s check keeps the chart's equal)."""
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "deployment.yaml").read_text())
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "torchserve"]
    return container["startupProbe"]["httpGet"]


def probe_passes(ports, path: str, headers: dict[str, str]) -> bool:
    """As the kubelet sends it (header names in Go's canonical case: `describe` goes out as `Describe`) and counts
    it: a status from 200 to 399 within the timeout (1 s here, to look often)."""
    canonical = {"-".join(part.capitalize() for part in name.split("-")): value for name, value in headers.items()}
    try:
        return 200 <= httpx.get(f"{ports.inference_url}{path}", headers=canonical, timeout=1).status_code < 400
    except httpx.TransportError:
        return False


def test_the_startup_probe_passes_only_once_a_worker_has_loaded_the_model(model_store, tmp_path):
    """A pod is Ready, and gets the Service's requests, once its startup probe passes. TorchServe's /ping answers
    200 as soon as the worker processes run, seconds before they have loaded the model: in a rollout a request
    sent to such a pod got no answer within the client's 30 s."""
    probe = startup_probe()
    headers = {header["name"]: header["value"] for header in probe.get("httpHeaders", [])}
    run_dir = tmp_path / "torchserve"
    ports = launch(model_store, run_dir, free_ports())
    try:
        deadline = time.monotonic() + 180
        while not probe_passes(ports, probe["path"], headers):
            assert time.monotonic() < deadline, "the startup probe never passed"
            time.sleep(0.05)
        assert worker_pids(ports), "the probe passed while no worker had loaded the model"
    finally:
        stop(run_dir)


def test_the_helm_test_passes_only_once_a_worker_answers_a_photo(model_store, tmp_path):
    """`helm test` runs the chart's files/smoke.py in the release (the k8s check keeps the template embedding it):
    a GET of /ping passes while no worker has loaded the model; a photo must come back classified."""
    run_dir = tmp_path / "torchserve"
    ports = launch(model_store, run_dir, free_ports())
    smoke_test = ROOT / "helm" / "refund-sorter" / "files" / "smoke.py"
    command = [sys.executable, str(smoke_test), f"{ports.inference_url}/predictions/refund-classifier", "predict"]
    try:
        deadline = time.monotonic() + 180
        while (smoke := subprocess.run(command, capture_output=True, text=True, timeout=60)).returncode:
            assert time.monotonic() < deadline, f"the helm test never passed: {smoke.stdout}{smoke.stderr}"
        assert worker_pids(ports), "the helm test passed while no worker had loaded the model"
        assert '"category"' in smoke.stdout
    finally:
        stop(run_dir)
